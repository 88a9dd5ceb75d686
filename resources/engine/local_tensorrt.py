"""Building (and running) engines on this host: the TensorRT Python API or ``trtexec``; needs a CUDA GPU."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.hashing import sha256_file
from resources.engine.builder import EngineBuilder, _check_build_inputs, _engine_sidecar, _log_tail, _sidecar_data, \
    _write_json_atomic
from resources.engine.results import UNKNOWN, VERSION_KEYS, EngineBuildError, EngineBuildResult, EngineRunResult
from resources.engine.trtexec import _input_bytes, parse_trtexec_output, parse_trtexec_times, trtexec_run_args
from resources.engine.versions import _local_platform_versions, parse_trt_version

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
        _check_build_inputs(onnx_path, precision, int8_calib_cache, engine_name, out_dir)
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
                                   log_tail=_log_tail(str(exc.stdout or "")), file=onnx_path,
                                   field="command_timeout_s", value=self.command_timeout_s) from exc
        log = (proc.stdout or "") + (proc.stderr or "")
        if proc.returncode != 0 or not engine_tmp.is_file() or engine_tmp.stat().st_size == 0:
            raise EngineBuildError(f"trtexec on {host} failed (exit status {proc.returncode}) building from {onnx_path}.",
                                   remedy="read the log tail; check the ONNX opset/shapes are supported by this TensorRT.",
                                   host=host, log_tail=_log_tail(log), file=onnx_path,
                                   **({"field": "trtexec exit status", "value": proc.returncode} if proc.returncode
                                      else {"field": "engine size", "value": 0}))
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
            raise EngineBuildError(f"cannot run {Path(engine_path).name} here: {why}.", host=host,
                                   remedy="set use_trtexec=True with trtexec installed (trtexec_path), or validate "
                                          "on the Jetson the engine was built on.",
                                   file=engine_path, **({"field": "trtexec_path", "value": self.trtexec_path}
                                                        if self.use_trtexec else
                                                        {"field": "use_trtexec", "value": False}))
        if not inputs:
            raise EngineBuildError("no input tensors to run the engine on.", remedy="pass at least one frame.",
                                   file=engine_path, field="inputs", value=len(inputs))
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
                                           remedy="raise command_timeout_s or check the GPU is not busy.",
                                           file=engine_path, field="command_timeout_s",
                                           value=self.command_timeout_s) from exc
                log = (proc.stdout or "") + (proc.stderr or "")
                if proc.returncode != 0:
                    raise EngineBuildError(f"trtexec on {host} failed (exit status {proc.returncode}) running "
                                           f"{Path(engine_path).name}.", host=host, log_tail=_log_tail(log),
                                           remedy="read the log tail; the engine must come from this host's TensorRT.",
                                           file=engine_path, field="trtexec exit status", value=proc.returncode)
                out_json = folder / f"out_{i:05d}.json"
                outputs.append(parse_trtexec_output(out_json.read_text(), output_name, source=str(out_json)))
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
                                   host=host, log_tail=_log_tail("\n".join(errors + lines)), file=onnx_path,
                                   field="ONNX graph", value=errors[0] if errors else None)
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            if any(d < 0 for d in tensor.shape):
                raise EngineBuildError(
                    f"ONNX input {tensor.name!r} has dynamic shape {tuple(tensor.shape)}; this builder needs static shapes.",
                    remedy="export with dynamic=False (fixed imgsz, batch 1).", host=host, file=onnx_path,
                    field=f"graph.input[{tensor.name}].shape", value=tuple(tensor.shape))
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
                                       remedy="use precision='fp16'.", host=host, file=onnx_path, field="precision",
                                       value=precision)
            config.set_flag(trt.BuilderFlag.INT8)
            config.int8_calibrator = _cache_only_calibrator(trt, Path(calib))  # type: ignore[arg-type]
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise EngineBuildError(f"TensorRT {trt.__version__} on {host} failed to build an engine from {onnx_path}.",
                                   remedy="read the log tail (unsupported layer, workspace too small?).",
                                   host=host, log_tail=_log_tail("\n".join(lines)), file=onnx_path,
                                   field="serialized engine", value=None)
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

