"""INT8 calibration discipline: calibration frames come from the TRAIN split only, INT8 is never built
without a calibration set and a TensorRT calibration cache, and the engine asset enforces both."""
from __future__ import annotations

import importlib.util
import json
import zipfile

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from pipeline.calibration import (CalibrationError, CalibrationSet, check_calibration_frames,
                                  require_int8_calibration, select_calibration_frames, write_calibration_package)
from pipeline.hashing import sha256_file
from resources.engine import UnavailableEngineBuilder

try:  # tests/ as a package or as a plain rootdir-relative directory
    from tests.test_engine_deploy_asset import (coco8, device_root, jetson, needs_sshd, onnx_file, seed_engine_store,
                                                seed_onnx, sshd, weights)
    from tests.test_export import IMGSZ, MODEL_NAME, coco8_images
except ImportError:  # pragma: no cover - depends on how pytest was started
    from test_engine_deploy_asset import (coco8, device_root, jetson, needs_sshd, onnx_file, seed_engine_store,
                                          seed_onnx, sshd, weights)
    from test_export import IMGSZ, MODEL_NAME, coco8_images

__all__ = ["coco8", "device_root", "jetson", "onnx_file", "sshd", "weights"]  # fixtures used here

CACHE = b"TRT-8602-EntropyCalibration2\nimages: 3c010a14\noutput0: 3e8b3f2a\n"


def split_table() -> pd.DataFrame:
    rows = []
    for video, split in [("v1", "train"), ("v2", "train"), ("v3", "train"), ("v4", "val"), ("v5", "test"),
                         ("line_1", "deployment_test")]:
        for t in range(10):
            rows.append({"frame_key": f"frames/ops/{video}/{t * 2000:09d}.jpg", "video_id": video, "split": split})
    return pd.DataFrame(rows)


def key(video: str, t: int = 0) -> str:
    return f"frames/ops/{video}/{t * 2000:09d}.jpg"


# --------------------------------------------------------------------------- frame selection and refusal


def test_selection_takes_train_frames_only_spread_over_videos():
    split = split_table()
    chosen = select_calibration_frames(split, 6, seed=0)
    assert len(chosen) == 6 and len(set(chosen)) == 6
    where = dict(zip(split["frame_key"], split["split"]))
    assert {where[k] for k in chosen} == {"train"}
    assert sorted(k.split("/")[2] for k in chosen) == ["v1", "v1", "v2", "v2", "v3", "v3"]
    assert chosen == select_calibration_frames(split, 6, seed=0)  # deterministic
    assert chosen != select_calibration_frames(split, 6, seed=1)
    everything = select_calibration_frames(split, 500)
    assert sorted(everything) == sorted(split.loc[split["split"] == "train", "frame_key"])


def test_frames_of_val_test_or_deployment_test_are_refused_by_name():
    split = split_table()
    frames = [key("v1"), key("v2"), key("v4", 3), key("v5", 1), key("line_1", 2)]
    with pytest.raises(CalibrationError) as refused:
        check_calibration_frames(frames, split)
    text = str(refused.value)
    assert "3 of 5 calibration frame(s) are not training frames (1 deployment_test, 1 test, 1 val)" in text
    for frame, name in [(key("v4", 3), "val"), (key("v5", 1), "test"), (key("line_1", 2), "deployment_test")]:
        assert f"{frame} ({name})" in text
    assert key("v1") not in text  # the train frames are not blamed
    assert "only use frames of the train split of dataset_split_v0.csv" in text
    assert "materialize int8_calibration_set" in text
    check_calibration_frames(frames[:2], split)  # train frames alone are fine


def test_unknown_frames_and_empty_sets_are_refused():
    split = split_table()
    with pytest.raises(CalibrationError, match=r"frames/other/x/000000000.jpg \(not in the split\)"):
        check_calibration_frames(["frames/other/x/000000000.jpg"], split)
    with pytest.raises(CalibrationError, match="no calibration frames"):
        check_calibration_frames([], split)
    with pytest.raises(CalibrationError, match="the split has no train frames"):
        select_calibration_frames(split[split["split"] != "train"], 5)
    with pytest.raises(CalibrationError, match="no calibration frames asked for"):
        select_calibration_frames(split, 0)


def _manifest(frames: list[str], onnx_sha: str = "a" * 64) -> CalibrationSet:
    return CalibrationSet(frame_keys=frames, split_sha256="b" * 64, onnx_sha256=onnx_sha, imgsz=IMGSZ)


