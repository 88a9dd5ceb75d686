"""One detector interface: Ultralytics-exact letterbox and NMS, the ONNX Runtime backend proven
against PyTorch on real frames (../shared/fixtures), forced backends and honest fallbacks.

The model is the tiny one-class YOLOv8n of tests/test_export.py (fixed seed, batch-norm statistics
from the coco8 training images), so its outputs depend on the frame and a few boxes clear a low
threshold; CONF is that threshold.
"""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.detector import detect_persons
from pipeline.inference.letterbox import geometry, letterbox_batches, letterbox_one
from pipeline.inference.parity import detection_parity
from pipeline.inference.postprocess import non_max_suppression
from tests.test_export import IMGSZ, build_tiny_person_model, coco8_images, shared_coco8, shared_weights

CONF = 0.005


@pytest.fixture(scope="module")
def coco8(tmp_path_factory):
    return shared_coco8(tmp_path_factory)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return shared_weights(tmp_path_factory)


@pytest.fixture(scope="module")
def frames(coco8):
    images = coco8_images(coco8)
    assert len(images) == 8
    return [(p.name, p) for p in images]


def _by_frame(table, keys):
    return [table.loc[table["frame_key"] == k, ["x1", "y1", "x2", "y2", "conf"]].to_numpy() for k in keys]


# --------------------------------------------------------------------------- pre/post match Ultralytics


@pytest.mark.parametrize("shape", [(720, 1280), (480, 640), (427, 640), (1080, 1920), (641, 479), (37, 53)])
@pytest.mark.parametrize("auto", [True, False])
def test_letterbox_is_ultralytics_letterbox(shape, auto):
    from ultralytics.data.augment import LetterBox

    rng = np.random.default_rng(sum(shape))
    frame = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    theirs = LetterBox(new_shape=(640, 640), auto=auto, stride=32)(image=frame)
    ours, geo = letterbox_one(frame, 640, auto=auto)
    assert ours.shape == theirs.shape and geo.input_shape == theirs.shape[:2]
    assert np.array_equal(ours, theirs)


def test_batched_letterbox_splits_at_shape_changes_and_keeps_order():
    a, b = np.zeros((720, 1280, 3), np.uint8), np.zeros((480, 640, 3), np.uint8)
    batches = letterbox_batches([("a1", a), ("a2", a), ("b", b), ("a3", a)], 640)
    assert [x.keys for x in batches] == [["a1", "a2"], ["b"], ["a3"]]
    assert batches[0].tensor.shape == (2, 3, 384, 640) and batches[1].tensor.shape == (1, 3, 480, 640)
    fixed = letterbox_batches([("a", a), ("b", b)], 640, fixed_shape=(640, 640))
    assert len(fixed) == 1 and fixed[0].tensor.shape == (2, 3, 640, 640)
    assert geometry((720, 1280), 640).input_shape == (384, 640)


@pytest.mark.parametrize("classes", [None, [0], [3, 7]])
def test_nms_is_ultralytics_nms(classes):
    import torch
    from ultralytics.utils.nms import non_max_suppression as theirs

    rng = np.random.default_rng(1)
    n = 3000
    raw = np.zeros((2, 4 + 10, n), np.float32)
    raw[:, 0:2] = rng.uniform(0, 640, (2, 2, n))  # centres
    raw[:, 2:4] = rng.uniform(4, 120, (2, 2, n))  # sizes: many overlaps
    raw[:, 4:] = rng.uniform(0, 1, (2, 10, n)) ** 4
    for conf, iou in ((0.001, 0.7), (0.25, 0.45)):
        ref = theirs(torch.from_numpy(raw), conf_thres=conf, iou_thres=iou, classes=classes, max_det=300,
                     max_time_img=10.0)
        ours = non_max_suppression(raw, conf=conf, iou=iou, classes=classes)
        for r, o in zip(ref, ours):
            assert r.shape == o.shape
            np.testing.assert_allclose(o, r.numpy(), atol=1e-4)


def test_torch_backend_gives_what_ultralytics_predict_gives(weights, frames):
    """Our letterbox + network + NMS + scaling on real frames == model.predict, frame by frame."""
    from pipeline.detector import load_model

    table, record = detect_persons(weights, frames, imgsz=IMGSZ, conf=CONF, backend="torch", batch=3)
    assert record["backend"]["backend"] == "torch" and record["backend"]["fell_back"] is False
    model = load_model(weights)
    ours = _by_frame(table, [k for k, _ in frames])
    total = 0
    for (key, path), mine in zip(frames, ours):
        result = model.predict(str(path), imgsz=IMGSZ, conf=CONF, classes=[0], device="cpu", verbose=False)[0]
        theirs = np.concatenate([result.boxes.xyxy.numpy(), result.boxes.conf.numpy()[:, None]], axis=1)
        assert mine.shape == theirs.shape, key
        np.testing.assert_allclose(mine, theirs, atol=1e-2, rtol=1e-4)
        total += len(theirs)
    assert total > 0  # boxes were compared, not just empty lists


