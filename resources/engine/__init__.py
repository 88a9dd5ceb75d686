"""Build (and deploy) the TensorRT engine of the person detector (one file per job, see below).

A TensorRT engine is only valid for the TensorRT version and the GPU it was built with, so the engine
that runs on the Jetson must be built *on* the Jetson (or on an identical one). Three builders share
one interface (`EngineBuilder`):

* `JetsonSSHEngineBuilder`  - production: copies the ONNX to the Jetson over SSH/SFTP (host-key
  checking on, key or agent auth), runs ``trtexec`` there, fetches and verifies the engine, and can
  deploy an engine to the device's ``shadow/`` or ``production/`` directory atomically.
* `LocalTensorRTEngineBuilder` - a GPU host with the TensorRT Python API (or ``trtexec``).
* `UnavailableEngineBuilder`  - neither: never builds, says why and what to configure.

Every engine gets a sidecar ``<engine_name>.engine.json`` (versions, sha256 of engine and ONNX);
`check_engine_compatible` compares those versions with a device's before an engine is deployed.
Builders that can *run* an engine (`inference_support`) do so with ``trtexec --loadEngine`` on given
input tensors (`run_engine`): the raw outputs and per-frame latencies the engine validation compares
with PyTorch (`pipeline.engine_validation`).
`orchestration.deployments.resources_for` picks the builder per deployment (``DAGSTER_DEPLOYMENT``, ``LBZF_JETSON_*``).

Files: `results` (results, errors, shared names), `trtexec` (running engines), `versions` (version
parsing), `compatibility` (engine vs device), `builder` (the interface, `UnavailableEngineBuilder`,
sidecars), `local_tensorrt`, `jetson_ssh` (build and run on the Jetson), `ssh_transport` (SSH/SFTP),
`deploy` (atomic deploy to the Jetson).
"""
from resources.engine.builder import EngineBuilder, UnavailableEngineBuilder
from resources.engine.compatibility import check_engine_compatible
from resources.engine.jetson_ssh import JetsonSSHEngineBuilder
from resources.engine.local_tensorrt import LocalTensorRTEngineBuilder
from resources.engine.results import (DEFAULT_UNAVAILABLE_REASON, DEPLOY_MODES, PRECISIONS, UNKNOWN, VERSION_KEYS,
                                      EngineBuildError, EngineBuildResult, EngineCompatibilityError,
                                      EngineDeployResult, EngineRunResult)
from resources.engine.trtexec import parse_trtexec_output, parse_trtexec_times, trtexec_run_args
from resources.engine.versions import parse_cuda_version, parse_jetpack_version, parse_l4t_release, parse_trt_version

__all__ = [
    "DEFAULT_UNAVAILABLE_REASON", "DEPLOY_MODES", "PRECISIONS", "UNKNOWN", "VERSION_KEYS",
    "EngineBuildError", "EngineBuildResult", "EngineCompatibilityError", "EngineDeployResult", "EngineRunResult",
    "EngineBuilder", "UnavailableEngineBuilder", "LocalTensorRTEngineBuilder", "JetsonSSHEngineBuilder",
    "check_engine_compatible",
    "parse_cuda_version", "parse_jetpack_version", "parse_l4t_release", "parse_trt_version",
    "parse_trtexec_output", "parse_trtexec_times", "trtexec_run_args",
]
