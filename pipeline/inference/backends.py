"""The network behind one interface: `run(batch) -> raw output0`, for PyTorch, ONNX Runtime and TensorRT.

Every backend takes the same letterboxed (N, 3, H, W) float32 RGB batch and returns the raw
(N, 4 + classes, anchors) output; letterboxing and NMS live elsewhere (one home for each), so the
backends can only differ in the arithmetic of the network itself. `fixed_shape` is the (H, W) a
backend needs (a static ONNX, an engine) or None when it takes any multiple of the stride.

A backend that cannot start raises `BackendUnavailable` with the reason (missing package, provider,
file, wrong engine version); the selection records it and falls back.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TORCH, ONNXRUNTIME, TENSORRT = "torch", "onnxruntime", "tensorrt"


class BackendUnavailable(RuntimeError):
    """A backend that cannot run here; `reason` says why and what would make it work."""

    def __init__(self, backend: str, reason: str):
        self.backend = backend
        self.reason = reason
        super().__init__(f"{backend} backend unavailable: {reason}")


def cuda_index(device: str | int | None) -> int | None:
    """'cpu' / '' / None -> None; '0', 0, 'cuda', 'cuda:1' -> the GPU index."""
    text = "" if device is None else str(device).strip().lower()
    if text in ("", "cpu"):
        return None
    if text == "cuda":
        return 0
    text = text.removeprefix("cuda:")
    if not text.split(",")[0].isdigit():
        raise ValueError(f"unknown inference device {device!r}: use 'cpu', a GPU index such as '0', or 'cuda:0'")
    return int(text.split(",")[0])


@dataclass
class Backend:
    name: str
    provider: str
    fixed_shape: tuple[int, int] | None
    stride: int = 32
    details: dict = field(default_factory=dict)

    def run(self, batch: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> dict:
        return {"backend": self.name, "provider": self.provider,
                "input": "rect (any multiple of the stride)" if self.fixed_shape is None else list(self.fixed_shape),
                **self.details}


class TorchBackend(Backend):
    """The Ultralytics model's network in PyTorch (fused, float32, eval): the reference."""

    def __init__(self, weights: str | Path, device: str = "cpu"):
        try:
            import torch

            from pipeline.offline import ultralytics_yolo
            yolo = ultralytics_yolo()(str(weights))
            self.yolo = yolo
            index = cuda_index(device)
            if index is not None and not torch.cuda.is_available():
                raise BackendUnavailable(TORCH, f"device {device!r} asked for but torch {torch.__version__} sees no "
                                                "CUDA GPU; set LBZF_INFER_DEVICE=cpu or run on the GPU host")
            self._device = torch.device("cpu" if index is None else f"cuda:{index}")
            net = yolo.model.float().eval()
            self.net = net.fuse() if hasattr(net, "fuse") else net
            self.net.to(self._device)
        except BackendUnavailable:
            raise
        except Exception as exc:  # a broken or foreign weights file
            raise BackendUnavailable(TORCH, f"cannot load {weights}: {type(exc).__name__}: {exc}") from exc
        self._torch = torch
        stride = int(max(getattr(self.net, "stride", torch.tensor([32])).max(), 32))
        super().__init__(TORCH, str(self._device), None, stride,
                         {"torch": torch.__version__, "threads": torch.get_num_threads()})

    def run(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            out = self.net(torch.from_numpy(batch).to(self._device))
        out = out[0] if isinstance(out, (list, tuple)) else out
        return out.float().cpu().numpy()


def ort_providers(device: str | int | None, available: list[str]) -> list[str]:
    """Providers to ask ONNX Runtime for, fastest first: TensorRT and CUDA on a GPU device when present."""
    wanted = ["TensorrtExecutionProvider", "CUDAExecutionProvider"] if cuda_index(device) is not None else []
    return [p for p in wanted if p in available] + ["CPUExecutionProvider"]


class OnnxRuntimeBackend(Backend):
    """An ONNX model in ONNX Runtime; CPU provider, plus CUDA/TensorRT providers on a GPU device."""

    def __init__(self, onnx_path: str | Path, device: str = "cpu", threads: int | None = None):
        try:
            import onnxruntime as ort
        except Exception as exc:
            raise BackendUnavailable(ONNXRUNTIME, f"onnxruntime not importable ({type(exc).__name__}: {exc}); "
                                                  "pip install onnxruntime (or onnxruntime-gpu)") from exc
        if not Path(onnx_path).is_file():
            raise BackendUnavailable(ONNXRUNTIME, f"no ONNX model at {onnx_path}")
        providers = ort_providers(device, ort.get_available_providers())
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or (os.cpu_count() or 1)
        # no busy-waiting between runs: the frame prefetch thread needs those cycles on a small CPU
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=providers)
        except Exception as exc:
            raise BackendUnavailable(ONNXRUNTIME, f"cannot load {onnx_path} with {providers}: "
                                                  f"{type(exc).__name__}: {str(exc)[:300]}") from exc
        used = self.session.get_providers()
        inp = self.session.get_inputs()[0]
        self._input = inp.name
        h, w = inp.shape[2], inp.shape[3]
        fixed = (int(h), int(w)) if isinstance(h, int) and isinstance(w, int) else None
        self._batch1 = isinstance(inp.shape[0], int) and inp.shape[0] == 1
        details = {"onnxruntime": ort.__version__, "providers": used, "threads": options.intra_op_num_threads,
                   "onnx": str(onnx_path)}
        if cuda_index(device) is not None and used == ["CPUExecutionProvider"]:
            details["note"] = (f"device {device!r} asked for but ONNX Runtime offers only "
                               f"{ort.get_available_providers()}: running on the CPU (install onnxruntime-gpu)")
        super().__init__(ONNXRUNTIME, used[0], fixed, 32, details)

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self._batch1 and len(batch) > 1:
            return np.concatenate([self.session.run(None, {self._input: batch[i:i + 1]})[0]
                                   for i in range(len(batch))])
        return self.session.run(None, {self._input: batch})[0]


