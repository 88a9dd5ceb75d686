"""The checks every exported model passes, v0 and each monthly candidate alike: ONNX parity with
PyTorch on real frames, and the TensorRT engine validated on the device against PyTorch on labelled
validation frames before it may be deployed."""

import json
import time
from pathlib import Path

import pandas as pd

from assets.store_io import read_primary_labels, read_split
from pipeline import keys
from pipeline.engine_validation import VALIDATION_SPLIT, compare_engine, predictions_table, validation_frames
from pipeline.errors import PipelineInputError
from pipeline.export import DEFAULT_OPSET, decode, export_onnx, inspect_onnx, load_torch_model, parity, preprocess, \
    torch_raw
from pipeline.hashing import sha256_file
from resources.engine import EngineBuilder, EngineBuildError
from resources.inference import inference_settings
from resources.storage import ArtifactStore


def checked_onnx(store: ArtifactStore, weights: Path, model: keys.ModelKeys, *, version: str, imgsz: int,
                 n_classes: int, frame_keys: list[str], folder: Path, opset: int = DEFAULT_OPSET,
                 box_tolerance_px: float = 0.05, score_tolerance: float = 1e-3, source_sha256: str | None = None,
                 require_parity: bool = False) -> dict:
    """Export `weights` to ONNX, validate its names, shapes and opset, measure parity with PyTorch on
    `frame_keys`, and store the ONNX and its record (`<name>.onnx.json`). With `require_parity`, an
    ONNX that disagrees is refused and nothing is stored."""
    onnx_path = export_onnx(weights, folder / Path(model.onnx).name, imgsz=imgsz, opset=opset)
    spec = inspect_onnx(onnx_path, imgsz=imgsz, n_classes=n_classes, opset=opset)
    images = []
    for key in frame_keys:
        images.append(folder / "parity" / keys.package_file_name(key))
        store.download_file(key, images[-1])
    report = parity(weights, onnx_path, images, imgsz=imgsz, box_tolerance_px=box_tolerance_px,
                    score_tolerance=score_tolerance)
    if require_parity and not report.passed:
        raise PipelineInputError(model.onnx, "parity", report.to_metadata(),
                                 "the exported ONNX does not reproduce PyTorch's detections on real frames: check the "
                                 "export (opset, onnxslim) before it goes to a device; nothing was stored",
                                 problem="ONNX disagrees with PyTorch")
    store.upload_file(onnx_path, model.onnx)
    meta = {"model": model.name, "version": version, "onnx_sha256": sha256_file(onnx_path),
            "uri": store.uri(model.onnx), "imgsz": imgsz, "opset": spec.opset, "spec": spec.to_metadata(),
            "parity": report.to_metadata(), "source_sha256": source_sha256}
    store.write_bytes(model.onnx_meta, json.dumps(meta, indent=2).encode())
    return meta


def validation_set(store: ArtifactStore, n: int) -> tuple[list[str], pd.DataFrame]:
    """Up to n labelled frames of the val split (evenly spread over the sorted keys) and their person boxes."""
    split = read_split(store)
    if not store.exists(keys.ANNOTATION_IMAGES) or not store.exists(keys.ANNOTATIONS):
        return [], pd.DataFrame(columns=["frame_key", "x1", "y1", "x2", "y2"])
    chosen, boxes = read_primary_labels(store)
    return validation_frames(split, chosen, boxes, n)


def validate_engine(log, store: ArtifactStore, builder: EngineBuilder, weights: Path | Exception, imgsz: int,
                    engine_path: Path, folder: Path, *, frames: int, iterations: int, delta: float,
                    max_latency_ms: float = 0.0) -> dict:
    """Engine vs PyTorch on labelled val frames, run where the engine was built. Never raises: a
    validation that cannot run says why (and the engine check fails on it). `weights` may be the error
    that kept the PyTorch weights from being loaded."""
    def not_validated(reason: str) -> dict:
        log.warning(f"engine built but not validated: {reason}")
        return {"status": "not_validated", "passed": False, "reason": reason}

    ok, why = builder.inference_support()
    if not ok:
        return not_validated(why)
    if frames <= 0:
        return not_validated("validation_frames is 0")
    frame_keys, gt = validation_set(store, frames)
    if not frame_keys:
        return not_validated(f"no labelled frames in the {VALIDATION_SPLIT} split of {keys.BASE_SPLIT}")
    if isinstance(weights, Exception):
        return not_validated(str(weights))
    tensors, shapes = [], []
    for key in frame_keys:
        local = folder / "validation" / keys.package_file_name(key)
        store.download_file(key, local)
        tensor, shape = preprocess(local, imgsz)
        tensors.append(tensor)
        shapes.append(shape)
    model = load_torch_model(weights, device=inference_settings().device)
    torch_tables, torch_ms = [], []
    for key, tensor, shape in zip(frame_keys, tensors, shapes):
        started = time.perf_counter()
        raw = torch_raw(model, tensor)
        torch_ms.append((time.perf_counter() - started) * 1000)
        torch_tables.append(predictions_table(key, decode(raw, imgsz=imgsz, frame_shape=shape)))
    try:
        run = builder.run_engine(engine_path, tensors, iterations=iterations)
    except EngineBuildError as exc:
        return not_validated(f"running the engine failed: {exc.problem} {exc.remedy}".strip())
    engine_tables = [predictions_table(key, decode(raw, imgsz=imgsz, frame_shape=shape))
                     for key, raw, shape in zip(frame_keys, run.outputs, shapes)]
    result = compare_engine(frame_keys, gt, pd.concat(torch_tables, ignore_index=True),
                            pd.concat(engine_tables, ignore_index=True), delta=delta,
                            engine_latency_ms=run.latency_ms, pytorch_latency_ms=torch_ms,
                            max_latency_ms=max_latency_ms or None)
    return {"status": "validated", **result.to_metadata(), "summary": result.summary, "ran_on": run.host,
            "split": VALIDATION_SPLIT, "frame_keys": frame_keys}
