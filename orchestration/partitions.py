"""Partitions: one per operation video, one per buffer clip, one per month of retraining."""

import os

import dagster as dg

#: The time zone of the monthly partitions and of every schedule (LBZF_TIMEZONE): read here only.
TIMEZONE = os.environ.get("LBZF_TIMEZONE", "America/Bogota")

video_partitions = dg.DynamicPartitionsDefinition(name="videos")
buffer_clip_partitions = dg.DynamicPartitionsDefinition(name="buffer_clips")
monthly_partitions = dg.MonthlyPartitionsDefinition(start_date="2026-07-01", timezone=TIMEZONE)
