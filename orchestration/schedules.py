"""Schedules: the monthly retraining cycle (on the 1st, for the month that just ended) and the daily
production-freshness check."""
from __future__ import annotations

import os

import dagster as dg

from orchestration.jobs import monthly_retraining_job, production_freshness_job
from orchestration.partitions import TIMEZONE

monthly_retraining_schedule = dg.build_schedule_from_partitioned_job(
    monthly_retraining_job,
    day_of_month=1,
    hour_of_day=int(os.environ.get("LBZF_RETRAIN_HOUR", "6")),
    minute_of_hour=0,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

production_freshness_schedule = dg.ScheduleDefinition(
    job=production_freshness_job, cron_schedule="0 7 * * *",
    execution_timezone=TIMEZONE,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily: flag a production model older than 35 days.")
