"""CVAT 'COCO 1.0' instances JSON -> the parse buffer."""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from pipeline.cvat.common import _FORMAT_REMEDY, _NUMSET, _ALTERED, _Parsed, _size
from pipeline.errors import AnnotationError



def _parse_coco(data: bytes, source: str, subset: str, p: _Parsed) -> None:
    try:
        doc = json.loads(data)
    except UnicodeDecodeError as exc:
        raise AnnotationError(source, "encoding", f"byte {exc.start}", _ALTERED, problem="not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise AnnotationError(source, "json", f"line {exc.lineno} column {exc.colno} (char {exc.pos})", _ALTERED,
                              problem=f"malformed JSON: {exc.msg}") from exc
    if not isinstance(doc, dict):
        raise AnnotationError(source, "json", type(doc).__name__, _FORMAT_REMEDY, problem="JSON is not an object")
    if "items" in doc and "images" not in doc:
        raise AnnotationError(source, "format", "Datumaro JSON", _FORMAT_REMEDY, problem="unrecognised export format")
    for key in ("images", "annotations", "categories"):
        if key not in doc:
            raise AnnotationError(source, key, sorted(doc)[:10], _ALTERED + " (COCO needs images, annotations, "
                                  "categories)", problem="missing required key")
        if not isinstance(doc[key], list):
            raise AnnotationError(source, key, type(doc[key]).__name__, _ALTERED, problem="must be a list")
    p.set_format("coco", source)

    cat_name: dict[int, str] = {}
    for i, cat in enumerate(doc["categories"]):
        cid = _req(cat, "id", source, f"categories[{i}]")
        name = _req(cat, "name", source, f"categories[{i}]")
        if type(cid) is not int or not isinstance(name, str):
            raise AnnotationError(source, f"categories[{i}]", cat, _ALTERED, problem="category needs int id, str name")
        if cid in cat_name:
            raise AnnotationError(source, f"categories[{i}].id", cid, _ALTERED, problem="duplicate category id")
        cat_name[cid] = name

    img_index: dict[int, int] = {}
    base = len(p.img_id)
    for i, im in enumerate(doc["images"]):
        where = f"images[{i}]"
        iid = _req(im, "id", source, where)
        if type(iid) is not int:
            raise AnnotationError(source, f"{where}.id", iid, _ALTERED, problem="image id must be an integer")
        if iid in img_index:
            raise AnnotationError(source, f"{where}.id", iid, _ALTERED + "; every image needs its own id",
                                  problem="duplicate image id")
        name = _req(im, "file_name", source, where)
        if not isinstance(name, str) or not name:
            raise AnnotationError(source, f"{where}.file_name", name, _ALTERED, problem="empty file_name")
        w = _size(im.get("width"), source, f"{where} (id {iid}).width")
        h = _size(im.get("height"), source, f"{where} (id {iid}).height")
        img_index[iid] = base + i
        p.add_image(iid, name, w, h, subset, source)

    seen: set[int] = set()
    seen_add = seen.add
    img_get, cat_get = img_index.get, cat_name.get
    b_img, b_label, b_ref, b_raw = p.b_img.append, p.b_label.append, p.b_ref.append, p.b_raw.append
    b_rot, b_occ, b_track = p.b_rot.append, p.b_occ.append, p.b_track.append
    boxes: list[list] = []
    box = boxes.append
    num = _NUMSET
    for j, a in enumerate(doc["annotations"]):
        try:
            aid, iid, cid, bbox = a["id"], a["image_id"], a["category_id"], a["bbox"]
        except (KeyError, TypeError):
            for key in ("id", "image_id", "category_id", "bbox"):
                _req(a, key, source, f"annotations[{j}]")
            raise
        if type(aid) is not int:
            raise AnnotationError(source, f"annotations[{j}].id", aid, _ALTERED,
                                  problem="annotation id must be an integer")
        if aid in seen:
            raise AnnotationError(source, f"annotations[{j}].id", aid, _ALTERED + "; every annotation needs its own "
                                  "id", problem="duplicate annotation id")
        seen_add(aid)
        ii = img_get(iid) if type(iid) is int else None
        if ii is None:
            raise AnnotationError(source, f"annotations[{j}] (id {aid}).image_id", iid, _ALTERED + "; the image it "
                                  "refers to is not in 'images'", problem="dangling image_id")
        label = cat_get(cid) if type(cid) is int else None
        if label is None:
            raise AnnotationError(source, f"annotations[{j}] (id {aid}).category_id", cid, _ALTERED + "; the "
                                  f"category it refers to is not in 'categories' (ids {sorted(cat_name)})",
                                  problem="dangling category_id")
        if type(bbox) is not list or len(bbox) != 4 or type(bbox[0]) not in num or type(bbox[1]) not in num \
                or type(bbox[2]) not in num or type(bbox[3]) not in num:
            raise AnnotationError(source, f"annotations[{j}] (id {aid}).bbox", bbox, _ALTERED + "; a bbox is "
                                  "[x, y, width, height] in pixels", problem="malformed bbox")
        box(bbox)
        b_img(ii)
        b_label(label)
        attrs = a.get("attributes")
        if attrs and type(attrs) is dict:
            rot = attrs.get("rotation", 0.0)
            b_rot(rot if type(rot) in num else 0.0)
            b_occ(attrs.get("occluded") is True)
            track = attrs.get("track_id")
            b_track(track if type(track) is int else None)
        else:
            b_rot(0.0)
            b_occ(False)
            b_track(None)
        b_ref(j)
        b_raw(a)
    xywh = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    xywh[:, 2:] += xywh[:, :2]
    p.coords.append(xywh)


def _req(obj: Any, key: str, source: str, where: str) -> Any:
    if not isinstance(obj, dict):
        raise AnnotationError(source, where, obj, _ALTERED, problem="expected a JSON object")
    if key not in obj:
        raise AnnotationError(source, f"{where}.{key}", None, _ALTERED, problem="missing required key")
    return obj[key]
