"""The monthly retraining schedule: on the 1st, the cycle for the month that just ended."""
from __future__ import annotations

import os

import dagster as dg

from pipeline.jobs import monthly_retraining_job

monthly_retraining_schedule = dg.build_schedule_from_partitioned_job(
    monthly_retraining_job,
    day_of_month=1,
    hour_of_day=int(os.environ.get("LBZF_RETRAIN_HOUR", "6")),
    minute_of_hour=0,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
