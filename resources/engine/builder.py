"""The `EngineBuilder` interface, the builder that never builds, and what every builder shares:
input checks, log tails and the ``<engine>.engine.json`` sidecar."""
from __future__ import annotations

import abc
import contextlib
import datetime as _dt
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Mapping

import dagster as dg
import numpy as np

from pipeline.hashing import sha256_file
from resources.engine.results import (DEFAULT_UNAVAILABLE_REASON, PRECISIONS, EngineBuildError, EngineBuildResult,
                                      EngineDeployResult, EngineRunResult)

_ENGINE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_LOG_TAIL_LINES = 40
_LOG_TAIL_CHARS = 6000


def _log_tail(text: str, lines: int = _LOG_TAIL_LINES, chars: int = _LOG_TAIL_CHARS) -> str:
    tail = "\n".join((text or "").rstrip().splitlines()[-lines:])
    return tail[-chars:]


def _check_engine_name(engine_name: str, out_dir: Path | None = None) -> None:
    if not _ENGINE_NAME_RE.match(engine_name or ""):
        target = f"{engine_name}.engine" if out_dir is None else str(Path(out_dir) / f"{engine_name}.engine")
        raise EngineBuildError(f"invalid engine name {engine_name!r}.",
                               remedy="use letters, digits, '.', '_' or '-' (e.g. 'yolov8n_person_2025-06').",
                               file=target, field="engine_name", value=engine_name)


def _check_build_inputs(onnx_path: Path, precision: str, int8_calib_cache: Path | None, engine_name: str,
                        out_dir: Path | None = None) -> None:
    """Refuse a build request before anything runs; the errors name the ONNX (or the calibration cache)."""
    _check_engine_name(engine_name, out_dir)
    if precision not in PRECISIONS:
        raise EngineBuildError(f"unknown precision {precision!r}.", remedy=f"use one of {', '.join(PRECISIONS)}.",
                               file=onnx_path, field="precision", value=precision)
    if precision == "int8":
        if int8_calib_cache is None:
            raise EngineBuildError(
                "INT8 engine refused: no calibration cache given; an uncalibrated INT8 engine loses accuracy silently.",
                remedy="pass int8_calib_cache=<calibration cache built from representative frames>, or use precision='fp16'.",
                file=onnx_path, field="int8_calib_cache", value=None)
        if not Path(int8_calib_cache).is_file():
            raise EngineBuildError(f"INT8 engine refused: calibration cache {int8_calib_cache} does not exist.",
                                   remedy="point int8_calib_cache at an existing calibration cache file.",
                                   file=int8_calib_cache, field="int8_calib_cache", value=str(int8_calib_cache))
    if not Path(onnx_path).is_file():
        raise EngineBuildError(f"ONNX model {onnx_path} does not exist.", remedy="export the model to ONNX first.",
                               file=onnx_path, field="onnx_path", value=str(onnx_path))


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
                               remedy="validate on the device the engine was built on (the Jetson over SSH).",
                               file=engine_path, field="engine_builder", value=type(self).__name__)

    def deploy_support(self) -> tuple[bool, str]:
        """(True, where) when `deploy_engine` can push an engine to a device, else (False, why not)."""
        return False, (f"{type(self).__name__} cannot deploy engines; deploying needs the Jetson over SSH "
                       "(DAGSTER_DEPLOYMENT=prod with LBZF_JETSON_HOST, LBZF_JETSON_USER, LBZF_JETSON_KNOWN_HOSTS)")

    def deploy_engine(self, engine_path: Path, *, mode: str = "shadow", metadata_path: Path | None = None,
                      check_compat: bool = True) -> EngineDeployResult:
        """Put the engine (and its sidecar) in the device's ``mode`` slot (`DEPLOY_MODES`), atomically;
        refuses an engine whose versions do not match the device's unless ``check_compat`` is False."""
        ok, why = self.deploy_support()
        raise EngineBuildError(f"cannot deploy {Path(engine_path).name} ({mode}): {why}.",
                               remedy="deploy from a deployment with a device (DAGSTER_DEPLOYMENT=prod).",
                               file=engine_path, field="engine_builder", value=type(self).__name__)


class UnavailableEngineBuilder(EngineBuilder):
    """Stands in where no engine can be built: never builds, always says why."""

    reason: str = DEFAULT_UNAVAILABLE_REASON

    def availability(self) -> tuple[bool, str]:
        return False, self.reason

    def build(self, onnx_path: Path, out_dir: Path, *, engine_name: str, precision: str = "fp16",
              int8_calib_cache: Path | None = None, workspace_mb: int = 2048) -> EngineBuildResult:
        onnx_sha = sha256_file(onnx_path) if Path(onnx_path).is_file() else ""
        return EngineBuildResult(status="unavailable", reason=self.reason, precision=precision, onnx_sha256=onnx_sha)

