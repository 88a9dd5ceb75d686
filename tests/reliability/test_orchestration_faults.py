"""Orchestration faults: a repeated sensor tick never launches a clip or an export twice, and invalid
configuration is refused when it is loaded, naming the setting."""
from __future__ import annotations

import dagster as dg
import pytest

from orchestration.deployments import resources_for
from pipeline.errors import PipelineInputError
from orchestration.sensors import BufferSensorSettings, annotation_exports_sensor, buffer_footage_sensor
from resources.storage import LocalArtifactStore


def tick(sensor, store, cursor):
    context = dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), cursor=cursor,
                                      resources={"store": store, "buffer_sensor_settings": BufferSensorSettings()})
    return sensor(context)


@pytest.mark.fault("orchestration.sensor_tick_repeated")
def test_repeated_buffer_tick_requests_no_duplicate_runs(fault, tmp_path):
    root = tmp_path / "store"
    uploader = LocalArtifactStore(root=str(root), allow_source_writes=True)
    store = LocalArtifactStore(root=str(root))
    for clip in ("080000", "083000"):
        uploader.write_bytes(f"buffer/cam1/2026-07-01/{clip}.mp4", clip.encode() * 100)
    fault.sources((uploader, "buffer/"))
    fault.watch(store)
    first = tick(buffer_footage_sensor, store, None)
    ready = tick(buffer_footage_sensor, store, first.cursor)
    # the daemon crashed before it stored the cursor: the same tick runs again from the old cursor
    again = tick(buffer_footage_sensor, store, first.cursor)
    keys_ready = [r.run_key for r in ready.run_requests]
    assert len(keys_ready) == 2 and len(set(keys_ready)) == 2
    assert [r.run_key for r in again.run_requests] == keys_ready  # same run keys: Dagster launches them once
    assert again.cursor == ready.cursor
    after = tick(buffer_footage_sensor, store, ready.cursor)
    assert after.run_requests == []
    fault.observed("survived", f"re-tick gave the same {len(keys_ready)} run keys; next tick none")


@pytest.mark.fault("orchestration.annotation_tick_repeated")
def test_repeated_annotation_tick_requests_no_duplicate_runs(fault, tmp_path):
    root = tmp_path / "store"
    uploader = LocalArtifactStore(root=str(root), allow_source_writes=True)
    store = LocalArtifactStore(root=str(root))
    uploader.write_bytes("annotations/incoming/stage_a/anna/export.zip", b"PK" + b"x" * 100)
    fault.sources((uploader, "annotations/incoming/"))
    fault.watch(store)
    t1 = tick(annotation_exports_sensor, store, None)
    t2 = tick(annotation_exports_sensor, store, t1.cursor)
    t2_again = tick(annotation_exports_sensor, store, t1.cursor)
    t3 = tick(annotation_exports_sensor, store, t2.cursor)
    assert t1.run_requests == [] and len(t2.run_requests) == 1
    assert [r.run_key for r in t2_again.run_requests] == [r.run_key for r in t2.run_requests]
    assert t3.run_requests == []
    fault.observed("survived", "same run key on a repeated tick; none after the cursor moved")


PROD_ENV = {"LBZF_S3_BUCKET": "lbzf-prod", "LBZF_S3_KMS_KEY_ID": "arn:aws:kms:eu-west-1:111122223333:key/mrk-1f2e3d",
            "LBZF_JETSON_HOST": "jetson-line-3", "LBZF_JETSON_USER": "lbzf", "LBZF_JETSON_KNOWN_HOSTS": "/k"}


@pytest.mark.fault("orchestration.invalid_deployment")
def test_unknown_deployment_is_refused_at_load(fault):
    env = {"DAGSTER_DEPLOYMENT": "staging"}
    fault.sources(env)
    with fault.rejects(PipelineInputError, "DAGSTER_DEPLOYMENT", "staging", "local", "prod"):
        resources_for(env=env)


@pytest.mark.fault("orchestration.missing_setting")
@pytest.mark.parametrize("missing", ["LBZF_S3_KMS_KEY_ID", "LBZF_S3_BUCKET", "LBZF_JETSON_KNOWN_HOSTS"])
def test_missing_prod_setting_is_refused_at_load(fault, missing):
    env = {k: v for k, v in PROD_ENV.items() if k != missing}
    fault.sources(env, PROD_ENV)
    with fault.rejects(PipelineInputError, missing, "missing setting", "README.md"):
        resources_for("prod", env)
    resources_for("prod", PROD_ENV)  # complete settings load (no connection is made at load)


@pytest.mark.fault("orchestration.kms_key_not_arn")
@pytest.mark.parametrize("value", ["alias/lbzf-artifacts", "1234abcd-12ab-34cd-56ef-1234567890ab",
                                   "arn:aws:kms:eu-west-1:111122223333:alias/lbzf"])
def test_kms_key_that_is_not_an_arn_is_refused_at_load(fault, value):
    env = {**PROD_ENV, "LBZF_S3_KMS_KEY_ID": value}
    fault.sources(env)
    with fault.rejects(PipelineInputError, "LBZF_S3_KMS_KEY_ID", value, "not a KMS key ARN", "Remedy:"):
        resources_for("prod", env)


@pytest.mark.fault("orchestration.invalid_run_config")
def test_invalid_run_config_is_refused_naming_the_key(fault, tmp_path):
    from orchestration.definitions import build_definitions

    defs = build_definitions("local", {"LBZF_STORAGE_ROOT": str(tmp_path / "store")})
    job = defs.resolve_job_def("frames_job")
    dg.validate_run_config(job, {"ops": {"video_frames": {"config": {"step_s": 2.0}}}})
    fault.sources(tmp_path)
    with fault.rejects(dg.DagsterInvalidConfigError, "step_s", "video_frames"):
        dg.validate_run_config(job, {"ops": {"video_frames": {"config": {"step_s": "often"}}}})
    with fault.rejects(dg.DagsterInvalidConfigError, "stepp_s"):
        dg.validate_run_config(job, {"ops": {"video_frames": {"config": {"stepp_s": 2.0}}}})
