"""Build (and deploy) the TensorRT engine of the person detector.

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
`select_engine_builder` picks the builder from the environment (``DAGSTER_DEPLOYMENT``, ``LBZF_JETSON_*``).
"""
from __future__ import annotations

import abc
import contextlib
import dataclasses
import datetime as _dt
import json
import os
import posixpath
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping

import dagster as dg
import numpy as np
from pydantic import Field

from pipeline.hashing import sha256_file

PRECISIONS = ("fp16", "fp32", "int8")
DEPLOY_MODES = ("shadow", "production")
UNKNOWN = "unknown"
VERSION_KEYS = ("tensorrt", "cuda", "l4t", "jetpack", "device", "hostname")

_ENGINE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_LOG_TAIL_LINES = 40
_LOG_TAIL_CHARS = 6000
_KEEP_OUTPUT_BYTES = 1 << 20  # keep at most the last MiB of a remote command's output

DEFAULT_UNAVAILABLE_REASON = (
    "no TensorRT on this host and no Jetson configured; set DAGSTER_DEPLOYMENT=prod with LBZF_JETSON_HOST, "
    "LBZF_JETSON_USER, LBZF_JETSON_KNOWN_HOSTS (and LBZF_JETSON_KEY_PATH or a running ssh-agent) to build on "
    "the Jetson, or run on a GPU host with tensorrt installed (pip install '.[tensorrt]')"
)


# --------------------------------------------------------------------------- results and errors


class EngineBuildError(RuntimeError):
    """An engine could not be built or deployed; the message names the host and a remedy."""

    def __init__(self, message: str, *, remedy: str = "", host: str | None = None, log_tail: str = ""):
        self.problem = message
        self.remedy = remedy
        self.host = host
        self.log_tail = log_tail
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


# --------------------------------------------------------------------------- running engines (trtexec)


def trtexec_run_args(trtexec: str, engine: str, input_name: str, input_file: str, output_json: str,
                     times_json: str, iterations: int) -> list[str]:
    """trtexec arguments that run ``engine`` once per timed iteration on the raw float32 tensor in
    ``input_file`` and export the output tensors and the per-iteration timings as JSON."""
    return [trtexec, f"--loadEngine={engine}", f"--loadInputs={input_name}:{input_file}",
            f"--exportOutput={output_json}", f"--exportTimes={times_json}", f"--iterations={max(1, int(iterations))}",
            "--warmUp=0", "--duration=0"]


_NON_FINITE = re.compile(r"(?<![\w\"])(-?)(nan|inf)(?![\w\"])", re.I)


def _json_with_non_finite(text: str) -> Any:
    """trtexec prints non-finite floats as nan / -nan / inf; Python's json reads NaN / Infinity."""
    return json.loads(_NON_FINITE.sub(lambda m: "NaN" if m.group(2).lower() == "nan" else f"{m.group(1)}Infinity",
                                      text))


def parse_trtexec_output(text: str, name: str = "output0") -> np.ndarray:
    """The tensor ``name`` from a ``trtexec --exportOutput`` file:
    ``[{"name": ..., "dimensions": "1x5x8400", "values": [...]}, ...]``."""
    entries = _json_with_non_finite(text)
    if not isinstance(entries, list) or not entries:
        raise EngineBuildError("trtexec wrote no output tensors.", remedy="check the engine has an output tensor.")
    entry = next((e for e in entries if e.get("name") == name), None)
    if entry is None:
        names = [e.get("name") for e in entries]
        raise EngineBuildError(f"the engine has no output {name!r} (outputs: {names}).",
                               remedy="rebuild the engine from the pipeline's ONNX (output 'output0').")
    dims = [int(d) for d in re.findall(r"\d+", str(entry.get("dimensions", "")))]
    values = np.asarray(entry.get("values", []), dtype=np.float32)
    if not dims or int(np.prod(dims)) != values.size:
        raise EngineBuildError(f"output {name!r}: dimensions {entry.get('dimensions')!r} do not match "
                               f"{values.size} values.",
                               remedy="check the trtexec version writes --exportOutput fully.")
    return values.reshape(dims)


def parse_trtexec_times(text: str) -> float:
    """Median latency (ms) of the timed iterations in a ``trtexec --exportTimes`` file."""
    entries = _json_with_non_finite(text)
    values = [float(e.get("latencyMs", e.get("computeMs"))) for e in entries or []
              if isinstance(e, Mapping) and e.get("latencyMs", e.get("computeMs")) is not None]
    return float(np.median(values)) if values else float("nan")


def _input_bytes(tensor: np.ndarray) -> bytes:
    return np.ascontiguousarray(tensor, dtype=np.float32).tobytes()


# --------------------------------------------------------------------------- version parsing


def parse_l4t_release(text: str) -> str:
    """'# R35 (release), REVISION: 4.1, ...' (``/etc/nv_tegra_release``) -> '35.4.1'."""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([0-9][0-9.]*)", text or "")
    if not m:
        return UNKNOWN
    return f"{m.group(1)}.{m.group(2).strip('.')}"


def parse_trt_version(text: str) -> str:
    """TensorRT version from trtexec output: '[I] TensorRT version: 8.5.2' or '[TensorRT v8502]'."""
    text = text or ""
    m = re.search(r"TensorRT version:\s*([0-9]+(?:\.[0-9]+)+)", text)
    if m:
        return m.group(1)
    m = re.search(r"\[TensorRT v(\d+)\]", text)
    if m:
        n = int(m.group(1))
        if n >= 100000:  # TensorRT >= 10: major*10000 + minor*100 + patch
            return f"{n // 10000}.{(n // 100) % 100}.{n % 100}"
        return f"{n // 1000}.{(n // 100) % 10}.{n % 100}"  # TensorRT 8.x: major*1000 + minor*100 + patch
    return UNKNOWN


def parse_cuda_version(text: str) -> str:
    """CUDA version from ``nvcc --version`` ('..., V11.4.315') or ``version.json``."""
    text = text or ""
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        data = json.loads(text)
        version = data.get("cuda", {}).get("version") or data.get("cuda_cudart", {}).get("version")
        if version:
            return str(version)
    m = re.search(r"release\s+[0-9.]+,\s*V([0-9][0-9.]*)", text) or re.search(r"release\s+([0-9][0-9.]*)", text)
    return m.group(1).rstrip(".") if m else UNKNOWN


def parse_jetpack_version(text: str) -> str:
    """'5.1.2-b104' (dpkg) or 'JetPack 5.1.2' -> the version string as given ('5.1.2-b104')."""
    m = re.search(r"([0-9]+\.[0-9]+(?:\.[0-9]+)?(?:[-+~][A-Za-z0-9.+~-]*)?)", text or "")
    return m.group(1) if m else UNKNOWN


def _norm_version(value: str | None, parts: int = 3) -> str:
    if not value or value == UNKNOWN:
        return UNKNOWN
    nums = re.findall(r"\d+", str(value))
    return ".".join(nums[:parts]) if nums else UNKNOWN