class TensorRTBackend(Backend):
    """A serialized TensorRT engine (built for this GPU and TensorRT version), via the TensorRT Python
    API with torch CUDA buffers. Batch-1 static engines run frame by frame."""

    def __init__(self, engine_path: str | Path, device: str = "cuda:0"):
        try:
            import tensorrt as trt
        except Exception as exc:
            raise BackendUnavailable(TENSORRT, f"TensorRT Python package not importable ({type(exc).__name__}: "
                                               f"{exc}); install tensorrt on the GPU host") from exc
        try:
            import torch
        except Exception as exc:
            raise BackendUnavailable(TENSORRT, f"torch (used for the CUDA buffers) not importable: {exc}") from exc
        index = cuda_index(device)
        if index is None:
            raise BackendUnavailable(TENSORRT, f"inference device is {device!r}: a TensorRT engine needs a CUDA GPU "
                                               "(set LBZF_INFER_DEVICE=0)")
        if not torch.cuda.is_available():
            raise BackendUnavailable(TENSORRT, "no CUDA GPU visible to torch")
        if not Path(engine_path).is_file():
            raise BackendUnavailable(TENSORRT, f"no engine at {engine_path}")
        self._torch, self._trt = torch, trt
        self._device = torch.device(f"cuda:{index}")
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        with torch.cuda.device(self._device):
            self.engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise BackendUnavailable(TENSORRT, f"TensorRT {trt.__version__} cannot deserialize {engine_path}: it was "
                                               "built with another TensorRT version or for another GPU; rebuild it "
                                               "on this host")
        self.context = self.engine.create_execution_context()
        self._v10 = hasattr(self.engine, "num_io_tensors")
        if self._v10:
            names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
            inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            outputs = [n for n in names if n not in inputs]
            self._in, self._out = inputs[0], outputs[0]
            in_shape = tuple(self.engine.get_tensor_shape(self._in))
        else:
            self._in_i = next(i for i in range(self.engine.num_bindings) if self.engine.binding_is_input(i))
            self._out_i = next(i for i in range(self.engine.num_bindings) if not self.engine.binding_is_input(i))
            in_shape = tuple(self.engine.get_binding_shape(self._in_i))
        if len(in_shape) != 4 or any(d < 0 for d in in_shape):
            raise BackendUnavailable(TENSORRT, f"engine input shape {in_shape} is not static (N, 3, H, W)")
        self._in_shape = in_shape
        super().__init__(TENSORRT, f"cuda:{index}", (int(in_shape[2]), int(in_shape[3])), 32,
                         {"tensorrt": trt.__version__, "engine": str(engine_path)})

    def _run_one(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        inp = torch.from_numpy(np.ascontiguousarray(x)).to(self._device)
        if self._v10:
            out_shape = tuple(self.context.get_tensor_shape(self._out))
            out = torch.empty(out_shape, dtype=torch.float32, device=self._device)
            self.context.set_tensor_address(self._in, inp.data_ptr())
            self.context.set_tensor_address(self._out, out.data_ptr())
            stream = torch.cuda.current_stream(self._device)
            self.context.execute_async_v3(stream.cuda_stream)
            stream.synchronize()
        else:
            out_shape = tuple(self.engine.get_binding_shape(self._out_i))
            out = torch.empty(out_shape, dtype=torch.float32, device=self._device)
            bindings = [0] * self.engine.num_bindings
            bindings[self._in_i], bindings[self._out_i] = inp.data_ptr(), out.data_ptr()
            self.context.execute_v2(bindings)
        return out.cpu().numpy()

    def run(self, batch: np.ndarray) -> np.ndarray:
        n = self._in_shape[0]
        outs = []
        for i in range(0, len(batch), n):
            chunk = batch[i:i + n]
            if len(chunk) < n:  # a static batch engine: pad the last chunk, keep only the real rows
                chunk = np.concatenate([chunk, np.zeros((n - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            outs.append(self._run_one(chunk)[:len(batch) - i])
        return np.concatenate(outs)


def BACKENDS_ON(device: str | int | None, *, engine: str | Path | None = None) -> list[str]:
    """The backends worth trying on this host for a device, fastest first (a TensorRT engine only
    when one is given and the device is a GPU)."""
    names = [TENSORRT] if engine is not None and cuda_index(device) is not None else []
    return names + [ONNXRUNTIME, TORCH]
