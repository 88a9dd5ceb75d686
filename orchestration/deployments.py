"""The one place that chooses resources per deployment (DAGSTER_DEPLOYMENT=local|prod).

Nothing else in the code asks which environment it is in. Every setting comes from an environment
variable listed in README.md ("Configuration").
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from pipeline.errors import PipelineInputError
from resources.base_weights import BaseWeights
from resources.inference import inference_settings
from resources.shadow_policy import ShadowPolicy
from resources.engine import JetsonSSHEngineBuilder, LocalTensorRTEngineBuilder, UnavailableEngineBuilder
from resources.storage import LocalArtifactStore, S3ArtifactStore
from resources.trainer import InProcessTrainer, PipesSubprocessTrainer

DEPLOYMENTS = ("local", "prod")
DEFAULT_STORAGE_ROOT = Path(".lbzf") / "store"


def _required(env: Mapping[str, str], name: str, deployment: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise PipelineInputError("environment", name, value, f"set {name} for DAGSTER_DEPLOYMENT={deployment} "
                                 "(see README.md, Configuration)", problem="missing setting")
    return value


KMS_KEY_ARN = re.compile(r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]+$")


def _kms_key_arn(env: Mapping[str, str], deployment: str) -> str:
    """The KMS key by ARN: the bucket policy compares the request's key id with the key's ARN, so an
    alias or bare key id would be refused by S3 at the first write instead of here at load."""
    value = _required(env, "LBZF_S3_KMS_KEY_ID", deployment)
    if not KMS_KEY_ARN.match(value):
        raise PipelineInputError("environment", "LBZF_S3_KMS_KEY_ID", value,
                                 "give the key's ARN, arn:aws:kms:<region>:<12-digit account>:key/<key id> "
                                 "(aws kms describe-key --key-id <alias> --query KeyMetadata.Arn; "
                                 "docs/deployment.md, KMS key and bucket)", problem="not a KMS key ARN")
    return value


def _base_weights(env: Mapping[str, str], allow_untrained_default: bool) -> BaseWeights:
    allowed = [h.strip() for h in env.get("LBZF_ALLOWED_WEIGHTS", "").split(",") if h.strip()]
    untrained = env.get("LBZF_ALLOW_UNTRAINED_BASELINE", "1" if allow_untrained_default else "0")
    return BaseWeights(setting=env.get("LBZF_BASE_WEIGHTS", "yolov8n.pt"), extra_allowed_sha256=allowed,
                       allow_untrained=untrained.lower() in {"1", "true", "yes"})


def _buffer_sensor_settings(env: Mapping[str, str]):
    from orchestration.sensors import BufferSensorSettings

    def number(name: str, default: str, kind=int):
        value = env.get(name, default)
        try:
            return kind(value)
        except ValueError:
            raise PipelineInputError("environment", name, value, f"give a number (default {default})",
                                     problem="not a number") from None

    return BufferSensorSettings(backfill_days=number("LBZF_BUFFER_BACKFILL_DAYS", "7"),
                                overlap_days=number("LBZF_BUFFER_OVERLAP_DAYS", "1"),
                                hot_s=number("LBZF_BUFFER_HOT_S", "3600", float),
                                full_listing_s=number("LBZF_BUFFER_FULL_LISTING_S", "3600", float))


def _local_engine_builder():
    builder = LocalTensorRTEngineBuilder()
    available, reason = builder.availability()
    return builder if available else UnavailableEngineBuilder(reason=reason)


def resources_for(deployment: str | None = None, env: Mapping[str, str] | None = None) -> dict:
    env = os.environ if env is None else env
    inference_settings(deployment, env)  # LBZF_INFER_*: refused here, at load, when wrong
    deployment = (deployment or env.get("DAGSTER_DEPLOYMENT", "local")).strip() or "local"
    if deployment == "local":
        return {
            "store": LocalArtifactStore(root=str(Path(env.get("LBZF_STORAGE_ROOT", str(DEFAULT_STORAGE_ROOT)))
                                                 .expanduser().resolve())),
            "engine_builder": _local_engine_builder(),
            "trainer": InProcessTrainer(device=env.get("LBZF_TRAIN_DEVICE", ""),
                                        runs_dir=env.get("LBZF_TRAIN_DIR", "")),
            "base_weights": _base_weights(env, allow_untrained_default=True),
            "buffer_sensor_settings": _buffer_sensor_settings(env),
            "shadow_policy": ShadowPolicy(allow_simulated=True),
        }
    if deployment == "prod":
        return {
            "store": S3ArtifactStore(bucket=_required(env, "LBZF_S3_BUCKET", deployment),
                                     prefix=env.get("LBZF_S3_PREFIX", ""),
                                     endpoint_url=env.get("LBZF_S3_ENDPOINT_URL") or None,
                                     region_name=env.get("LBZF_S3_REGION") or None,
                                     kms_key_id=_kms_key_arn(env, deployment)),
            "engine_builder": JetsonSSHEngineBuilder(
                host=_required(env, "LBZF_JETSON_HOST", deployment),
                port=int(env.get("LBZF_JETSON_PORT", "22")),
                user=_required(env, "LBZF_JETSON_USER", deployment),
                key_path=env.get("LBZF_JETSON_KEY_PATH") or None,
                known_hosts_path=_required(env, "LBZF_JETSON_KNOWN_HOSTS", deployment),
                remote_dir=env.get("LBZF_JETSON_REMOTE_DIR") or None,
                **({"trtexec_path": env["LBZF_JETSON_TRTEXEC"]} if env.get("LBZF_JETSON_TRTEXEC") else {}),
            ),
            "trainer": PipesSubprocessTrainer(device=env.get("LBZF_TRAIN_DEVICE", "0"),
                                              runs_dir=env.get("LBZF_TRAIN_DIR", "")),
            "base_weights": _base_weights(env, allow_untrained_default=False),
            "buffer_sensor_settings": _buffer_sensor_settings(env),
            "shadow_policy": ShadowPolicy(allow_simulated=False),  # production accepts only the device's logs
        }
    raise PipelineInputError("environment", "DAGSTER_DEPLOYMENT", deployment, f"use one of {DEPLOYMENTS}",
                             problem="unknown deployment")
