"""Speed per stage: pre-process, inference and post-process milliseconds per image, for PyTorch and
ONNX Runtime, measured around the project's one definition of each stage (pipeline.export:
`preprocess` reads and letterboxes the frame, `decode` runs NMS and scales boxes back), so both
backends are timed on the same work. One image at a time (batch 1, as on the device), after a
warm-up; the wall time of the whole loop is reported beside the stages' sum.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineInputError
from pipeline.export import decode, load_torch_model, preprocess, torch_raw

Infer = Callable[[np.ndarray], np.ndarray]


def torch_infer(weights: Path) -> Infer:
    model = load_torch_model(weights)
    return lambda tensor: torch_raw(model, tensor)


def onnx_infer(onnx_path: Path, threads: int = 0) -> Infer:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda tensor: session.run(None, {name: tensor})[0]


def stage_speed(images: list[Path], infer: Infer, *, imgsz: int, warmup: int = 2) -> dict:
    """Mean ms per image of each stage, their sum, and the measured wall time per image."""
    if not images:
        raise PipelineInputError("speed measurement", "images", [], "measure on at least one real frame",
                                 problem="no frames to time")
    for image in images[:warmup]:
        tensor, shape = preprocess(image, imgsz)
        decode(infer(tensor), imgsz=imgsz, frame_shape=shape)
    stages = {"preprocess": [], "inference": [], "postprocess": []}
    clock = time.perf_counter
    started = clock()
    for image in images:
        t0 = clock()
        tensor, shape = preprocess(image, imgsz)
        t1 = clock()
        raw = infer(tensor)
        t2 = clock()
        decode(raw, imgsz=imgsz, frame_shape=shape)
        t3 = clock()
        stages["preprocess"].append(t1 - t0)
        stages["inference"].append(t2 - t1)
        stages["postprocess"].append(t3 - t2)
    wall = clock() - started
    result = {k: round(1000 * float(np.mean(v)), 3) for k, v in stages.items()}
    result.update({"sum_ms": round(sum(result.values()), 3), "wall_ms_per_image": round(1000 * wall / len(images), 3),
                   "images": len(images), "imgsz": imgsz, "batch": 1})
    return result


def backend_speeds(weights: Path, onnx_path: Path | None, images: list[Path], *, imgsz: int) -> dict:
    """{"pytorch": stage_speed(...), "onnx": stage_speed(...)} on the same frames."""
    speeds = {"pytorch": stage_speed(images, torch_infer(weights), imgsz=imgsz)}
    if onnx_path is not None:
        speeds["onnx"] = stage_speed(images, onnx_infer(onnx_path), imgsz=imgsz)
    return speeds
