"""ONNX export on a real (tiny) detector: structural checks, parity with PyTorch on real frames,
a deliberately broken ONNX caught by parity, and a configurable opset that is recorded.

The model is YOLOv8n built for one class (person) at imgsz 64 from a fixed seed, not trained: its
batch-norm statistics are re-estimated on the coco8 training images (one forward pass in train mode),
because an untrained network's activations vanish layer by layer and every frame would give the same
output, which would make parity on "real frames" vacuous. After that the outputs depend on the frame,
and a few boxes clear a low confidence threshold, so box matching is exercised too.

Its untrained box head predicts boxes about eight times the input size (coordinates near 500 px at
imgsz 64), so float32 rounding differences between PyTorch and onnxruntime reach a few hundredths of
a pixel; the tests use a 0.5 px box tolerance (`BOX_TOLERANCE_PX`) instead of the pipeline's 0.05
(meant for a trained model's in-image boxes). A broken constant moves boxes by tens of pixels.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import PipelineInputError
from pipeline.export import (DEFAULT_OPSET, export_onnx, inspect_onnx, onnx_opset, parity, preprocess)
from pipeline.hashing import sha256_file
from pipeline.weights import publish_weights

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
IMGSZ = 64
MODEL_NAME = "yolov8n_lbzf_v0"
BOX_TOLERANCE_PX = 0.5


def coco8_copy(tmp: Path) -> Path:
    """A private copy of the coco8 fixture (nothing is ever written into shared/)."""
    source = FIXTURES / "coco8_yolo"
    if not source.exists():
        pytest.skip(f"real fixtures not found at {source} (shared/ is absent)")
    root = tmp / "coco8"
    if not root.exists():
        shutil.copytree(source, root)
    return root


def coco8_images(root: Path, split: str | None = None) -> list[Path]:
    pattern = f"images/{split}/*.jpg" if split else "images/*/*.jpg"
    return sorted(root.glob(pattern))


def build_tiny_person_model(out: Path, calibration_images: list[Path], imgsz: int = IMGSZ, seed: int = 0) -> Path:
    """YOLOv8n for one class, batch-norm statistics estimated on real images, saved with YOLO.save."""
    import torch
    import ultralytics
    import yaml

    from pipeline.offline import ultralytics_yolo

    yolo_cls = ultralytics_yolo()
    cfg = yaml.safe_load((Path(ultralytics.__file__).parent / "cfg/models/v8/yolov8.yaml").read_text())
    cfg["nc"] = 1
    cfg_path = out.parent / "yolov8n_person.yaml"  # "yolov8n" in the name selects the n scale
    cfg_path.write_text(yaml.safe_dump(cfg))
    torch.manual_seed(seed)  # the initial weights
    yolo = yolo_cls(str(cfg_path))
    batch = torch.from_numpy(np.concatenate([preprocess(p, imgsz)[0] for p in calibration_images]))
    for module in yolo.model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the batch
    yolo.model.train()
    with torch.no_grad():
        yolo.model(batch)
    yolo.model.eval()
    yolo.save(str(out))
    return out


_SHARED: dict[str, Path] = {}  # built once per test session, shared by the export/calibration/deploy tests


def shared_coco8(tmp_path_factory) -> Path:
    if "coco8" not in _SHARED:
        _SHARED["coco8"] = coco8_copy(tmp_path_factory.mktemp("data"))
    return _SHARED["coco8"]


def shared_weights(tmp_path_factory) -> Path:
    if "weights" not in _SHARED:
        _SHARED["weights"] = build_tiny_person_model(tmp_path_factory.mktemp("model") / f"{MODEL_NAME}.pt",
                                                     coco8_images(shared_coco8(tmp_path_factory), "train"))
    return _SHARED["weights"]


def shared_onnx(tmp_path_factory) -> Path:
    if "onnx" not in _SHARED:
        _SHARED["onnx"] = export_onnx(shared_weights(tmp_path_factory),
                                      tmp_path_factory.mktemp("onnx") / f"{MODEL_NAME}.onnx", imgsz=IMGSZ)
    return _SHARED["onnx"]


@pytest.fixture(scope="module")
def coco8(tmp_path_factory) -> Path:
    return shared_coco8(tmp_path_factory)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return shared_weights(tmp_path_factory)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    return shared_onnx(tmp_path_factory)


def test_export_passes_checks_and_parity_on_real_frames(weights, exported, coco8):
    spec = inspect_onnx(exported, imgsz=IMGSZ, n_classes=1)
    assert (spec.input_name, spec.input_shape) == ("images", [1, 3, IMGSZ, IMGSZ])
    assert spec.output_name == "output0" and spec.output_shape[:2] == [1, 5] and spec.opset == DEFAULT_OPSET == 17

    frames = coco8_images(coco8)
    assert len(frames) == 8
    report = parity(weights, exported, frames, imgsz=IMGSZ, conf=0.005, box_tolerance_px=BOX_TOLERANCE_PX)
    assert report.passed, report
    assert report.frames == 8
    assert report.max_box_diff_px <= BOX_TOLERANCE_PX and report.max_score_diff <= 1e-3
    assert report.boxes_torch > 0 and report.boxes_matched == report.boxes_torch == report.boxes_onnx


def test_outputs_depend_on_the_frame(weights, exported, coco8):
    """Guard against a vacuous parity: different frames must give different raw outputs."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    a, b = (session.run(None, {"images": preprocess(p, IMGSZ)[0]})[0] for p in coco8_images(coco8)[:2])
    assert np.abs(a - b).max() > 1.0


