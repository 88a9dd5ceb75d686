"""The Dagster code location: `dagster dev` in the repo root opens it (workspace.yaml)."""
from __future__ import annotations

import dagster as dg

from assets import buffer, experiments, export, footage, labels, launch, models, previews, retraining
from orchestration.deployments import resources_for
from orchestration.housekeeping import store_housekeeping_job, store_housekeeping_schedule
from orchestration.jobs import (annotations_job, buffer_frames_job, frames_job, launch_job, monthly_retraining_job,
                                preview_job, production_freshness_job, profiles_job, retraining_resume_job,
                                rollback_production_job, stage_a_job, training_job)
from orchestration.schedules import monthly_retraining_schedule, production_freshness_schedule
from orchestration.sensors import annotation_exports_sensor, buffer_footage_sensor, hard_example_labels_sensor

ASSET_MODULES = (footage, labels, models, export, launch, buffer, experiments, retraining, previews)


def build_definitions(deployment: str | None = None, env=None) -> dg.Definitions:
    return dg.Definitions(
        assets=dg.load_assets_from_modules(ASSET_MODULES),
        asset_checks=dg.load_asset_checks_from_modules(ASSET_MODULES),
        jobs=[frames_job, buffer_frames_job, annotations_job, stage_a_job, training_job, launch_job,
              monthly_retraining_job,
              profiles_job, retraining_resume_job, rollback_production_job, production_freshness_job,
              store_housekeeping_job, preview_job],
        schedules=[monthly_retraining_schedule, production_freshness_schedule, store_housekeeping_schedule],
        sensors=[buffer_footage_sensor, annotation_exports_sensor, hard_example_labels_sensor],
        resources=resources_for(deployment, env),
    )


defs = build_definitions()
