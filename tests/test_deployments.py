"""Deployments: one place chooses resources; local and prod both load and validate."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestration.deployments import resources_for
from pipeline.errors import PipelineInputError
from resources.engine import JetsonSSHEngineBuilder, UnavailableEngineBuilder
from resources.storage import LocalArtifactStore, S3ArtifactStore

REPO = Path(__file__).resolve().parents[1]
PROD_ENV = {
    "DAGSTER_DEPLOYMENT": "prod",
    "LBZF_S3_BUCKET": "lbzf-artifacts-placeholder",
    "LBZF_S3_PREFIX": "pipeline",
    "LBZF_S3_KMS_KEY_ID": "arn:aws:kms:us-east-1:111122223333:key/00000000-0000-0000-0000-000000000000",
    "LBZF_JETSON_HOST": "jetson-line1.example.internal",
    "LBZF_JETSON_USER": "lbzf",
    "LBZF_JETSON_KNOWN_HOSTS": "/etc/lbzf/known_hosts",
    "LBZF_BASE_WEIGHTS": "models/base/yolov8n.pt",
}


def test_local_deployment_uses_a_directory_and_no_engine_builder_here(tmp_path):
    resources = resources_for(env={"LBZF_STORAGE_ROOT": str(tmp_path / "store")})
    assert isinstance(resources["store"], LocalArtifactStore)
    assert resources["store"].root == str((tmp_path / "store").resolve())
    assert resources["base_weights"].allow_untrained is True
    builder = resources["engine_builder"]
    if not isinstance(builder, UnavailableEngineBuilder):
        pytest.skip(f"this host has TensorRT and a GPU ({builder.availability()[1]}): the local deployment builds "
                    "engines here, so there is no 'unavailable' reason to check")
    available, reason = builder.availability()
    assert not available and "TensorRT" in reason


def test_prod_deployment_loads_with_placeholder_environment():
    resources = resources_for(env=PROD_ENV)
    store = resources["store"]
    assert isinstance(store, S3ArtifactStore)
    assert store.bucket == PROD_ENV["LBZF_S3_BUCKET"] and store.kms_key_id == PROD_ENV["LBZF_S3_KMS_KEY_ID"]
    assert store.uri("models/x.pt") == "s3://lbzf-artifacts-placeholder/pipeline/models/x.pt"
    builder = resources["engine_builder"]
    assert isinstance(builder, JetsonSSHEngineBuilder) and builder.host == PROD_ENV["LBZF_JETSON_HOST"]
    assert resources["base_weights"].allow_untrained is False  # production never falls back silently


def test_prod_engine_builder_takes_every_jetson_setting():
    """Each LBZF_JETSON_* variable documented in docs/deployment.md reaches the builder; unset ones keep
    the builder's defaults."""
    defaults = resources_for(env=PROD_ENV)["engine_builder"]
    assert defaults.port == 22 and defaults.key_path is None
    assert defaults.effective_remote_dir == "/home/lbzf/lbzf/engines"
    assert defaults.trtexec_path == JetsonSSHEngineBuilder.model_fields["trtexec_path"].default
    env = dict(PROD_ENV, LBZF_JETSON_PORT="2222", LBZF_JETSON_KEY_PATH="/etc/lbzf/id_ed25519",
               LBZF_JETSON_REMOTE_DIR="/data/lbzf/engines", LBZF_JETSON_TRTEXEC="/opt/tensorrt/bin/trtexec")
    builder = resources_for(env=env)["engine_builder"]
    assert isinstance(builder, JetsonSSHEngineBuilder)
    assert (builder.host, builder.port, builder.user) == ("jetson-line1.example.internal", 2222, "lbzf")
    assert builder.key_path == "/etc/lbzf/id_ed25519" and builder.known_hosts_path == "/etc/lbzf/known_hosts"
    assert builder.effective_remote_dir == "/data/lbzf/engines"
    assert builder.trtexec_path == "/opt/tensorrt/bin/trtexec"


@pytest.mark.parametrize("missing", ["LBZF_S3_BUCKET", "LBZF_S3_KMS_KEY_ID", "LBZF_JETSON_HOST",
                                     "LBZF_JETSON_USER", "LBZF_JETSON_KNOWN_HOSTS"])
def test_prod_names_the_missing_setting(missing):
    env = {k: v for k, v in PROD_ENV.items() if k != missing}
    with pytest.raises(PipelineInputError) as error:
        resources_for(env=env)
    assert missing in str(error.value) and "Remedy" in str(error.value)


