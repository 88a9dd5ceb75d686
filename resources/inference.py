"""The device and backend of every detection pass, as the deployment sets them (LBZF_INFER_*).

Read when a pass runs (and checked when the definitions load, orchestration/deployments.py), so a
GPU worker's passes run on its GPU and a laptop's on its CPU, with the same asset code.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pipeline.errors import PipelineInputError

DEPLOYMENTS = ("local", "prod")


def inference_settings(deployment: str | None = None, env: Mapping[str, str] | None = None):
    """The device and backend every detection pass uses (Stage A, evaluation, hard-example scoring,
    shadow replay, engine validation): LBZF_INFER_DEVICE (default cpu locally, GPU 0 in prod),
    LBZF_INFER_BACKEND (auto = the fastest parity-proven one), LBZF_INFER_CACHE (exported ONNX)."""
    from pipeline.inference.backends import cuda_index
    from pipeline.inference.choose import CHOICES
    from pipeline.inference.onnx_cache import DEFAULT_CACHE
    from pipeline.inference.settings import InferenceSettings

    env = os.environ if env is None else env
    deployment = (deployment or env.get("DAGSTER_DEPLOYMENT", "local")).strip() or "local"
    if deployment not in DEPLOYMENTS:
        raise PipelineInputError("environment", "DAGSTER_DEPLOYMENT", deployment, f"use one of {DEPLOYMENTS}",
                                 problem="unknown deployment")
    device = env.get("LBZF_INFER_DEVICE", "").strip() or ("0" if deployment == "prod" else "cpu")
    try:
        cuda_index(device)
    except ValueError:
        raise PipelineInputError("environment", "LBZF_INFER_DEVICE", device, "use cpu or a GPU index such as 0",
                                 problem="unknown inference device") from None
    backend = env.get("LBZF_INFER_BACKEND", "").strip().lower() or "auto"
    if backend not in CHOICES:
        raise PipelineInputError("environment", "LBZF_INFER_BACKEND", backend, f"use one of {CHOICES}",
                                 problem="unknown inference backend")
    cache = Path(env.get("LBZF_INFER_CACHE", "").strip() or DEFAULT_CACHE).expanduser()
    return InferenceSettings(device=device, backend=backend, cache_dir=cache)
