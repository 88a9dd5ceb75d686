"""Every detection pass's entry point: frames in, person boxes out as a table, and a record of how.

`detect_persons` picks the backend (`pipeline.inference.choose`: the fastest one whose parity with
PyTorch is proven on a few of this pass's own frames, or the configured one), reads and decodes the
frames ahead of inference on a background thread (bounded), letterboxes them in batches exactly as
Ultralytics does, and runs NMS / class filter / box scaling as Ultralytics' predict does
(`pipeline.inference`). The returned record says which backend and provider produced the boxes,
its parity figures, and any backend that was tried and not used (with the reason).
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from pipeline.inference.postprocess import postprocess
from pipeline.inference.prefetch import Source, decode_frame, prefetch

COLUMNS = ["frame_key", "x1", "y1", "x2", "y2", "conf", "class_id"]
DEFAULT_IOU = 0.7  # Ultralytics predict's default
PROOF_FRAMES = 8
CPU_BATCH, GPU_BATCH = 4, 16  # measured: on 2 CPU cores batches of 4 beat 1 and 16 (docs/benchmarks.md)


def default_batch(device: str | int | None) -> int:
    from pipeline.inference.backends import cuda_index

    return CPU_BATCH if cuda_index(device) is None else GPU_BATCH


def load_model(weights: str | Path):
    """The Ultralytics model (for callers that need the Python object itself, e.g. to train)."""
    from pipeline.offline import ultralytics_yolo

    return ultralytics_yolo()(str(weights))


def proof_indices(n: int, k: int = PROOF_FRAMES) -> list[int]:
    """Up to k frame indices spread evenly over the pass (first and last included)."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def open_pass_detector(weights: str | Path, frames: Sequence[tuple[str, Source]], *, imgsz: int, conf: float,
                       iou: float = DEFAULT_IOU, person_class: int | None = 0, device: str = "cpu",
                       backend: str = "auto", onnx: str | Path | None = None, engine: str | Path | None = None,
                       cache_dir: str | Path | None = None, proof_frames: int = PROOF_FRAMES):
    from pipeline.inference.choose import open_detector

    proof = [(frames[i][0], decode_frame(frames[i][0], frames[i][1])) for i in proof_indices(len(frames), proof_frames)]
    return open_detector(weights, proof, imgsz=imgsz, conf=conf, iou=iou,
                         classes=None if person_class is None else [person_class], device=device, backend=backend,
                         onnx=onnx, engine=engine, cache_dir=cache_dir)


def run_pass(detector, frames: Sequence[tuple[str, Source]], *, batch: int | None = None,
             prefetch_depth: int = 2) -> tuple[pd.DataFrame, dict]:
    """Boxes of every frame (with the model's class id) with an opened detector; timings per image (ms)."""
    batch = batch or default_batch(detector.record.get("device"))
    rows, infer_s, post_s = [], 0.0, 0.0
    started = time.perf_counter()
    for batches in prefetch(frames, detector.letterbox, batch=batch, depth=prefetch_depth):
        for b in batches:
            t0 = time.perf_counter()
            raw = detector.backend.run(b.tensor)
            t1 = time.perf_counter()
            dets = postprocess(raw, b.geometries, conf=detector.conf, iou=detector.iou, classes=detector.classes,
                               max_det=detector.max_det)
            post_s += time.perf_counter() - t1
            infer_s += t1 - t0
            for key, det in zip(b.keys, dets):
                rows.extend([key, *map(float, d[:5]), int(d[5])] for d in det)
    total = time.perf_counter() - started
    n = max(len(frames), 1)
    timing = {"inference": round(infer_s * 1000 / n, 3), "postprocess": round(post_s * 1000 / n, 3),
              "read_decode_letterbox_waited": round(max(total - infer_s - post_s, 0.0) * 1000 / n, 3),
              "wall": round(total * 1000 / n, 3)}
    return pd.DataFrame(rows, columns=COLUMNS), timing


def detect_persons(weights: str | Path, frames: Sequence[tuple[str, Source]], *, imgsz: int = 640,
                   conf: float = 0.001, iou: float = DEFAULT_IOU, person_class: int = 0, batch: int | None = None,
                   device: str = "cpu", backend: str = "auto", onnx: str | Path | None = None,
                   engine: str | Path | None = None, cache_dir: str | Path | None = None,
                   proof_frames: int = PROOF_FRAMES) -> tuple[pd.DataFrame, dict]:
    """Person detections for each (frame_key, source) - a path, JPEG bytes or a callable returning
    them - (every class's, with person_class=None; `class_id` is the model's class index) and the pass's record: ms per image plus {"backend": which backend/provider, its parity
    figures on this pass's frames, what was tried and why it was not used}."""
    frames = list(frames)
    detector = open_pass_detector(weights, frames, imgsz=imgsz, conf=conf, iou=iou, person_class=person_class,
                                  device=device, backend=backend, onnx=onnx, engine=engine, cache_dir=cache_dir,
                                  proof_frames=proof_frames)
    table, timing = run_pass(detector, frames, batch=batch)
    return table, {**timing, "backend": detector.record}
