"""The Dagster code location: `dagster dev` in the repo root opens it (workspace.yaml)."""
from __future__ import annotations

import dagster as dg

from assets import buffer, experiments, export, footage, labels, models, previews, retraining
from pipeline.deployments import resources_for
from pipeline.housekeeping import store_housekeeping_job, store_housekeeping_schedule
from pipeline.jobs import (annotations_job, buffer_frames_job, frames_job, monthly_retraining_job,
                           production_freshness_job, retraining_resume_job, rollback_production_job, training_job)
from pipeline.schedules import monthly_retraining_schedule
from pipeline.sensors import annotation_exports_sensor, buffer_footage_sensor

ASSET_MODULES = (footage, labels, models, export, buffer, experiments, retraining, previews)


def build_definitions(deployment: str | None = None, env=None) -> dg.Definitions:
    return dg.Definitions(
        assets=dg.load_assets_from_modules(ASSET_MODULES),
        asset_checks=dg.load_asset_checks_from_modules(ASSET_MODULES),
        jobs=[frames_job, buffer_frames_job, annotations_job, training_job, monthly_retraining_job,
              experiments.profiles_job, retraining_resume_job, rollback_production_job, production_freshness_job,
              store_housekeeping_job, previews.preview_job],
        schedules=[monthly_retraining_schedule, retraining.production_freshness_schedule, store_housekeeping_schedule],
        sensors=[buffer_footage_sensor, annotation_exports_sensor, retraining.hard_example_labels_sensor],
        resources=resources_for(deployment, env),
    )


defs = build_definitions()