def test_int8_gate(tmp_path):
    split = split_table()
    cache = tmp_path / "calib.cache"
    cache.write_bytes(CACHE)
    good = _manifest([key("v1"), key("v2")])
    assert require_int8_calibration("fp16", manifest=None, cache=None, split=split) is None
    with pytest.raises(CalibrationError, match="INT8 refused: no calibration set"):
        require_int8_calibration("int8", manifest=None, cache=cache, split=split)
    with pytest.raises(CalibrationError, match=r"frames/ops/v4/000002000.jpg \(val\)"):
        require_int8_calibration("int8", manifest=_manifest([key("v1"), key("v4", 1)]), cache=cache, split=split)
    with pytest.raises(CalibrationError, match="INT8 refused: calibration set belongs to another model"):
        require_int8_calibration("int8", manifest=good, cache=cache, split=split, onnx_sha256="c" * 64)
    with pytest.raises(CalibrationError, match="INT8 refused: no calibration cache"):
        require_int8_calibration("int8", manifest=good, cache=None, split=split)
    with pytest.raises(CalibrationError, match="INT8 refused: no calibration cache"):
        require_int8_calibration("int8", manifest=good, cache=tmp_path / "missing.cache", split=split)
    not_a_cache = tmp_path / "frames.npy"
    not_a_cache.write_bytes(b"\x93NUMPY...")
    with pytest.raises(CalibrationError, match="not a TensorRT calibration cache"):
        require_int8_calibration("int8", manifest=good, cache=not_a_cache, split=split)
    provenance = require_int8_calibration("int8", manifest=good, cache=cache, split=split, onnx_sha256="a" * 64)
    assert provenance == {"calibration_frames": 2, "calibration_split": "train", "calibration_split_sha256": "b" * 64,
                          "calibration_onnx_sha256": "a" * 64, "int8_calib_cache_sha256": sha256_file(cache)}


# --------------------------------------------------------------------------- the package the device reads


def test_package_feeds_the_calibrator_exactly_what_the_network_sees(coco8, tmp_path):
    from pipeline.export import preprocess

    images = coco8_images(coco8, "train")
    frames = [(f"frames/ops/coco8/{i:09d}.jpg", p) for i, p in enumerate(images)]
    manifest = _manifest([k for k, _ in frames])
    package = write_calibration_package(frames, tmp_path / "calibration_set.zip", manifest)
    with zipfile.ZipFile(package) as archive:
        names = sorted(archive.namelist())
        archive.extractall(tmp_path / "unpacked")
    assert names == ["calibration/calibration_set.json", "calibration/data_loader.py"] + [
        f"calibration/frames/{i:06d}.png" for i in range(4)]
    folder = tmp_path / "unpacked" / "calibration"
    recorded = CalibrationSet.from_json((folder / "calibration_set.json").read_text())
    assert recorded.frame_keys == manifest.frame_keys and recorded.files == [f"{i:06d}.png" for i in range(4)]
    assert recorded.frame_sha256 == [sha256_file(folder / "frames" / f) for f in recorded.files]

    spec = importlib.util.spec_from_file_location("lbzf_data_loader", folder / "data_loader.py")
    loader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loader)
    batches = list(loader.load_data())
    assert len(batches) == 4
    for batch, image in zip(batches, images):
        assert list(batch) == ["images"]
        expected, _ = preprocess(image, IMGSZ)
        assert batch["images"].dtype == np.float32 and batch["images"].shape == (1, 3, IMGSZ, IMGSZ)
        assert np.array_equal(batch["images"], expected)  # lossless: bit-identical to the network input


# --------------------------------------------------------------------------- through the assets


def _failure_text(result, node: str) -> str:
    for event in result.all_events:
        if event.is_step_failure and event.step_key == node:
            data = event.event_specific_data
            description = data.user_failure_data.description if data.user_failure_data else ""
            return f"{description}\n{data.error.to_string() if data.error else ''}"
    return ""


def _assets():
    from assets.export import engine_matches_pytorch, int8_calibration_set, tensorrt_engine

    return int8_calibration_set, tensorrt_engine, engine_matches_pytorch


INT8 = {"ops": {"tensorrt_engine": {"config": {"precision": "int8", "validation_frames": 2,
                                               "validation_iterations": 2}}}}