def check_engine_compatible(engine_meta: Mapping[str, Any], device_versions: Mapping[str, Any]) -> None:
    """Refuse (raise `EngineCompatibilityError`) when an engine cannot run on a device.

    ``engine_meta`` is an engine sidecar (its ``versions``) or a versions dict. TensorRT must be known on
    both sides and equal (major.minor.patch); L4T and JetPack must be equal where either side knows
    them (an engine built off-Jetson, with no L4T, does not run on a Jetson and vice versa).
    """
    built = engine_meta.get("versions", engine_meta) if isinstance(engine_meta, Mapping) else {}
    device = device_versions or {}
    remedy = "rebuild on that device (run the engine build against this Jetson), then deploy the new engine"
    problems = []
    trt_e, trt_d = str(built.get("tensorrt") or UNKNOWN), str(device.get("tensorrt") or UNKNOWN)
    if _norm_version(trt_e) == UNKNOWN or _norm_version(trt_d) == UNKNOWN:
        problems.append(f"TensorRT version cannot be verified (engine built with {trt_e}, device has {trt_d})")
    elif _norm_version(trt_e) != _norm_version(trt_d):
        problems.append(f"TensorRT differs: engine built with {trt_e}, device has {trt_d}")
    for key, label in (("l4t", "L4T"), ("jetpack", "JetPack")):
        a, b = str(built.get(key) or UNKNOWN), str(device.get(key) or UNKNOWN)
        if _norm_version(a) == UNKNOWN and _norm_version(b) == UNKNOWN:
            continue
        if _norm_version(a) != _norm_version(b):
            problems.append(f"{label} differs: engine built on {a}, device has {b}")
    if problems:
        where = device.get("hostname") or device.get("device") or "the device"
        raise EngineCompatibilityError(f"engine is not compatible with {where}: " + "; ".join(problems) + ".",
                                       remedy=remedy, host=str(where))


# --------------------------------------------------------------------------- helpers


def _log_tail(text: str, lines: int = _LOG_TAIL_LINES, chars: int = _LOG_TAIL_CHARS) -> str:
    tail = "\n".join((text or "").rstrip().splitlines()[-lines:])
    return tail[-chars:]


def _check_engine_name(engine_name: str) -> None:
    if not _ENGINE_NAME_RE.match(engine_name or ""):
        raise EngineBuildError(f"invalid engine name {engine_name!r}.",
                               remedy="use letters, digits, '.', '_' or '-' (e.g. 'yolov8n_person_2025-06').")


def _check_build_inputs(onnx_path: Path, precision: str, int8_calib_cache: Path | None, engine_name: str) -> None:
    _check_engine_name(engine_name)
    if precision not in PRECISIONS:
        raise EngineBuildError(f"unknown precision {precision!r}.", remedy=f"use one of {', '.join(PRECISIONS)}.")
    if precision == "int8":
        if int8_calib_cache is None:
            raise EngineBuildError(
                "INT8 engine refused: no calibration cache given; an uncalibrated INT8 engine loses accuracy silently.",
                remedy="pass int8_calib_cache=<calibration cache built from representative frames>, or use precision='fp16'.")
        if not Path(int8_calib_cache).is_file():
            raise EngineBuildError(f"INT8 engine refused: calibration cache {int8_calib_cache} does not exist.",
                                   remedy="point int8_calib_cache at an existing calibration cache file.")
    if not Path(onnx_path).is_file():
        raise EngineBuildError(f"ONNX model {onnx_path} does not exist.", remedy="export the model to ONNX first.")


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _engine_sidecar(engine_path: Path) -> Path:
    return engine_path.with_name(engine_path.name + ".json")