def test_unknown_deployment_is_rejected():
    with pytest.raises(PipelineInputError, match="DAGSTER_DEPLOYMENT.*staging"):
        resources_for(env={"DAGSTER_DEPLOYMENT": "staging"})


@pytest.mark.parametrize("deployment", ["local", "prod"])
def test_dagster_definitions_validate(deployment, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LBZF_", "DAGSTER_"))}
    env.update({"DAGSTER_HOME": str(tmp_path), "LBZF_STORAGE_ROOT": str(tmp_path / "store")})
    (tmp_path / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    if deployment == "prod":
        env.update(PROD_ENV)
    dagster = Path(sys.executable).with_name("dagster")
    result = subprocess.run([str(dagster), "definitions", "validate"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All code locations passed validation" in result.stdout + result.stderr


def test_definitions_hold_the_whole_graph():
    from orchestration.definitions import build_definitions

    defs = build_definitions("local", env={})
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    for name in ["operation_videos", "video_manifest", "video_frames", "plant_photo_frames", "stage_a_sample",
                 "annotations", "dataset_split", "yolo_dataset", "stage_a_baseline", "stage_b_model",
                 "selected_model", "evaluation", "onnx_model", "tensorrt_engine", "buffer_frames", "hard_examples"]:
        assert name in keys, name
    checks = {c.name for c in graph.asset_check_keys}
    assert {"annotator_agreement", "split_has_no_leaks", "split_ratios_within_tolerance", "onnx_parity"} <= checks
    assert defs.resolve_schedule_def("monthly_retraining_job_schedule") is not None
    assert {"buffer_footage_sensor", "annotation_exports_sensor"} <= {s.name for s in defs.sensors}


PROD_INSTANCE_ENV = {"DAGSTER_PG_HOST": "db.internal", "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_DB": "dagster",
                     "DAGSTER_PG_USERNAME": "dagster", "DAGSTER_PG_PASSWORD": "placeholder",
                     "LBZF_S3_BUCKET": "lbzf-artifacts-placeholder",
                     "LBZF_S3_KMS_KEY_ID": PROD_ENV["LBZF_S3_KMS_KEY_ID"]}


def test_production_instance_config_is_valid(tmp_path, monkeypatch):
    """deploy/dagster.prod.yaml passes Dagster's own instance-config validation (no server needed)."""
    from dagster._core.instance.config import dagster_instance_config

    for key, value in PROD_INSTANCE_ENV.items():
        monkeypatch.setenv(key, value)
    (tmp_path / "dagster.yaml").write_text((REPO / "deploy" / "dagster.prod.yaml").read_text())
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["concurrency"]["pools"]["default_limit"] == 1
    assert config["run_monitoring"]["enabled"] and config["run_retries"]["enabled"]
    assert config["compute_logs"]["class"] == "S3ComputeLogManager"
    assert "postgres_db" in config["storage"]["postgres"]
    assert config["telemetry"]["enabled"] is False


@pytest.mark.parametrize("deployment", ["local", "prod"])
def test_training_runs_folder_is_the_trainers_setting(deployment, tmp_path):
    env = dict(PROD_ENV if deployment == "prod" else {}, LBZF_STORAGE_ROOT=str(tmp_path / "store"),
               LBZF_TRAIN_DIR=str(tmp_path / "runs"))
    trainer = resources_for(deployment, env=env)["trainer"]
    assert trainer.run_dir("stage_b") == tmp_path / "runs" / "stage_b"
    env.pop("LBZF_TRAIN_DIR")
    assert resources_for(deployment, env=env)["trainer"].run_dir("stage_b").name == "stage_b"


def test_inference_device_and_backend_come_from_the_deployment(tmp_path):
    from resources.inference import inference_settings

    local = inference_settings(env={})
    assert (local.device, local.backend) == ("cpu", "auto")
    prod = inference_settings(env={"DAGSTER_DEPLOYMENT": "prod"})
    assert prod.device == "0"  # the GPU worker, never a hard-coded cpu
    forced = inference_settings(env={"LBZF_INFER_DEVICE": "cuda:1", "LBZF_INFER_BACKEND": "ONNXRuntime",
                                     "LBZF_INFER_CACHE": str(tmp_path)})
    assert (forced.device, forced.backend, forced.cache_dir) == ("cuda:1", "onnxruntime", tmp_path)
    for name, value in (("LBZF_INFER_BACKEND", "openvino"), ("LBZF_INFER_DEVICE", "gpu-please")):
        with pytest.raises(PipelineInputError, match=name):
            inference_settings(env={name: value})
