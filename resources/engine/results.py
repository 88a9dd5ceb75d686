"""What engine builders return and raise, and the names they share (precisions, deploy modes)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from pipeline.errors import StructuredError

PRECISIONS = ("fp16", "fp32", "int8")
DEPLOY_MODES = ("shadow", "production")
UNKNOWN = "unknown"
VERSION_KEYS = ("tensorrt", "cuda", "l4t", "jetpack", "device", "hostname")

DEFAULT_UNAVAILABLE_REASON = (
    "no TensorRT on this host and no Jetson configured; set DAGSTER_DEPLOYMENT=prod with LBZF_JETSON_HOST, "
    "LBZF_JETSON_USER, LBZF_JETSON_KNOWN_HOSTS (and LBZF_JETSON_KEY_PATH or a running ssh-agent) to build on "
    "the Jetson, or run on a GPU host with tensorrt installed (pip install '.[tensorrt]')"
)


# --------------------------------------------------------------------------- results and errors


_NO_VALUE = object()


class EngineBuildError(StructuredError, RuntimeError):
    """An engine could not be built, run or deployed: a structured error (pipeline/errors.py).

    ``file`` is the file, key or setting that holds the problem (the ONNX, the engine, its sidecar, the
    calibration cache, ``user@host:port:/remote/path`` on the Jetson, the SSH key or known_hosts file),
    ``field`` the parameter, setting or record field (``precision``, ``int8_calib_cache``,
    ``versions.tensorrt``, ``LBZF_JETSON_KEY_PATH``...), ``value`` what it held, ``remedy`` what to do.
    ``value`` is only set when given (``None`` is a value: "not given"). Secrets never go in ``value``.
    ``str(exc)`` is the message (which names the file), the remedy and the log tail.
    """

    def __init__(self, message: str, *, remedy: str = "", host: str | None = None, log_tail: str = "",
                 file: str | Path = "", field: str = "", value: object = _NO_VALUE):
        self.problem = message
        self.remedy = remedy
        self.host = host
        self.log_tail = log_tail
        self.file = str(file)
        self.field = field
        if value is not _NO_VALUE:
            self.value = value
        text = message
        if remedy:
            text += f" Remedy: {remedy}"
        if log_tail:
            text += f"\n--- log tail ---\n{log_tail}"
        super().__init__(text)

    def to_result(self, *, precision: str = "", onnx_sha256: str = "", versions: Mapping[str, str] | None = None,
                  build_seconds: float = 0.0) -> "EngineBuildResult":
        """The failure as an `EngineBuildResult` (status 'failed'), e.g. for asset metadata."""
        reason = self.problem + (f" Remedy: {self.remedy}" if self.remedy else "")
        return EngineBuildResult(status="failed", reason=reason, precision=precision, onnx_sha256=onnx_sha256,
                                 versions=dict(versions or {}), build_seconds=build_seconds, log_tail=self.log_tail)


class EngineCompatibilityError(EngineBuildError):
    """An engine built for one TensorRT / L4T / JetPack is about to meet a device with another."""


@dataclasses.dataclass
class EngineBuildResult:
    status: str  # 'built' | 'unavailable' | 'failed'
    reason: str = ""
    engine_path: Path | None = None
    engine_sha256: str = ""
    onnx_sha256: str = ""
    precision: str = ""
    versions: dict[str, str] = dataclasses.field(default_factory=dict)
    build_seconds: float = 0.0
    log_tail: str = ""
    metadata_path: Path | None = None

    @property
    def built(self) -> bool:
        return self.status == "built"

    def to_metadata(self) -> dict[str, Any]:
        """Plain, JSON-serialisable dict (paths as strings)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, dict):
                value = {str(k): str(v) for k, v in value.items()}
            out[f.name] = value
        return out


@dataclasses.dataclass
class EngineDeployResult:
    mode: str
    host: str
    remote_path: str
    engine_sha256: str
    changed: bool
    previous_path: str | None = None
    previous_sha256: str | None = None
    device_versions: dict[str, str] = dataclasses.field(default_factory=dict)

    def to_metadata(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class EngineRunResult:
    """An engine run over input tensors: one raw output per input, and its latency (ms, the median
    of trtexec's timed iterations: host-to-device + GPU compute + device-to-host)."""

    outputs: list[np.ndarray]
    latency_ms: list[float]
    host: str
    log_tail: str = ""