def _sidecar_data(result: EngineBuildResult, *, engine_name: str, builder: str, workspace_mb: int,
                  extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    data = {
        "engine_name": engine_name,
        "engine_file": result.engine_path.name if result.engine_path else "",
        "engine_sha256": result.engine_sha256,
        "onnx_sha256": result.onnx_sha256,
        "precision": result.precision,
        "versions": dict(result.versions),
        "build_seconds": round(result.build_seconds, 3),
        "workspace_mb": workspace_mb,
        "builder": builder,
        "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    data.update(extra or {})
    return data


def _read_local(path: str) -> str:
    with contextlib.suppress(OSError):
        return Path(path).read_text(encoding="utf-8", errors="replace").replace("\x00", "").strip()
    return ""


def _local_platform_versions() -> dict[str, str]:
    """L4T / JetPack / device of *this* host (meaningful when it is itself a Jetson)."""
    l4t = parse_l4t_release(_read_local("/etc/nv_tegra_release"))
    jetpack = UNKNOWN
    if shutil.which("dpkg-query"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            proc = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"], capture_output=True,
                                  text=True, timeout=10)
            if proc.returncode == 0 and proc.stdout.strip():
                jetpack = parse_jetpack_version(proc.stdout)
    if jetpack == UNKNOWN:
        jetpack = parse_jetpack_version(_read_local("/etc/nv_jetpack_release"))
    return {"l4t": l4t, "jetpack": jetpack, "hostname": socket.gethostname(),
            "device": _read_local("/proc/device-tree/model") or UNKNOWN}


# --------------------------------------------------------------------------- interface


class EngineBuilder(dg.ConfigurableResource, abc.ABC):
    """Builds a TensorRT engine from an ONNX file."""

    @abc.abstractmethod
    def availability(self) -> tuple[bool, str]:
        """(True, what) when this builder can build now, else (False, why not and what to do)."""

    @abc.abstractmethod
    def build(self, onnx_path: Path, out_dir: Path, *, engine_name: str, precision: str = "fp16",
              int8_calib_cache: Path | None = None, workspace_mb: int = 2048) -> EngineBuildResult:
        """Build ``out_dir/<engine_name>.engine`` (+ ``.engine.json`` sidecar) from ``onnx_path``.

        Returns status 'built', or 'unavailable' for a builder that cannot build here; a build that was
        attempted and failed raises `EngineBuildError` (``.to_result()`` gives status 'failed').
        """

    def inference_support(self) -> tuple[bool, str]:
        """(True, how) when `run_engine` can run an engine this builder built, else (False, why not)."""
        return False, f"{type(self).__name__} cannot run engines"

    def run_engine(self, engine_path: Path, inputs: list[np.ndarray], *, input_name: str = "images",
                   output_name: str = "output0", iterations: int = 10) -> EngineRunResult:
        """Run the engine on each input tensor where it was built; raw outputs and latencies."""
        ok, why = self.inference_support()
        raise EngineBuildError(f"cannot run {Path(engine_path).name}: {why}.",
                               remedy="validate on the device the engine was built on (the Jetson over SSH).")


class UnavailableEngineBuilder(EngineBuilder):
    """Stands in where no engine can be built: never builds, always says why."""

    reason: str = DEFAULT_UNAVAILABLE_REASON

    def availability(self) -> tuple[bool, str]:
        return False, self.reason

    def build(self, onnx_path: Path, out_dir: Path, *, engine_name: str, precision: str = "fp16",
              int8_calib_cache: Path | None = None, workspace_mb: int = 2048) -> EngineBuildResult:
        onnx_sha = sha256_file(onnx_path) if Path(onnx_path).is_file() else ""
        return EngineBuildResult(status="unavailable", reason=self.reason, precision=precision, onnx_sha256=onnx_sha)


# --------------------------------------------------------------------------- local TensorRT


class LocalTensorRTEngineBuilder(EngineBuilder):
    """Builds on this host with the TensorRT Python API (default) or ``trtexec``; needs a CUDA GPU."""

    use_trtexec: bool = False
    trtexec_path: str = "trtexec"
    command_timeout_s: float = 3600

    def availability(self) -> tuple[bool, str]:
        try:
            import tensorrt as trt  # noqa: F401
        except Exception as exc:  # ImportError, or a broken install (missing libnvinfer)
            return False, (f"TensorRT Python package not importable here ({type(exc).__name__}: {exc}); "
                           "install it on a GPU host (pip install '.[tensorrt]') or build on the Jetson "
                           "(DAGSTER_DEPLOYMENT=prod with LBZF_JETSON_HOST ...)")
        gpu_ok, gpu_why = self._gpu_visible()
        if not gpu_ok:
            return False, f"tensorrt {getattr(trt, '__version__', '?')} is installed but {gpu_why}"
        if self.use_trtexec and not shutil.which(self.trtexec_path):
            return False, f"trtexec not found at {self.trtexec_path!r}; set trtexec_path or use_trtexec=False"
        return True, f"tensorrt {trt.__version__} on {self._gpu_name()}"

    @staticmethod
    def _gpu_visible() -> tuple[bool, str]:
        try:
            import torch

            if torch.cuda.is_available():
                return True, ""
            return False, "torch sees no CUDA GPU (torch.cuda.is_available() is False)"
        except ImportError:
            pass
        try:
            import tensorrt as trt

            builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
            if builder is None:
                return False, "TensorRT cannot create a builder (no CUDA GPU visible)"
            return True, ""
        except Exception as exc:
            return False, f"TensorRT cannot create a builder ({exc}); no CUDA GPU visible"

    @staticmethod
    def _gpu_name() -> str:
        with contextlib.suppress(Exception):
            import torch

            if torch.cuda.is_available():
                return torch.cuda.get_device_name(0)
        return UNKNOWN

    def _versions(self) -> dict[str, str]:
        versions = dict.fromkeys(VERSION_KEYS, UNKNOWN)
        with contextlib.suppress(Exception):
            import tensorrt as trt

            versions["tensorrt"] = str(trt.__version__)
        with contextlib.suppress(Exception):
            import torch

            versions["cuda"] = str(torch.version.cuda or UNKNOWN)
        versions.update({k: v for k, v in _local_platform_versions().items() if v and v != UNKNOWN})
        gpu = self._gpu_name()
        if gpu != UNKNOWN:
            versions["device"] = gpu
        return versions

    def build(self, onnx_path: Path, out_dir: Path, *, engine_name: str, precision: str = "fp16",
              int8_calib_cache: Path | None = None, workspace_mb: int = 2048) -> EngineBuildResult:
        onnx_path, out_dir = Path(onnx_path), Path(out_dir)
        _check_build_inputs(onnx_path, precision, int8_calib_cache, engine_name)
        ok, why = self.availability()
        if not ok:
            return EngineBuildResult(status="unavailable", reason=why, precision=precision,
                                     onnx_sha256=sha256_file(onnx_path))
        out_dir.mkdir(parents=True, exist_ok=True)
        engine_path = out_dir / f"{engine_name}.engine"
        onnx_sha = sha256_file(onnx_path)
        versions = self._versions()
        started = time.monotonic()
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{engine_name}.", suffix=".engine.part")
        os.close(fd)
        try:
            if self.use_trtexec:
                log, actual_precision = self._build_trtexec(onnx_path, Path(tmp), precision, int8_calib_cache,
                                                            workspace_mb)
                trt_seen = parse_trt_version(log)
                if trt_seen != UNKNOWN:
                    versions["tensorrt"] = trt_seen
            else:
                log, actual_precision = self._build_python(onnx_path, Path(tmp), precision, int8_calib_cache,
                                                           workspace_mb)
            os.replace(tmp, engine_path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        result = EngineBuildResult(status="built", engine_path=engine_path, engine_sha256=sha256_file(engine_path),
                                   onnx_sha256=onnx_sha, precision=actual_precision, versions=versions,
                                   build_seconds=time.monotonic() - started, log_tail=_log_tail(log))
        if actual_precision != precision:
            result.reason = f"requested {precision}, built {actual_precision} (platform has no fast {precision})"
        sidecar = _engine_sidecar(engine_path)
        _write_json_atomic(sidecar, _sidecar_data(result, engine_name=engine_name, workspace_mb=workspace_mb,
                                                  builder="local-trtexec" if self.use_trtexec else "local-tensorrt",
                                                  extra={"host": socket.gethostname()}))
        result.metadata_path = sidecar
        return result

    def _build_trtexec(self, onnx_path: Path, engine_tmp: Path, precision: str, calib: Path | None,
                       workspace_mb: int) -> tuple[str, str]:
        cmd = [self.trtexec_path, f"--onnx={onnx_path}", f"--saveEngine={engine_tmp}",
               f"--memPoolSize=workspace:{int(workspace_mb)}"]
        if precision == "fp16":
            cmd.append("--fp16")
        elif precision == "int8":
            cmd += ["--int8", "--fp16", f"--calib={calib}"]
        host = socket.gethostname()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=self.command_timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise EngineBuildError(f"trtexec on {host} did not finish within {self.command_timeout_s:.0f}s.",
                                   remedy="raise command_timeout_s or check the GPU is not busy.", host=host,
                                   log_tail=_log_tail(str(exc.stdout or ""))) from exc
        log = (proc.stdout or "") + (proc.stderr or "")
        if proc.returncode != 0 or not engine_tmp.is_file() or engine_tmp.stat().st_size == 0:
            raise EngineBuildError(f"trtexec on {host} failed (exit status {proc.returncode}) building from {onnx_path}.",
                                   remedy="read the log tail; check the ONNX opset/shapes are supported by this TensorRT.",
                                   host=host, log_tail=_log_tail(log))
        return log, precision

    def inference_support(self) -> tuple[bool, str]:
        if self.use_trtexec and shutil.which(self.trtexec_path):
            return True, f"trtexec --loadEngine on {socket.gethostname()}"
        return False, (f"validation runs `trtexec --loadEngine`; trtexec {self.trtexec_path!r} is "
                       + ("not on PATH" if self.use_trtexec else "not enabled (use_trtexec=False)")
                       + "; set use_trtexec=True with trtexec installed, or build on the Jetson")

    def run_engine(self, engine_path: Path, inputs: list[np.ndarray], *, input_name: str = "images",
                   output_name: str = "output0", iterations: int = 10) -> EngineRunResult:
        ok, why = self.inference_support()
        host = socket.gethostname()
        if not ok:
            raise EngineBuildError(f"cannot run {Path(engine_path).name} here: {why}.", host=host)
        if not inputs:
            raise EngineBuildError("no input tensors to run the engine on.", remedy="pass at least one frame.")
        outputs, latencies, log = [], [], ""
        with tempfile.TemporaryDirectory(prefix="lbzf-run-") as tdir:
            for i, tensor in enumerate(inputs):
                folder = Path(tdir)
                (folder / f"in_{i:05d}.bin").write_bytes(_input_bytes(tensor))
                args = trtexec_run_args(self.trtexec_path, str(engine_path), input_name,
                                        str(folder / f"in_{i:05d}.bin"), str(folder / f"out_{i:05d}.json"),
                                        str(folder / f"times_{i:05d}.json"), iterations)
                try:
                    proc = subprocess.run(args, capture_output=True, text=True, timeout=self.command_timeout_s)
                except subprocess.TimeoutExpired as exc:
                    raise EngineBuildError(f"trtexec on {host} did not finish running {Path(engine_path).name} within "
                                           f"{self.command_timeout_s:.0f}s.", host=host,
                                           remedy="raise command_timeout_s or check the GPU is not busy.") from exc
                log = (proc.stdout or "") + (proc.stderr or "")
                if proc.returncode != 0:
                    raise EngineBuildError(f"trtexec on {host} failed (exit status {proc.returncode}) running "
                                           f"{Path(engine_path).name}.", host=host, log_tail=_log_tail(log),
                                           remedy="read the log tail; the engine must come from this host's TensorRT.")
                outputs.append(parse_trtexec_output((folder / f"out_{i:05d}.json").read_text(), output_name))
                latencies.append(parse_trtexec_times((folder / f"times_{i:05d}.json").read_text()))
        return EngineRunResult(outputs=outputs, latency_ms=latencies, host=host, log_tail=_log_tail(log))

    def _build_python(self, onnx_path: Path, engine_tmp: Path, precision: str, calib: Path | None,
                      workspace_mb: int) -> tuple[str, str]:
        import tensorrt as trt

        lines: list[str] = []

        class _Logger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)

            def log(self, severity, msg):  # noqa: D401 - TensorRT callback
                if int(severity) <= int(trt.Logger.WARNING):
                    lines.append(f"[{severity}] {msg}")

        logger = _Logger()
        host = socket.gethostname()
        builder = trt.Builder(logger)
        major = int(str(trt.__version__).split(".")[0])
        flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise EngineBuildError(f"TensorRT {trt.__version__} on {host} could not parse {onnx_path}.",
                                   remedy="re-export the ONNX with an opset this TensorRT supports (e.g. opset 17).",
                                   host=host, log_tail=_log_tail("\n".join(errors + lines)))
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            if any(d < 0 for d in tensor.shape):
                raise EngineBuildError(
                    f"ONNX input {tensor.name!r} has dynamic shape {tuple(tensor.shape)}; this builder needs static shapes.",
                    remedy="export with dynamic=False (fixed imgsz, batch 1).", host=host)
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
        actual = precision
        if precision in ("fp16", "int8"):
            if builder.platform_has_fast_fp16:
                config.set_flag(trt.BuilderFlag.FP16)
            elif precision == "fp16":
                actual = "fp32"
        if precision == "int8":
            if not builder.platform_has_fast_int8:
                raise EngineBuildError(f"INT8 requested but the GPU of {host} has no fast INT8.",
                                       remedy="use precision='fp16'.", host=host)
            config.set_flag(trt.BuilderFlag.INT8)
            config.int8_calibrator = _cache_only_calibrator(trt, Path(calib))  # type: ignore[arg-type]
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise EngineBuildError(f"TensorRT {trt.__version__} on {host} failed to build an engine from {onnx_path}.",
                                   remedy="read the log tail (unsupported layer, workspace too small?).",
                                   host=host, log_tail=_log_tail("\n".join(lines)))
        with open(engine_tmp, "wb") as handle:
            handle.write(bytes(serialized))
            handle.flush()
            os.fsync(handle.fileno())
        return "\n".join(lines), actual


def _cache_only_calibrator(trt: Any, cache: Path) -> Any:
    """An INT8 calibrator that only replays an existing calibration cache (never calibrates)."""

    class _CacheCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names):  # no data: the cache must cover every tensor
            return None

        def read_calibration_cache(self):
            return cache.read_bytes()

        def write_calibration_cache(self, data) -> None:
            return None

    return _CacheCalibrator()


# --------------------------------------------------------------------------- Jetson over SSH


class _UnknownHostKey(Exception):
    def __init__(self, hostname: str, key: Any):
        self.hostname = hostname
        self.key = key
        super().__init__(hostname)


def _make_reject_policy():
    import paramiko

    class _RejectUnknown(paramiko.RejectPolicy):
        """paramiko's RejectPolicy, raising an error we can tell apart from transport failures."""

        def missing_host_key(self, client, hostname, key):
            raise _UnknownHostKey(hostname, key)

    return _RejectUnknown()


def _fingerprint(key: Any) -> str:
    with contextlib.suppress(Exception):
        return f"{key.get_name()} {key.fingerprint}"
    return UNKNOWN


class JetsonSSHEngineBuilder(EngineBuilder):
    """Builds with ``trtexec`` on a Jetson over SSH, and deploys engines to it.

    Host-key checking is always on (``known_hosts_path`` + a rejecting policy). Authentication uses
    ``key_path`` when set, otherwise the ssh-agent / default keys of the running user; there is no
    password field. ``probe_root`` prefixes the files read to probe versions (tests only).
    """

    host: str
    port: int = 22
    user: str
    key_path: str | None = None
    known_hosts_path: str
    remote_dir: str | None = Field(default=None, description="default /home/<user>/lbzf/engines")
    trtexec_path: str = "/usr/src/tensorrt/bin/trtexec"
    cuda_home: str = "/usr/local/cuda"
    connect_timeout_s: float = 15
    command_timeout_s: float = 1800
    retries: int = 3
    retry_backoff_s: float = 2.0
    probe_root: str = ""

    # ------------------------------------------------------------------ config helpers

    @property
    def effective_remote_dir(self) -> str:
        return self.remote_dir or f"/home/{self.user}/lbzf/engines"

    @property
    def _where(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    def _probe_path(self, path: str) -> str:
        return (self.probe_root.rstrip("/") + path) if self.probe_root else path

    def _config_problem(self) -> str | None:
        if not Path(self.known_hosts_path).expanduser().is_file():
            return (f"known_hosts file {self.known_hosts_path} does not exist; host-key checking cannot be done. "
                    f"Remedy: verify the Jetson's host key fingerprint out of band, then "
                    f"`ssh-keyscan -p {self.port} {self.host} >> {self.known_hosts_path}`.")
        if self.key_path and not Path(self.key_path).expanduser().is_file():
            return (f"SSH key {self.key_path} does not exist. Remedy: set key_path (LBZF_JETSON_KEY_PATH) to the "
                    "private key authorised on the Jetson, or unset it to use the ssh-agent.")
        return None

    # ------------------------------------------------------------------ connection

    def _connect_once(self):
        import paramiko

        client = paramiko.SSHClient()
        client.load_host_keys(str(Path(self.known_hosts_path).expanduser()))
        client.set_missing_host_key_policy(_make_reject_policy())
        kwargs: dict[str, Any] = dict(hostname=self.host, port=self.port, username=self.user,
                                      timeout=self.connect_timeout_s, banner_timeout=self.connect_timeout_s,
                                      auth_timeout=self.connect_timeout_s)
        if self.key_path:
            kwargs.update(key_filename=str(Path(self.key_path).expanduser()), allow_agent=False, look_for_keys=False)
        else:
            kwargs.update(allow_agent=True, look_for_keys=True)
        try:
            client.connect(**kwargs)
        except BaseException:
            client.close()
            raise
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(30)
        return client

    @contextlib.contextmanager
    def _session(self) -> Iterator[Any]:
        import paramiko

        problem = self._config_problem()
        if problem:
            raise EngineBuildError(problem, host=self.host)
        attempts = max(1, int(self.retries))
        last: BaseException | None = None
        client = None
        for attempt in range(1, attempts + 1):
            try:
                client = self._connect_once()
                break
            except paramiko.BadHostKeyException as exc:
                raise EngineBuildError(
                    f"host key of {self.host}:{self.port} does not match {self.known_hosts_path} "
                    f"(server offered {_fingerprint(exc.key)}, expected {_fingerprint(exc.expected_key)}); "
                    "connection refused, nothing was transferred.",
                    remedy=("if the Jetson was reflashed, verify its new fingerprint out of band (on the device: "
                            "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then replace the entry "
                            f"(ssh-keygen -R '[{self.host}]:{self.port}' -f {self.known_hosts_path}); otherwise "
                            "treat it as a possible man-in-the-middle."), host=self.host) from exc
            except _UnknownHostKey as exc:
                raise EngineBuildError(
                    f"host {self.host}:{self.port} is not in {self.known_hosts_path} (server offered "
                    f"{_fingerprint(exc.key)}); unknown hosts are refused, nothing was transferred.",
                    remedy=(f"verify the fingerprint on the device, then add it: ssh-keyscan -p {self.port} "
                            f"{self.host} >> {self.known_hosts_path}"), host=self.host) from exc
            except (paramiko.AuthenticationException, paramiko.PasswordRequiredException) as exc:
                raise self._auth_error(exc) from exc
            except paramiko.SSHException as exc:
                if "authentication" in str(exc).lower():  # e.g. "No authentication methods available"
                    raise self._auth_error(exc) from exc
                last = exc  # transport trouble (banner timeout, reset): retry
                if attempt < attempts:
                    time.sleep(self.retry_backoff_s * (2 ** (attempt - 1)))
            except (OSError, EOFError) as exc:  # refused, unreachable, timed out, DNS: retry
                last = exc
                if attempt < attempts:
                    time.sleep(self.retry_backoff_s * (2 ** (attempt - 1)))
        if client is None:
            raise EngineBuildError(
                f"cannot reach Jetson {self._where} after {attempts} attempt(s): {type(last).__name__}: {last}.",
                remedy=("check the Jetson is powered and on the network, that sshd runs on it, and that "
                        "LBZF_JETSON_HOST / port are right (try: ssh -p "
                        f"{self.port} {self.user}@{self.host} true)."), host=self.host)
        try:
            yield client
        finally:
            client.close()

    def _auth_error(self, exc: BaseException) -> EngineBuildError:
        return EngineBuildError(
            f"authentication as {self._where} failed ({type(exc).__name__}: {exc}).",
            remedy=(f"authorise the public key of {self.key_path or 'your ssh-agent / ~/.ssh keys'} in "
                    f"~{self.user}/.ssh/authorized_keys on the Jetson, or fix key_path (LBZF_JETSON_KEY_PATH); "
                    "passphrase-protected keys must be loaded into ssh-agent."),
            host=self.host)

    def _run(self, client: Any, command: str, timeout: float | None = None) -> tuple[int, str]:
        """Run ``command`` on the device; (exit status, stdout+stderr). Raises on a timeout."""
        timeout = self.command_timeout_s if timeout is None else timeout
        transport = client.get_transport()
        chan = transport.open_session(timeout=self.connect_timeout_s)
        try:
            chan.set_combine_stderr(True)
            chan.settimeout(1.0)
            chan.exec_command(command)
            deadline = time.monotonic() + timeout
            buf = bytearray()
            while True:
                try:
                    data = chan.recv(65536)
                except socket.timeout:
                    data = None
                if data:
                    buf += data
                    if len(buf) > _KEEP_OUTPUT_BYTES:
                        del buf[:-_KEEP_OUTPUT_BYTES]
                elif data == b"":
                    break
                if time.monotonic() > deadline:
                    raise EngineBuildError(
                        f"command on {self._where} did not finish within {timeout:.0f}s: {command[:200]}",
                        remedy="raise command_timeout_s, or check the device is not overloaded.", host=self.host,
                        log_tail=_log_tail(buf.decode("utf-8", "replace")))
            chan.settimeout(max(1.0, deadline - time.monotonic()))
            rc = chan.recv_exit_status()
            return rc, buf.decode("utf-8", "replace")
        finally:
            chan.close()

    def _run_ok(self, client: Any, command: str, what: str, timeout: float = 120) -> str:
        rc, out = self._run(client, command, timeout=min(timeout, self.command_timeout_s))
        if rc != 0:
            raise EngineBuildError(f"{what} failed on {self._where} (exit status {rc}).",
                                   remedy="read the log tail; check permissions and free disk space on the device.",
                                   host=self.host, log_tail=_log_tail(out))
        return out

    def _remote_sha256(self, client: Any, *paths: str, before: str = "", optional: tuple[str, ...] = (),
                       what: str = "") -> dict[str, str]:
        """sha256 of remote ``paths`` (and of ``optional`` ones that exist), after running ``before``."""
        q = shlex.quote
        command = (f"{before} && " if before else "") + "sha256sum -- " + " ".join(q(p) for p in paths)
        for extra in optional:
            command += f" && if [ -f {q(extra)} ]; then sha256sum -- {q(extra)}; fi"
        out = self._run_ok(client, command, what or f"sha256sum of {', '.join(paths)}", timeout=600)
        digests: dict[str, str] = {}
        for line in out.splitlines():
            m = re.match(r"^\\?([0-9a-fA-F]{64}) [ *](.+)$", line.strip())
            if m:
                digests[m.group(2)] = m.group(1).lower()
        if not all(p in digests for p in paths):
            raise EngineBuildError(f"unexpected sha256sum output on {self._where}.", host=self.host,
                                   remedy="check coreutils (sha256sum) on the device.", log_tail=_log_tail(out))
        return digests

    def _sftp_makedirs(self, sftp: Any, path: str) -> None:
        missing: list[str] = []
        current = path
        while current not in ("", "/"):
            try:
                sftp.stat(current)
                break
            except OSError:
                missing.append(current)
                current = posixpath.dirname(current)
        for directory in reversed(missing):
            try:
                sftp.mkdir(directory)
            except OSError as exc:
                try:
                    sftp.stat(directory)
                except OSError:
                    raise EngineBuildError(f"cannot create {directory} on {self._where} ({exc}).",
                                           remedy=f"check remote_dir and that {self.user} may write there.",
                                           host=self.host) from exc

    @staticmethod
    def _sftp_remove_quietly(sftp: Any, *paths: str) -> None:
        for path in paths:
            with contextlib.suppress(OSError):
                sftp.remove(path)

    def _put_file(self, sftp: Any, local: Path, remote: str) -> None:
        """Upload one file (a method of its own so tests can simulate a damaged transfer)."""
        sftp.put(str(local), remote, confirm=True)

    def _get_file(self, sftp: Any, remote: str, local: Path) -> None:
        sftp.get(remote, str(local))

    # ------------------------------------------------------------------ versions

    def probe_versions(self, client: Any | None = None) -> dict[str, str]:
        """TensorRT, CUDA, L4T, JetPack, device model and hostname of the Jetson; 'unknown' when missing.

        All probes run in one remote ``sh`` script (one round trip); each one's output and exit status
        are framed by marker lines, and a failing probe only leaves its value 'unknown'.
        """
        if client is None:
            with self._session() as session:
                return self.probe_versions(session)
        q = shlex.quote
        probes = {
            "l4t": f"cat {q(self._probe_path('/etc/nv_tegra_release'))}",
            "jetpack_dpkg": "dpkg-query -W -f='${Version}' nvidia-jetpack",
            "jetpack_file": f"cat {q(self._probe_path('/etc/nv_jetpack_release'))}",
            "trtexec": f"{q(self.trtexec_path)} --help",
            "nvcc": f"{q(self._probe_path(self.cuda_home + '/bin/nvcc'))} --version",
            "cuda_json": f"cat {q(self._probe_path(self.cuda_home + '/version.json'))}",
            "model": f"tr -d '\\000' < {q(self._probe_path('/proc/device-tree/model'))}",
            "hostname": "hostname",
        }
        marker = f"@@LBZF-PROBE-{uuid.uuid4().hex[:8]}"
        script = "".join(f"echo {marker} BEGIN {name}; ( {cmd} ) </dev/null 2>&1; rc=$?; echo; echo {marker} END {name} $rc; "
                         for name, cmd in probes.items())
        try:
            _, out = self._run(client, f"sh -c {q(script)}", timeout=min(120.0, self.command_timeout_s))
        except EngineBuildError:
            out = ""
        found: dict[str, tuple[int, str]] = {}
        pattern = re.compile(rf"^{re.escape(marker)} BEGIN (\w+)\n(.*?)\n{re.escape(marker)} END \1 (\d+)$",
                             re.S | re.M)
        for m in pattern.finditer(out):
            found[m.group(1)] = (int(m.group(3)), m.group(2).strip())

        def ok(name: str) -> str:
            rc, text = found.get(name, (1, ""))
            return text if rc == 0 else ""

        versions = dict.fromkeys(VERSION_KEYS, UNKNOWN)
        versions["l4t"] = parse_l4t_release(ok("l4t"))
        versions["jetpack"] = parse_jetpack_version(ok("jetpack_dpkg") or ok("jetpack_file"))
        versions["tensorrt"] = parse_trt_version(found.get("trtexec", (1, ""))[1])  # --help may exit non-zero
        cuda = parse_cuda_version(ok("nvcc"))
        versions["cuda"] = cuda if cuda != UNKNOWN else parse_cuda_version(ok("cuda_json"))
        versions["device"] = ok("model").replace("\x00", "") or UNKNOWN
        versions["hostname"] = ok("hostname") or UNKNOWN
        return versions

    # ------------------------------------------------------------------ interface

    def availability(self) -> tuple[bool, str]:
        problem = self._config_problem()
        if problem:
            return False, problem
        try:
            with self._session() as client:
                rc, _ = self._run(client, f"test -x {shlex.quote(self.trtexec_path)}", timeout=30)
        except EngineBuildError as exc:
            return False, str(exc)
        if rc != 0:
            return False, (f"trtexec not found/executable at {self.trtexec_path} on {self._where}; install "
                           "JetPack's TensorRT (nvidia-jetpack) or set trtexec_path")
        return True, f"Jetson {self._where} reachable, trtexec at {self.trtexec_path}"

    def build(self, onnx_path: Path, out_dir: Path, *, engine_name: str, precision: str = "fp16",
              int8_calib_cache: Path | None = None, workspace_mb: int = 2048) -> EngineBuildResult:
        onnx_path, out_dir = Path(onnx_path), Path(out_dir)
        _check_build_inputs(onnx_path, precision, int8_calib_cache, engine_name)
        onnx_sha = sha256_file(onnx_path)
        calib_sha = sha256_file(int8_calib_cache) if precision == "int8" and int8_calib_cache else ""
        out_dir.mkdir(parents=True, exist_ok=True)
        rdir = self.effective_remote_dir
        r_onnx = posixpath.join(rdir, f"{engine_name}.onnx")
        r_engine = posixpath.join(rdir, f"{engine_name}.engine")
        r_engine_tmp = r_engine + ".tmp"
        r_calib = posixpath.join(rdir, f"{engine_name}.calib.cache")
        q = shlex.quote
        started = time.monotonic()
        with self._session() as client:
            versions = self.probe_versions(client)
            sftp = client.open_sftp()
            try:
                self._sftp_makedirs(sftp, rdir)
                self._sftp_remove_quietly(sftp, r_engine_tmp, r_onnx + ".tmp", r_calib + ".tmp")
                # Upload under .tmp names, then rename into place and hash in one remote command.
                uploads = [(onnx_path, r_onnx, onnx_sha)]
                if precision == "int8":
                    assert int8_calib_cache is not None
                    uploads.append((Path(int8_calib_cache), r_calib, calib_sha))
                for local, remote, _ in uploads:
                    self._put_file(sftp, local, remote + ".tmp")
                moves = " && ".join(f"mv -f -- {q(remote + '.tmp')} {q(remote)}" for _, remote, _ in uploads)
                digests = self._remote_sha256(client, *(remote for _, remote, _ in uploads), before=moves,
                                              what="placing the uploaded ONNX")
                for local, remote, sha in uploads:
                    if digests[remote] != sha:
                        raise EngineBuildError(f"{local.name} uploaded to {self._where}:{remote} is damaged (sha256 "
                                               f"{digests[remote]} != local {sha}).",
                                               remedy="retry; check free disk space on the device.", host=self.host)

                args = [self.trtexec_path, f"--onnx={r_onnx}", f"--saveEngine={r_engine_tmp}",
                        f"--memPoolSize=workspace:{int(workspace_mb)}"]
                if precision == "fp16":
                    args.append("--fp16")
                elif precision == "int8":
                    args += ["--int8", "--fp16", f"--calib={r_calib}"]  # fp16 lets unquantisable layers fall back
                command = " ".join(q(a) for a in args)
                limit = max(1, int(self.command_timeout_s))
                # coreutils `timeout` ends trtexec on the device too when the build overruns.
                wrapped = (f"if command -v timeout >/dev/null 2>&1; then exec timeout -k 30 {limit} {command}; "
                           f"else exec {command}; fi")
                rc, log = self._run(client, wrapped, timeout=self.command_timeout_s + 60)
                if rc != 0:
                    self._sftp_remove_quietly(sftp, r_engine_tmp)
                    why = (f"timed out after {limit}s" if rc == 124 else f"failed (exit status {rc})")
                    raise EngineBuildError(
                        f"trtexec on {self._where} {why} building {engine_name} ({precision}) from {onnx_path.name}.",
                        remedy=("read the log tail; check the ONNX opset/shapes are supported by TensorRT "
                                f"{versions.get('tensorrt', UNKNOWN)} on the device, and free memory/disk there"
                                + (", or raise command_timeout_s." if rc == 124 else ".")),
                        host=self.host, log_tail=_log_tail(log))
                try:
                    size = sftp.stat(r_engine_tmp).st_size
                except OSError:
                    size = 0
                if not size:
                    raise EngineBuildError(f"trtexec on {self._where} exited 0 but wrote no engine at {r_engine_tmp}.",
                                           remedy="read the log tail; check free disk space on the device.",
                                           host=self.host, log_tail=_log_tail(log))
                remote_sha = self._remote_sha256(client, r_engine, before=f"mv -f -- {q(r_engine_tmp)} {q(r_engine)}",
                                                 what="placing the built engine")[r_engine]

                engine_path = out_dir / f"{engine_name}.engine"
                fd, local_tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{engine_name}.", suffix=".engine.part")
                os.close(fd)
                try:
                    self._get_file(sftp, r_engine, Path(local_tmp))
                    local_sha = sha256_file(local_tmp)
                    if local_sha != remote_sha:
                        raise EngineBuildError(
                            f"engine fetched from {self._where}:{r_engine} is damaged (local sha256 {local_sha} != "
                            f"remote {remote_sha}); nothing was written to {out_dir}.",
                            remedy="retry the build; check the network and local disk.", host=self.host)
                    os.replace(local_tmp, engine_path)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(local_tmp)
                    raise
            finally:
                sftp.close()
        trt_seen = parse_trt_version(log)
        if trt_seen != UNKNOWN:
            versions["tensorrt"] = trt_seen
        result = EngineBuildResult(status="built", engine_path=engine_path, engine_sha256=local_sha,
                                   onnx_sha256=onnx_sha, precision=precision, versions=versions,
                                   build_seconds=time.monotonic() - started, log_tail=_log_tail(log))
        sidecar = _engine_sidecar(engine_path)
        extra = {"host": self.host, "remote_engine_path": r_engine, "trtexec_command": command}
        if calib_sha:
            extra["int8_calib_cache_sha256"] = calib_sha
        _write_json_atomic(sidecar, _sidecar_data(result, engine_name=engine_name, workspace_mb=workspace_mb,
                                                  builder="jetson-ssh", extra=extra))
        result.metadata_path = sidecar
        return result

    # ------------------------------------------------------------------ run (validation)

    def inference_support(self) -> tuple[bool, str]:
        problem = self._config_problem()
        if problem:
            return False, problem
        return True, f"trtexec --loadEngine on {self._where}"

    def run_engine(self, engine_path: Path, inputs: list[np.ndarray], *, input_name: str = "images",
                   output_name: str = "output0", iterations: int = 10) -> EngineRunResult:
        """Run ``engine_path`` on the Jetson once per input tensor with ``trtexec --loadEngine``.

        The engine (sha256 checked on the device) and the raw float32 inputs go to a private folder
        under ``remote_dir/validation/``, one remote shell command runs trtexec per input (exporting
        the output tensors and timings as JSON), the JSON comes back, and the folder is removed.
        """
        engine_path = Path(engine_path)
        if not engine_path.is_file():
            raise EngineBuildError(f"engine {engine_path} does not exist.", remedy="build the engine first.")
        if not inputs:
            raise EngineBuildError("no input tensors to run the engine on.", remedy="pass at least one frame.")
        q = shlex.quote
        vdir = posixpath.join(self.effective_remote_dir, "validation", uuid.uuid4().hex[:12])
        r_engine = posixpath.join(vdir, engine_path.name)
        local_sha = sha256_file(engine_path)
        marker = f"@@LBZF-RUN-{uuid.uuid4().hex[:8]}"
        with self._session() as client:
            sftp = client.open_sftp()
            try:
                self._sftp_makedirs(sftp, vdir)
                self._put_file(sftp, engine_path, r_engine)
                remote_sha = self._remote_sha256(client, r_engine, what="placing the engine to validate")[r_engine]
                if remote_sha != local_sha:
                    raise EngineBuildError(f"engine uploaded to {self._where}:{r_engine} is damaged (sha256 "
                                           f"{remote_sha} != local {local_sha}).",
                                           remedy="retry; check free disk space on the device.", host=self.host)
                steps = []
                with tempfile.TemporaryDirectory(prefix="lbzf-run-") as tdir:
                    for i, tensor in enumerate(inputs):
                        local_in = Path(tdir) / f"in_{i:05d}.bin"
                        local_in.write_bytes(_input_bytes(tensor))
                        self._put_file(sftp, local_in, posixpath.join(vdir, local_in.name))
                        args = trtexec_run_args(self.trtexec_path, r_engine, input_name,
                                                posixpath.join(vdir, local_in.name),
                                                posixpath.join(vdir, f"out_{i:05d}.json"),
                                                posixpath.join(vdir, f"times_{i:05d}.json"), iterations)
                        log = posixpath.join(vdir, f"log_{i:05d}.txt")
                        steps.append(f"{' '.join(q(a) for a in args)} > {q(log)} 2>&1 || "
                                     f"{{ rc=$?; echo {marker} FAILED {i} $rc; tail -n 40 {q(log)}; exit $rc; }}")
                script = "; ".join(steps) + f"; echo {marker} DONE"
                limit = max(1, int(self.command_timeout_s))
                wrapped = (f"if command -v timeout >/dev/null 2>&1; then exec timeout -k 30 {limit} sh -c {q(script)}; "
                           f"else exec sh -c {q(script)}; fi")
                rc, out = self._run(client, wrapped, timeout=self.command_timeout_s + 60)
                if rc != 0 or f"{marker} DONE" not in out:
                    why = f"timed out after {limit}s" if rc == 124 else f"failed (exit status {rc})"
                    raise EngineBuildError(f"running {engine_path.name} with trtexec on {self._where} {why}.",
                                           remedy="read the log tail; the engine must come from this device's TensorRT "
                                                  "and its input must be float32 [1, 3, imgsz, imgsz].",
                                           host=self.host, log_tail=_log_tail(out))
                outputs, latencies = [], []
                for i in range(len(inputs)):
                    with sftp.open(posixpath.join(vdir, f"out_{i:05d}.json"), "r") as handle:
                        outputs.append(parse_trtexec_output(handle.read().decode("utf-8", "replace"), output_name))
                    with sftp.open(posixpath.join(vdir, f"times_{i:05d}.json"), "r") as handle:
                        latencies.append(parse_trtexec_times(handle.read().decode("utf-8", "replace")))
            finally:
                with contextlib.suppress(Exception):
                    self._run(client, f"rm -rf -- {q(vdir)}", timeout=60)
                sftp.close()
        return EngineRunResult(outputs=outputs, latency_ms=latencies, host=self.host, log_tail=_log_tail(out))

    # ------------------------------------------------------------------ deploy

    def deploy_engine(self, engine_path: Path, *, mode: str = "shadow", metadata_path: Path | None = None,
                      check_compat: bool = True) -> EngineDeployResult:
        """Push an engine and its sidecar to ``remote_dir/<mode>/`` on the Jetson, atomically.

        Refuses engines whose sidecar versions do not match the device (`check_engine_compatible`).
        Uploads under temporary names, verifies the remote sha256, keeps the current engine as
        ``<name>.previous`` (sidecar as ``<name>.json.previous``), then ``mv``s into place (rename(2):
        readers see the old or the new engine, never a partial one). On any failure before the ``mv``
        the deployed engine is untouched and the temporaries are removed. Deploying the engine that is
        already there changes nothing (``changed=False``).
        """
        engine_path = Path(engine_path)
        if mode not in DEPLOY_MODES:
            raise EngineBuildError(f"unknown deploy mode {mode!r}.", remedy=f"use one of {', '.join(DEPLOY_MODES)}.")
        if not engine_path.is_file():
            raise EngineBuildError(f"engine {engine_path} does not exist.", remedy="build the engine first.")
        metadata_path = Path(metadata_path) if metadata_path else _engine_sidecar(engine_path)
        if not metadata_path.is_file():
            raise EngineBuildError(f"engine metadata {metadata_path} does not exist; cannot tell which TensorRT "
                                   "built the engine.", remedy="deploy engines made by an EngineBuilder (they write "
                                   "the <engine>.json sidecar), or pass metadata_path.")
        meta = json.loads(metadata_path.read_text(encoding="utf-8"))
        local_sha = sha256_file(engine_path)
        if meta.get("engine_sha256") and meta["engine_sha256"] != local_sha:
            raise EngineBuildError(f"{engine_path} (sha256 {local_sha}) is not the engine described by {metadata_path} "
                                   f"(sha256 {meta['engine_sha256']}); refusing to deploy.",
                                   remedy="rebuild the engine, or restore the matching file.", host=self.host)
        name = engine_path.name
        q = shlex.quote
        dest_dir = posixpath.join(self.effective_remote_dir, mode)
        dest = posixpath.join(dest_dir, name)
        dest_meta = dest + ".json"
        token = uuid.uuid4().hex[:12]
        tmp_engine = posixpath.join(dest_dir, f".{name}.{token}.tmp")
        tmp_meta = posixpath.join(dest_dir, f".{name}.json.{token}.tmp")
        with self._session() as client:
            device_versions = self.probe_versions(client)
            if check_compat:
                check_engine_compatible(meta, device_versions)
            deployed_meta = dict(meta, deployed_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                                 deploy_mode=mode, deployed_to=self.host, device_versions=device_versions)
            sftp = client.open_sftp()
            try:
                self._sftp_makedirs(sftp, dest_dir)
                with tempfile.TemporaryDirectory(prefix="lbzf-deploy-") as tdir:
                    local_meta = Path(tdir) / "meta.json"
                    local_meta.write_text(json.dumps(deployed_meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
                    meta_sha = sha256_file(local_meta)
                    try:
                        self._put_file(sftp, engine_path, tmp_engine)
                        self._put_file(sftp, local_meta, tmp_meta)
                        digests = self._remote_sha256(client, tmp_engine, tmp_meta, optional=(dest,),
                                                      what=f"verifying the upload of {name}")
                        if digests[tmp_engine] != local_sha or digests[tmp_meta] != meta_sha:
                            raise EngineBuildError(
                                f"upload of {name} to {self._where}:{dest_dir} is damaged (remote sha256 "
                                f"{digests[tmp_engine]}, local {local_sha}); the deployed {mode} engine was left "
                                "unchanged.", remedy="retry the deploy; check free disk space on the device and "
                                "the network.", host=self.host)
                    except BaseException:
                        self._sftp_remove_quietly(sftp, tmp_engine, tmp_meta)
                        raise
                current_sha = digests.get(dest)
                if current_sha == local_sha:
                    self._sftp_remove_quietly(sftp, tmp_engine, tmp_meta)
                    return EngineDeployResult(mode=mode, host=self.host, remote_path=dest, engine_sha256=local_sha,
                                              changed=False, device_versions=device_versions)
                swap = (
                    "set -e; "
                    # keep the current engine (hard link: no copy, no window) and sidecar as .previous
                    f"if [ -f {q(dest)} ]; then ln -f -- {q(dest)} {q(dest + '.previous')} 2>/dev/null "
                    f"|| {{ cp -p -- {q(dest)} {q(dest + '.previous.tmp')} && "
                    f"mv -f -- {q(dest + '.previous.tmp')} {q(dest + '.previous')}; }}; fi; "
                    f"if [ -f {q(dest_meta)} ]; then cp -p -- {q(dest_meta)} {q(dest_meta + '.previous.tmp')} && "
                    f"mv -f -- {q(dest_meta + '.previous.tmp')} {q(dest_meta + '.previous')}; fi; "
                    f"mv -f -- {q(tmp_engine)} {q(dest)}; mv -f -- {q(tmp_meta)} {q(dest_meta)}"
                )
                try:
                    final_sha = self._remote_sha256(client, dest, before=f"sh -c {q(swap)}",
                                                    what=f"swapping in {name} ({mode})")[dest]
                except BaseException:
                    self._sftp_remove_quietly(sftp, tmp_engine, tmp_meta)
                    raise
            finally:
                sftp.close()
            if final_sha != local_sha:
                raise EngineBuildError(f"after the swap, {self._where}:{dest} has sha256 {final_sha}, expected "
                                       f"{local_sha}.", remedy=f"roll back on the device: mv {dest}.previous {dest}",
                                       host=self.host)
        return EngineDeployResult(mode=mode, host=self.host, remote_path=dest, engine_sha256=local_sha, changed=True,
                                  previous_path=(dest + ".previous") if current_sha else None,
                                  previous_sha256=current_sha, device_versions=device_versions)


# --------------------------------------------------------------------------- selection


def select_engine_builder(environ: Mapping[str, str] | None = None) -> EngineBuilder:
    """The builder this environment can use.

    ``DAGSTER_DEPLOYMENT=prod`` with ``LBZF_JETSON_HOST``: the Jetson (``LBZF_JETSON_USER``,
    ``LBZF_JETSON_KNOWN_HOSTS`` required; ``LBZF_JETSON_PORT``, ``LBZF_JETSON_KEY_PATH``,
    ``LBZF_JETSON_REMOTE_DIR``, ``LBZF_JETSON_TRTEXEC`` optional). Otherwise local TensorRT when it is
    usable, else `UnavailableEngineBuilder` with the reason.
    """
    env = os.environ if environ is None else environ
    if env.get("DAGSTER_DEPLOYMENT") == "prod" and env.get("LBZF_JETSON_HOST"):
        missing = [k for k in ("LBZF_JETSON_USER", "LBZF_JETSON_KNOWN_HOSTS") if not env.get(k)]
        if missing:
            return UnavailableEngineBuilder(reason=f"LBZF_JETSON_HOST is set but {', '.join(missing)} is not; "
                                                   "set them to build on the Jetson")
        kwargs: dict[str, Any] = dict(host=env["LBZF_JETSON_HOST"], user=env["LBZF_JETSON_USER"],
                                      known_hosts_path=env["LBZF_JETSON_KNOWN_HOSTS"],
                                      port=int(env.get("LBZF_JETSON_PORT") or 22),
                                      key_path=env.get("LBZF_JETSON_KEY_PATH") or None,
                                      remote_dir=env.get("LBZF_JETSON_REMOTE_DIR") or None)
        if env.get("LBZF_JETSON_TRTEXEC"):
            kwargs["trtexec_path"] = env["LBZF_JETSON_TRTEXEC"]
        return JetsonSSHEngineBuilder(**kwargs)
    local = LocalTensorRTEngineBuilder()
    ok, why = local.availability()
    if ok:
        return local
    return UnavailableEngineBuilder(reason=f"{DEFAULT_UNAVAILABLE_REASON} (local: {why})")
