"""Pick the backend for one detection pass: the fastest that loads here and whose parity with
PyTorch is proven on this pass's own frames; record why the others were not used.

Speed order, fastest first: TensorRT engine, ONNX Runtime (its TensorRT/CUDA providers on a GPU
device, else CPU), PyTorch (`docs/benchmarks.md` has the measured figures). A forced backend
(configuration) is tried first; it is still proven against PyTorch, and when it cannot load or
fails parity the pass falls back to the next one in the order and says so: results never change
silently. PyTorch itself is the reference and needs no proof.
"""
from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.inference.backends import (ONNXRUNTIME, TENSORRT, TORCH, Backend, BackendUnavailable, OnnxRuntimeBackend,
                                         TensorRTBackend, TorchBackend)
from pipeline.inference.letterbox import letterbox_batches
from pipeline.inference.parity import Parity, detection_parity
from pipeline.inference.postprocess import MAX_DET, postprocess

BACKENDS = (TENSORRT, ONNXRUNTIME, TORCH)  # fastest first
CHOICES = ("auto", *BACKENDS)
log = logging.getLogger(__name__)


@dataclass
class Detector:
    """A chosen backend plus everything a pass needs to turn frames into detections."""
    backend: Backend
    imgsz: int
    conf: float
    iou: float
    classes: list[int] | None
    max_det: int = MAX_DET
    record: dict = field(default_factory=dict)

    def letterbox(self, items: list[tuple[str, np.ndarray]]):
        return letterbox_batches(items, self.imgsz, stride=self.backend.stride, fixed_shape=self.backend.fixed_shape)

    def detect(self, batch) -> list[np.ndarray]:
        """One letterboxed batch -> per frame (n, 6) x1, y1, x2, y2, conf, class in the frame's pixels."""
        return postprocess(self.backend.run(batch.tensor), batch.geometries, conf=self.conf, iou=self.iou,
                           classes=self.classes, max_det=self.max_det)

    def detect_frames(self, items: list[tuple[str, np.ndarray]]) -> list[np.ndarray]:
        return [d for b in self.letterbox(items) for d in self.detect(b)]


def _weights_file(torch_backend: TorchBackend, weights: Path, folder: Path) -> tuple[Path, bool]:
    """A .pt to export: the weights themselves, or (an architecture .yaml: random on every load) the
    very model the reference holds, saved once for this pass (then not cacheable)."""
    if Path(weights).suffix == ".pt" and Path(weights).is_file():
        return Path(weights), True
    saved = folder / "reference.pt"
    torch_backend.yolo.save(str(saved))
    return saved, False


def prove(reference: Backend, candidate: Backend, proof: list[tuple[str, np.ndarray]], *, imgsz: int, conf: float,
          iou: float, classes: list[int] | None, max_det: int = MAX_DET) -> Parity:
    """Both backends on the same letterboxed proof frames (the candidate's input shape), same NMS."""
    ref_dets, got_dets, raw_diff = [], [], 0.0
    for batch in letterbox_batches(proof, imgsz, stride=candidate.stride, fixed_shape=candidate.fixed_shape):
        raw_r, raw_c = reference.run(batch.tensor), candidate.run(batch.tensor)
        if raw_r.shape != raw_c.shape:
            raise BackendUnavailable(candidate.name, f"output shape {list(raw_c.shape)} differs from PyTorch's "
                                                     f"{list(raw_r.shape)}: the model is not these weights")
        raw_diff = max(raw_diff, float(np.abs(raw_r - raw_c).max()))
        kw = dict(conf=conf, iou=iou, classes=classes, max_det=max_det)
        ref_dets += postprocess(raw_r, batch.geometries, **kw)
        got_dets += postprocess(raw_c, batch.geometries, **kw)
    return detection_parity(ref_dets, got_dets, conf=conf, max_det=max_det, max_raw_diff=raw_diff)


def open_detector(weights: str | Path, proof: list[tuple[str, np.ndarray]], *, imgsz: int, conf: float, iou: float = 0.7,
                  classes: list[int] | None = None, device: str = "cpu", backend: str = "auto",
                  onnx: str | Path | None = None, engine: str | Path | None = None,
                  cache_dir: str | Path | None = None) -> Detector:
    """The detector for one pass. `proof` holds (key, BGR frame) pairs from the pass's own frames."""
    from pipeline.inference.onnx_cache import cached_onnx

    if backend not in CHOICES:
        raise ValueError(f"unknown inference backend {backend!r}: use one of {CHOICES}")
    started = time.perf_counter()
    order = list(BACKENDS) if backend == "auto" else [backend] + [b for b in BACKENDS if b != backend]
    tried: list[dict] = []
    reference = TorchBackend(weights, device=device)  # the reference; if it cannot load, nothing can be proven
    chosen, parity = None, None
    with tempfile.TemporaryDirectory(prefix="lbzf-infer-") as tmp:
        for name in order:
            if name == TORCH:
                chosen = reference
                break
            if name == TENSORRT and engine is None:
                if backend == TENSORRT:
                    tried.append({"backend": name, "outcome": "unavailable", "reason": "forced, but no TensorRT "
                                  "engine was given for this pass (only engine validation and the device have one)"})
                continue
            if not proof:
                tried.append({"backend": name, "outcome": "not proven", "reason": "no frames to prove parity on"})
                continue
            try:
                if name == TENSORRT:
                    candidate = TensorRTBackend(engine, device=device)
                else:
                    if onnx is not None:
                        path, export = Path(onnx), {"onnx": str(onnx), "given": True}
                    else:
                        source, cacheable = _weights_file(reference, Path(weights), Path(tmp))
                        if cacheable:
                            path, export = cached_onnx(source, imgsz=imgsz, cache_dir=cache_dir)
                        else:
                            path = Path(tmp) / "reference.onnx"
                            from pipeline.export import export_onnx
                            export_onnx(source, path, imgsz=imgsz, dynamic=True)
                            export = {"onnx": "exported for this pass (architecture file: random weights, "
                                              "not cacheable)", "cached": False}
                    candidate = OnnxRuntimeBackend(path, device=device)
                    candidate.details.update(export)
                proof_result = prove(reference, candidate, proof, imgsz=imgsz, conf=conf, iou=iou, classes=classes)
            except BackendUnavailable as exc:
                log.warning(str(exc))
                tried.append({"backend": name, "outcome": "unavailable", "reason": exc.reason})
                continue
            except Exception as exc:  # an export that failed, a provider that crashed on the proof frames
                reason = f"{type(exc).__name__}: {str(exc)[:300]}"
                log.warning(f"{name} backend failed: {reason}")
                tried.append({"backend": name, "outcome": "failed", "reason": reason})
                continue
            if proof_result.passed:
                chosen, parity = candidate, proof_result
                break
            log.warning(f"{name} backend fails parity with PyTorch on this pass's frames: {proof_result.reason}")
            tried.append({"backend": name, "outcome": "parity failed", "reason": proof_result.reason,
                          "parity": proof_result.to_metadata()})
    record = {**chosen.describe(), "requested": backend, "device": str(device),
              "parity": parity.to_metadata() if parity else {"reference": True,
                                                             "note": "PyTorch is the reference: nothing to prove"},
              "proof_frames": [k for k, _ in proof], "tried": tried, "fell_back": bool(tried),
              "selection_s": round(time.perf_counter() - started, 3)}
    if record["fell_back"]:
        log.warning(f"inference fell back to {chosen.name}: " + "; ".join(f"{t['backend']}: {t['reason']}" for t in tried))
    return Detector(chosen, imgsz, conf, iou, classes, record=record)
