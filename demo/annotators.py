"""Simulated CVAT annotators: COCO 1.0 export zips as CVAT writes them, from exact demo boxes."""
from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass

import numpy as np

Box = tuple[float, float, float, float]
_ZIP_TIME = (2026, 5, 14, 12, 0, 0)  # fixed member times: the same seed gives the same zip bytes


@dataclass(frozen=True)
class LabelledImage:
    file_name: str
    width: int
    height: int
    boxes: list[Box]


def careful(images: list[LabelledImage], rng: np.random.Generator) -> list[LabelledImage]:
    """The main annotator: sub-pixel differences from the truth only."""
    return [LabelledImage(im.file_name, im.width, im.height,
                          [_clip(_jitter(b, rng, 0.004), im) for b in im.boxes]) for im in images]


def second_opinion(images: list[LabelledImage], rng: np.random.Generator) -> list[LabelledImage]:
    """The overlap annotator: looser boxes, now and then misses a small person or adds a doubtful one."""
    result = []
    for im in images:
        boxes = []
        for b in im.boxes:
            small = (b[2] - b[0]) * (b[3] - b[1]) < 0.08 * im.width * im.height
            if rng.random() < (0.08 if small else 0.01):
                continue
            boxes.append(_clip(_jitter(b, rng, 0.03), im))
        if rng.random() < 0.02:
            w, h = im.width * 0.12, im.height * 0.35
            x, y = rng.uniform(0, im.width - w), rng.uniform(0, im.height - h)
            boxes.append((x, y, x + w, y + h))
        result.append(LabelledImage(im.file_name, im.width, im.height, boxes))
    return result


def _jitter(box: Box, rng: np.random.Generator, scale: float) -> Box:
    w, h = box[2] - box[0], box[3] - box[1]
    d = rng.normal(0, scale, 4) * np.array([w, h, w, h])
    return (box[0] + d[0], box[1] + d[1], box[2] + d[2], box[3] + d[3])


def _clip(box: Box, im: LabelledImage) -> Box:
    x1, y1 = max(0.0, box[0]), max(0.0, box[1])
    x2, y2 = min(float(im.width), box[2]), min(float(im.height), box[3])
    return (x1, y1, max(x2, x1 + 1.0), max(y2, y1 + 1.0))


def coco_export_zip(images: list[LabelledImage], label: str = "person") -> bytes:
    """Bytes of a CVAT "COCO 1.0" export zip (annotations/instances_default.json, no images)."""
    doc = {
        "licenses": [{"name": "", "id": 0, "url": ""}],
        "info": {"contributor": "", "date_created": "", "description": "", "url": "", "version": "", "year": ""},
        "categories": [{"id": 1, "name": label, "supercategory": ""}],
        "images": [],
        "annotations": [],
    }
    ann_id = 0
    for image_id, im in enumerate(images, start=1):
        doc["images"].append({"id": image_id, "width": im.width, "height": im.height, "file_name": im.file_name,
                              "license": 0, "flickr_url": "", "coco_url": "", "date_captured": 0})
        for x1, y1, x2, y2 in im.boxes:
            ann_id += 1
            w, h = round(x2 - x1, 2), round(y2 - y1, 2)
            doc["annotations"].append({"id": ann_id, "image_id": image_id, "category_id": 1, "segmentation": [],
                                       "area": round(w * h, 4), "bbox": [round(x1, 2), round(y1, 2), w, h],
                                       "iscrowd": 0, "attributes": {"occluded": False, "rotation": 0.0}})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo("annotations/instances_default.json", date_time=_ZIP_TIME)
        info.compress_type = zipfile.ZIP_DEFLATED
        archive.writestr(info, json.dumps(doc, separators=(",", ":")))
    return buffer.getvalue()