# --------------------------------------------------------------------------- ONNX Runtime, proven


def test_onnxruntime_is_chosen_proven_and_cached(weights, frames, tmp_path):
    cache = tmp_path / "cache"
    reference, _ = detect_persons(weights, frames, imgsz=IMGSZ, conf=CONF, backend="torch")
    table, record = detect_persons(weights, frames, imgsz=IMGSZ, conf=CONF, cache_dir=cache)
    chosen = record["backend"]
    assert chosen["backend"] == "onnxruntime" and chosen["provider"] == "CPUExecutionProvider"
    assert chosen["parity"]["passed"] and chosen["parity"]["frames"] == 8 and chosen["parity"]["matched"] > 0
    assert chosen["cached"] is False and len(list(cache.glob("*-dynamic-opset17.onnx"))) == 1
    # the whole pass, not only the proof frames, holds the stated tolerance against PyTorch
    keys = [k for k, _ in frames]
    check = detection_parity(_by_frame(reference, keys), _by_frame(table, keys), conf=CONF)
    assert check.passed, check
    assert check.matched == len(reference) == len(table) and check.min_iou >= 0.99
    again = detect_persons(weights, frames[:2], imgsz=IMGSZ, conf=CONF, cache_dir=cache)[1]["backend"]
    assert again["backend"] == "onnxruntime" and again["cached"] is True


def test_static_onnx_letterboxes_to_its_input_and_still_matches(weights, frames, tmp_path):
    from pipeline.export import export_onnx

    static = export_onnx(weights, tmp_path / "static.onnx", imgsz=IMGSZ)
    table, record = detect_persons(weights, frames, imgsz=IMGSZ, conf=CONF, backend="onnxruntime", onnx=static)
    assert record["backend"]["backend"] == "onnxruntime" and record["backend"]["input"] == [IMGSZ, IMGSZ]
    assert record["backend"]["parity"]["passed"] and len(table) > 0


def test_onnx_of_other_weights_fails_parity_and_the_pass_falls_back(weights, frames, coco8, tmp_path):
    from pipeline.export import export_onnx

    other = build_tiny_person_model(tmp_path / "other.pt", coco8_images(coco8, "train"), seed=1)
    wrong = export_onnx(other, tmp_path / "other.onnx", imgsz=IMGSZ, dynamic=True)
    table, record = detect_persons(weights, frames, imgsz=IMGSZ, conf=CONF, backend="onnxruntime", onnx=wrong)
    chosen = record["backend"]
    assert chosen["backend"] == "torch" and chosen["fell_back"] is True
    (tried,) = chosen["tried"]
    assert tried["backend"] == "onnxruntime" and tried["outcome"] == "parity failed"
    assert "missing" in tried["reason"] or "IoU" in tried["reason"] or "confidences" in tried["reason"]
    reference, _ = detect_persons(weights, frames, imgsz=IMGSZ, conf=CONF, backend="torch")
    assert table.equals(reference)  # never silently different results


def test_unloadable_backends_are_reported_with_the_reason(weights, frames, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    fake_engine = tmp_path / "model.engine"
    fake_engine.write_bytes(b"not an engine")
    _, record = detect_persons(weights, frames[:3], imgsz=IMGSZ, conf=CONF, backend="tensorrt", engine=fake_engine,
                               onnx=broken)
    chosen = record["backend"]
    assert chosen["backend"] == "torch" and chosen["requested"] == "tensorrt" and chosen["fell_back"]
    reasons = {t["backend"]: (t["outcome"], t["reason"]) for t in chosen["tried"]}
    assert reasons["tensorrt"][0] == "unavailable" and reasons["tensorrt"][1]  # no TensorRT/GPU here, or a bad engine
    assert reasons["onnxruntime"][0] == "unavailable" and "broken.onnx" in reasons["onnxruntime"][1]


def test_unreadable_frame_is_named(weights, frames):
    from pipeline.errors import PipelineInputError

    with pytest.raises(PipelineInputError, match="bad.jpg.*unreadable image"):
        detect_persons(weights, [*frames[:2], ("bad.jpg", b"garbage")], imgsz=IMGSZ, conf=CONF, backend="torch")


def test_an_architecture_file_is_exported_from_the_very_model_the_reference_holds(frames, tmp_path):
    """Untrained Stage A (yolov8n.yaml: random weights on every load): the ONNX must come from the
    reference's own instance, or parity would compare two different random networks."""
    table, record = detect_persons("yolov8n.yaml", frames[:3], imgsz=IMGSZ, conf=CONF, cache_dir=tmp_path)
    chosen = record["backend"]
    assert chosen["backend"] == "onnxruntime" and chosen["cached"] is False and "not cacheable" in chosen["onnx"]
    assert chosen["parity"]["passed"] and chosen["parity"]["max_raw_diff"] < 1e-2
    assert not list(tmp_path.iterdir())  # nothing cached under a hash that would not mean anything