def test_wrong_image_size_or_class_count_is_refused(exported):
    with pytest.raises(PipelineInputError, match=r"image size \[64, 64\] is not 640x640") as wrong_size:
        inspect_onnx(exported, imgsz=640, n_classes=1)
    assert "re-export with imgsz=640" in str(wrong_size.value)
    with pytest.raises(PipelineInputError, match="the model has 1 classes, expected 80") as wrong_classes:
        inspect_onnx(exported, imgsz=IMGSZ, n_classes=80)
    assert "output0[1, 84, N]" in str(wrong_classes.value)
    with pytest.raises(PipelineInputError, match="ONNX opset 17 is not the expected 13"):
        inspect_onnx(exported, imgsz=IMGSZ, n_classes=1, opset=13)


def _broken_copy(source: Path, target: Path, how: str) -> Path:
    """A structurally valid ONNX whose numbers were changed: the stride constant that scales the
    boxes ("boxes"), or the bias of the class branch ("scores")."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    initializers = {i.name: i for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    if how == "boxes":
        concat = producers["output0"]  # Concat(box * strides, sigmoid(scores))
        mul = producers[concat.input[0]]
        assert mul.op_type == "Mul"
        name = next(i for i in mul.input if i in initializers)
        factor, offset = 1.05, 0.0
    else:
        name = next(n for n in initializers if "cv3.0.2.bias" in n)
        factor, offset = 1.0, 2.0
    array = numpy_helper.to_array(initializers[name]).copy()
    initializers[name].CopyFrom(numpy_helper.from_array(array * factor + offset, name))
    onnx.save(model, str(target))
    return target


@pytest.mark.parametrize("how", ["boxes", "scores"])
def test_broken_onnx_fails_parity(weights, exported, coco8, tmp_path, how):
    broken = _broken_copy(exported, tmp_path / f"broken_{how}.onnx", how)
    assert sha256_file(broken) != sha256_file(exported)
    inspect_onnx(broken, imgsz=IMGSZ, n_classes=1)  # still a well-formed detector: only parity can tell
    report = parity(weights, broken, coco8_images(coco8), imgsz=IMGSZ, conf=0.005, box_tolerance_px=BOX_TOLERANCE_PX)
    assert not report.passed
    if how == "boxes":
        assert report.max_box_diff_px > 10 * BOX_TOLERANCE_PX
    else:
        assert report.max_score_diff > 1e-3


def test_parity_on_no_frames_is_refused(weights, exported):
    with pytest.raises(PipelineInputError, match="parity needs frames"):
        parity(weights, exported, [], imgsz=IMGSZ)


def test_opset_is_configurable_and_checked(weights, tmp_path):
    path = export_onnx(weights, tmp_path / "opset13.onnx", imgsz=IMGSZ, opset=13)
    assert onnx_opset(path) == 13
    assert inspect_onnx(path, imgsz=IMGSZ, n_classes=1, opset=13).opset == 13


# --------------------------------------------------------------------------- the onnx_model asset


def seed_model_store(store_root: Path, weights: Path, coco8: Path, imgsz: int = IMGSZ):
    """A store holding what onnx_model reads: the selected (fine-tuned, 1-class) model, the yaml of
    the dataset it was trained on (its class list) and the Stage A frames (the coco8 images as frames
    of two 'videos')."""
    import pandas as pd

    from assets.store_io import write_parquet
    from pipeline import keys
    from pipeline.yolo_dataset import dataset_yaml
    from resources.storage import LocalArtifactStore

    store = LocalArtifactStore(root=str(store_root))
    dataset = keys.dataset_keys("v0")
    store.write_bytes(dataset.yaml, dataset_yaml(dataset.folder.rstrip("/"), ["person"], version="v0",
                                                 split_sha256="0" * 64, splits=["train", "val"]).encode())
    weights_key = f"models/{MODEL_NAME}/{MODEL_NAME}.pt"
    publish_weights(store, weights, weights_key, producer="stage_b")  # as Stage B records its output
    store.write_bytes("models/selected_model.json", json.dumps({
        "model": MODEL_NAME, "key": weights_key, "sha256": sha256_file(weights), "why": "test",
        "version": "v0", "imgsz": imgsz}).encode())
    rows = []
    for split in ("train", "val"):
        for i, image in enumerate(coco8_images(coco8, split)):
            key = f"frames/stage_a/coco8_{split}/{i * 5000:09d}.jpg"
            store.upload_file(image, key)
            rows.append({"frame_key": key, "video_id": f"coco8_{split}", "source": "stage_a"})
    write_parquet(store, "frames/stage_a/manifest.parquet", pd.DataFrame(rows))
    return store, pd.DataFrame(rows)


def test_onnx_asset_records_the_configured_opset_and_passes_parity(weights, coco8, tmp_path):
    import dagster as dg

    from assets.export import onnx_model, onnx_parity

    store, _ = seed_model_store(tmp_path / "store", weights, coco8)
    result = dg.materialize([onnx_model, onnx_parity], resources={"store": store},
                            run_config={"ops": {"onnx_model": {"config": {"opset": 13,
                                                                          "box_tolerance_px": BOX_TOLERANCE_PX}}}})
    assert result.success
    meta = {k: v.value for k, v in result.asset_materializations_for_node("onnx_model")[0].metadata.items()}
    assert meta["opset"] == 13 and meta["spec"]["opset"] == 13 and meta["parity"]["passed"] is True
    assert meta["parity"]["frames"] == 8
    onnx_file = tmp_path / "store" / f"models/{MODEL_NAME}/{MODEL_NAME}.onnx"
    assert onnx_opset(onnx_file) == 13 and meta["onnx_sha256"] == sha256_file(onnx_file)
    recorded = json.loads((onnx_file.parent / f"{MODEL_NAME}.onnx.json").read_text())
    assert recorded["opset"] == 13 and recorded["spec"]["opset"] == 13
    (check,) = result.get_asset_check_evaluations()
    assert check.passed
