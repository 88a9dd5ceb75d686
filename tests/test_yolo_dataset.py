"""YOLO dataset writer: normalized labels, image/label pairing, the dataset yaml, Ultralytics reads it."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.errors import PipelineInputError
from pipeline.hashing import sha256_file
from pipeline.yolo_dataset import check_pairing, dataset_yaml, localize_yaml, write_yolo_dataset, yolo_label_lines

SPLIT_SHA = "ab" * 32
# (frame_key, split, width, height)
FRAMES = [("frames/ops/v1/000000010.jpg", "train", 64, 48),
          ("frames/ops/v2/000000020.jpg", "val", 80, 40),
          ("frames/photos/p1/000000000.jpg", "test", 50, 50)]  # the negative: nobody in it
BOXES = [("frames/ops/v1/000000010.jpg", 0, 8, 6, 40, 30),
         ("frames/ops/v1/000000010.jpg", 0, 0, 0, 64, 48),
         ("frames/ops/v2/000000020.jpg", 0, 20, 10, 60, 30)]
EXPECTED_LABELS = {
    # (8+40)/2/64 = 0.375, (6+30)/2/48 = 0.375, 32/64 = 0.5, 24/48 = 0.5; then the whole image.
    "train/ops__v1__000000010": "0 0.375000 0.375000 0.500000 0.500000\n0 0.500000 0.500000 1.000000 1.000000\n",
    # (20+60)/2/80 = 0.5, (10+30)/2/40 = 0.5, 40/80 = 0.5, 20/40 = 0.5
    "val/ops__v2__000000020": "0 0.500000 0.500000 0.500000 0.500000\n",
    "test/photos__p1__000000000": "",
}


@pytest.fixture
def dataset(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for key, split, width, height in FRAMES:
        path = src / key.replace("/", "_")
        image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        assert cv2.imwrite(str(path), image)
        rows.append({"frame_key": key, "split": split, "local_path": str(path), "width": width, "height": height})
    frames = pd.DataFrame(rows)
    boxes = pd.DataFrame(BOXES, columns=["frame_key", "class_id", "x1", "y1", "x2", "y2"])
    out = tmp_path / "dataset"
    counts = write_yolo_dataset(out, frames, boxes, ["person"], version="v0", split_sha256=SPLIT_SHA)
    return out, frames, counts


def test_label_lines_are_normalized_yolo(dataset):
    out, _, counts = dataset
    labels = {f"{p.parent.name}/{p.stem}": p.read_text() for p in (out / "labels").glob("*/*.txt")}
    assert labels == EXPECTED_LABELS
    assert counts == {"train": {"images": 1, "boxes": 2, "negatives": 0},
                      "val": {"images": 1, "boxes": 1, "negatives": 0},
                      "test": {"images": 1, "boxes": 0, "negatives": 1}}
    for text in labels.values():
        for line in text.splitlines():
            class_id, *values = line.split()
            assert class_id == "0"
            assert all(0.0 <= float(v) <= 1.0 for v in values)


def test_yolo_label_lines_uses_the_class_id_and_handles_no_boxes():
    table = pd.DataFrame([(2, 10, 20, 30, 60)], columns=["class_id", "x1", "y1", "x2", "y2"])
    assert yolo_label_lines(table, 100, 200) == "2 0.200000 0.200000 0.200000 0.200000\n"
    assert yolo_label_lines(table.iloc[0:0], 100, 200) == ""


def test_images_are_copied_and_pair_with_labels_by_stem(dataset):
    out, frames, _ = dataset
    for split in ("train", "val", "test"):
        images = sorted(p.stem for p in (out / "images" / split).glob("*.jpg"))
        labels = sorted(p.stem for p in (out / "labels" / split).glob("*.txt"))
        assert images == labels and len(images) == 1
    for row in frames.itertuples():
        stem = Path(row.frame_key.split("/", 1)[1].replace("/", "__")).stem
        copied = out / "images" / row.split / f"{stem}.jpg"
        assert sha256_file(copied) == sha256_file(row.local_path)  # bytes untouched
        assert cv2.imread(str(copied)).shape[:2] == (row.height, row.width)
    assert not (out / "images" / "deployment_test").exists()
    check_pairing(out)  # a consistent dataset passes


def test_check_pairing_raises_on_a_missing_label_file(dataset):
    out, _, _ = dataset
    (out / "labels" / "val" / "ops__v2__000000020.txt").unlink()
    with pytest.raises(PipelineInputError) as error:
        check_pairing(out)
    assert error.value.field == "stem"
    assert error.value.value == ["ops__v2__000000020"]
    assert error.value.file.endswith("val")
    assert "rebuild the dataset" in error.value.remedy


def test_check_pairing_raises_on_a_label_without_image(dataset):
    out, _, _ = dataset
    (out / "labels" / "train" / "stray.txt").write_text("")
    with pytest.raises(PipelineInputError) as error:
        check_pairing(out)
    assert error.value.value == ["stray"]


def test_an_unknown_split_is_refused(tmp_path):
    path = tmp_path / "a.jpg"
    assert cv2.imwrite(str(path), np.zeros((8, 8, 3), np.uint8))
    frames = pd.DataFrame([{"frame_key": "frames/ops/v1/1.jpg", "split": "holdout", "local_path": str(path),
                            "width": 8, "height": 8}])
    boxes = pd.DataFrame(columns=["frame_key", "class_id", "x1", "y1", "x2", "y2"])
    with pytest.raises(PipelineInputError) as error:
        write_yolo_dataset(tmp_path / "out", frames, boxes, ["person"], version="v0", split_sha256=SPLIT_SHA)
    assert error.value.field == "split" and error.value.value == "holdout"


def test_dataset_yaml_loads_with_names_and_split_sha():
    text = dataset_yaml("datasets/lbzf_person_v0", ["person"], version="v0", split_sha256=SPLIT_SHA,
                        splits=["test", "train", "val"])
    doc = yaml.safe_load(text)
    assert doc["names"] == {0: "person"}
    assert doc["lbzf_split_sha256"] == SPLIT_SHA
    assert doc["lbzf_version"] == "v0"
    assert doc["path"] == "datasets/lbzf_person_v0"
    assert (doc["train"], doc["val"], doc["test"]) == ("images/train", "images/val", "images/test")
    assert "deployment_test" not in doc

    with_deployment = yaml.safe_load(dataset_yaml("x", ["person"], version="v0", split_sha256=SPLIT_SHA,
                                                  splits=["train", "val", "deployment_test"]))
    assert with_deployment["deployment_test"] == "images/deployment_test"
    assert "test" not in with_deployment


def test_localize_yaml_makes_the_path_absolute_and_keeps_the_rest(tmp_path, monkeypatch):
    stored = dataset_yaml("datasets/lbzf_person_v0", ["person"], version="v0", split_sha256=SPLIT_SHA,
                          splits=["train", "val", "test"])
    monkeypatch.chdir(tmp_path)
    local = yaml.safe_load(localize_yaml(stored, Path("copy")))  # a relative root resolves against the cwd
    assert Path(local["path"]).is_absolute()
    assert Path(local["path"]) == (tmp_path / "copy").resolve()
    original = yaml.safe_load(stored)
    assert {k: v for k, v in local.items() if k != "path"} == {k: v for k, v in original.items() if k != "path"}


def test_ultralytics_reads_the_dataset_offline(dataset):
    from pipeline.offline import configure_offline

    configure_offline()  # the same process-wide settings every Ultralytics caller uses
    from ultralytics.data.utils import check_det_dataset

    out, _, _ = dataset
    stored = dataset_yaml("datasets/lbzf_person_v0", ["person"], version="v0", split_sha256=SPLIT_SHA,
                          splits=["train", "val", "test"])
    yaml_path = out / "lbzf_person_v0.yaml"
    yaml_path.write_text(localize_yaml(stored, out))
    data = check_det_dataset(str(yaml_path))
    assert data["nc"] == 1
    assert data["names"] == {0: "person"}
    for split in ("train", "val", "test"):
        assert Path(data[split]) == (out / "images" / split).resolve()
        assert Path(data[split]).is_dir()