def test_engine_asset_refuses_int8_without_train_calibration(weights, onnx_file, coco8, tmp_path):
    from assets.export import calibration_keys

    store, split = seed_engine_store(tmp_path / "store", weights, coco8)
    seed_onnx(store, onnx_file)
    calibration_set, engine, check = _assets()
    unavailable = {"store": store, "engine_builder": UnavailableEngineBuilder(reason="no TensorRT here (test)")}

    # No calibration set at all: refused before any builder is asked (even one that could not build).
    result = dg.materialize([engine, check], resources=unavailable, run_config=INT8, raise_on_error=False)
    assert not result.success and "INT8 refused: no calibration set" in _failure_text(result, "tensorrt_engine")

    # The calibration set asset draws from the train split only.
    made = dg.materialize([calibration_set], resources={"store": store},
                          run_config={"ops": {"int8_calibration_set": {"config": {"n_frames": 3}}}})
    assert made.success
    where = calibration_keys(MODEL_NAME)
    manifest = CalibrationSet.from_json(store.read_bytes(where["manifest"]))
    splits = dict(zip(split["frame_key"], split["split"]))
    assert len(manifest.frame_keys) == 3 and {splits[k] for k in manifest.frame_keys} == {"train"}
    assert manifest.onnx_sha256 == sha256_file(onnx_file) and store.exists(where["package"])

    # A manifest that slipped a validation frame in is refused, naming it.
    val_frame = split.loc[split["split"] == "val", "frame_key"].iloc[0]
    tampered = CalibrationSet.from_json(manifest.to_json())
    tampered.frame_keys = [*manifest.frame_keys[:2], val_frame]
    store.write_bytes(where["manifest"], tampered.to_json())
    result = dg.materialize([engine, check], resources=unavailable, run_config=INT8, raise_on_error=False)
    text = _failure_text(result, "tensorrt_engine")
    assert not result.success and f"{val_frame} (val)" in text and "not training frames" in text

    # A proper set but no cache from the device yet.
    store.write_bytes(where["manifest"], manifest.to_json())
    result = dg.materialize([engine, check], resources=unavailable, run_config=INT8, raise_on_error=False)
    assert not result.success and "INT8 refused: no calibration cache" in _failure_text(result, "tensorrt_engine")

    # With the cache, the gate opens (this builder then says it cannot build here).
    store.write_bytes(where["cache"], CACHE)
    result = dg.materialize([engine, check], resources=unavailable, run_config=INT8)
    assert result.success
    meta = result.asset_materializations_for_node("tensorrt_engine")[0].metadata
    assert meta["status"].value == "unavailable"


@needs_sshd
def test_int8_engine_is_built_with_the_train_calibration_cache(jetson, weights, onnx_file, coco8, tmp_path):
    from assets.export import calibration_keys

    store, _ = seed_engine_store(tmp_path / "store", weights, coco8)
    seed_onnx(store, onnx_file)
    calibration_set, engine, check = _assets()
    assert dg.materialize([calibration_set], resources={"store": store},
                          run_config={"ops": {"int8_calibration_set": {"config": {"n_frames": 3}}}}).success
    where = calibration_keys(MODEL_NAME)
    store.write_bytes(where["cache"], CACHE)  # what the device's calibrator would have written
    result = dg.materialize([engine, check], resources={"store": store, "engine_builder": jetson}, run_config=INT8)
    assert result.success
    meta = {k: v.value for k, v in result.asset_materializations_for_node("tensorrt_engine")[0].metadata.items()}
    assert meta["status"] == "built" and meta["precision"] == "int8"
    cache_sha = sha256_file(tmp_path / "store" / where["cache"])
    assert meta["calibration"]["calibration_frames"] == 3 and meta["calibration"]["calibration_split"] == "train"
    assert meta["calibration"]["int8_calib_cache_sha256"] == cache_sha
    engine_file = tmp_path / "store" / f"models/{MODEL_NAME}/{MODEL_NAME}.engine"
    header = engine_file.read_bytes().split(b"\n", 1)[0].decode()
    assert f"precision=int8 calib_sha256={cache_sha}" in header  # trtexec got --int8 --calib=<that cache>
    sidecar = json.loads(engine_file.with_name(engine_file.name + ".json").read_text())
    assert sidecar["int8_calib_cache_sha256"] == cache_sha and "--int8" in sidecar["trtexec_command"]
    assert sidecar["calibration"]["calibration_frames"] == 3
