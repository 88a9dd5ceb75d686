"""Write a YOLO dataset (images/ + labels/ per split, paired by stem) and its dataset yaml."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import yaml

from pipeline.errors import PipelineInputError
from pipeline.keys import package_file_name

DATASET_SPLITS = ("train", "val", "test", "deployment_test")


def yolo_label_lines(boxes: pd.DataFrame, width: int, height: int) -> str:
    lines = []
    for b in boxes.itertuples():
        cx, cy = (b.x1 + b.x2) / 2 / width, (b.y1 + b.y2) / 2 / height
        w, h = (b.x2 - b.x1) / width, (b.y2 - b.y1) / height
        lines.append(f"{int(b.class_id)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return "\n".join(lines) + ("\n" if lines else "")


def write_yolo_dataset(out_dir: Path, frames: pd.DataFrame, boxes: pd.DataFrame, classes: list[str], *,
                       version: str, split_sha256: str) -> dict:
    """`frames`: frame_key, split, local_path, width, height (one row per labelled frame, negatives
    included); `boxes`: frame_key, class_id, x1..y2 in pixels. Every image gets a label file (empty
    for a frame with nobody), so image and label stems are equal sets by construction."""
    out_dir = Path(out_dir)
    outside = sorted(set(boxes["class_id"].astype(int)) - set(range(len(classes)))) if len(boxes) else []
    if outside:
        raise PipelineInputError("annotations", "class_id", outside[0], f"map every label to one of {classes} "
                                 "(annotations config `classes` and `label_mapping`) and import the exports again",
                                 problem="box of a class outside the dataset's class list")
    by_frame = {k: g for k, g in boxes.groupby("frame_key")}
    counts: dict[str, dict[str, int]] = {}
    for row in frames.itertuples():
        if row.split not in DATASET_SPLITS:
            raise PipelineInputError("dataset_split", "split", row.split, f"use one of {DATASET_SPLITS}")
        stem = Path(package_file_name(row.frame_key)).stem
        image = out_dir / "images" / row.split / f"{stem}.jpg"
        label = out_dir / "labels" / row.split / f"{stem}.txt"
        image.parent.mkdir(parents=True, exist_ok=True)
        label.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(row.local_path, image)
        frame_boxes = by_frame.get(row.frame_key, boxes.iloc[0:0])
        label.write_text(yolo_label_lines(frame_boxes, int(row.width), int(row.height)))
        c = counts.setdefault(row.split, {"images": 0, "boxes": 0, "negatives": 0})
        c["images"] += 1
        c["boxes"] += len(frame_boxes)
        c["negatives"] += int(len(frame_boxes) == 0)
    check_pairing(out_dir)
    return counts


def check_pairing(out_dir: Path) -> None:
    """Images and labels must pair by stem in every split."""
    for split in DATASET_SPLITS:
        images = {p.stem for p in (out_dir / "images" / split).glob("*.jpg")}
        labels = {p.stem for p in (out_dir / "labels" / split).glob("*.txt")}
        if images != labels:
            odd = sorted(images ^ labels)[:5]
            raise PipelineInputError(str(out_dir / split), "stem", odd, "rebuild the dataset: every image needs "
                                     "exactly one label file with the same stem", problem="unpaired images/labels")


def dataset_yaml(path: str, classes: list[str], *, version: str, split_sha256: str, splits: list[str]) -> str:
    """Ultralytics dataset yaml. `path` is absolute for training, or store-relative in the stored copy."""
    doc = {"path": path, "train": "images/train", "val": "images/val"}
    if "test" in splits:
        doc["test"] = "images/test"
    if "deployment_test" in splits:
        doc["deployment_test"] = "images/deployment_test"
    doc["names"] = {i: name for i, name in enumerate(classes)}
    doc["lbzf_version"] = version
    doc["lbzf_split_sha256"] = split_sha256
    return yaml.safe_dump(doc, sort_keys=False)


def localize_yaml(stored_yaml: str, local_root: Path) -> str:
    """The stored yaml with `path` made absolute for a dataset copied to `local_root`."""
    doc = yaml.safe_load(stored_yaml)
    doc["path"] = str(Path(local_root).resolve())
    return yaml.safe_dump(doc, sort_keys=False)


def files_under(root: Path) -> list[Path]:
    return sorted(Path(dirpath) / f for dirpath, _, names in os.walk(root) for f in names)
