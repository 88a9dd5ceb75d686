"""Raw YOLOv8 output -> detections in the frame's pixels, as Ultralytics' predict computes them.

Plain NumPy (no torch), so the device-side runner uses the same code. It follows
`ultralytics.utils.nms.non_max_suppression` (single label per box) step by step: candidates whose
best class score exceeds `conf` (strictly), that best class kept, then the class filter, at most
`max_nms` highest-scoring candidates, greedy NMS per class (boxes offset by class * 7680, IoU
strictly above `iou` suppresses, as torchvision.ops.nms), at most `max_det` kept; then
`scale_boxes`: padding removed, divided by the per-axis gain, clipped to the frame.
"""
from __future__ import annotations

import numpy as np

from pipeline.inference.letterbox import Geometry

MAX_WH = 7680
MAX_NMS = 30000
MAX_DET = 300


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float, limit: int | None = None) -> np.ndarray:
    """Indices kept by greedy NMS in descending score order (torchvision.ops.nms semantics);
    stops once `limit` boxes are kept (the same first `limit` as running to the end)."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    areas = (x2 - x1) * (y2 - y1)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        if limit is not None and len(keep) >= limit:
            break
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        overlap = inter / (areas[i] + areas[rest] - inter)
        order = rest[~(overlap > iou)]
    return np.asarray(keep, dtype=np.int64)


def non_max_suppression(raw: np.ndarray, *, conf: float, iou: float, classes: list[int] | None = None,
                        max_det: int = MAX_DET, max_nms: int = MAX_NMS) -> list[np.ndarray]:
    """(N, 4 + nc, anchors) -> per image an (n, 6) float32 array x1, y1, x2, y2, conf, class (input pixels)."""
    raw = np.asarray(raw, dtype=np.float32)
    if raw.ndim != 3:
        raise ValueError(f"expected a (batch, 4 + classes, anchors) output, got shape {raw.shape}")
    out = []
    for pred in raw:
        scores = pred[4:]
        best = scores.max(axis=0)
        cand = np.flatnonzero(best > conf)
        if not cand.size:
            out.append(np.zeros((0, 6), np.float32))
            continue
        cls = scores[:, cand].argmax(axis=0)
        score = best[cand]
        if classes is not None:
            keep = np.isin(cls, classes)
            cand, cls, score = cand[keep], cls[keep], score[keep]
        if not cand.size:
            out.append(np.zeros((0, 6), np.float32))
            continue
        if cand.size > max_nms:
            top = np.argsort(-score, kind="stable")[:max_nms]
            cand, cls, score = cand[top], cls[top], score[top]
        xywh = pred[:4, cand].T
        half = xywh[:, 2:] / 2
        xyxy = np.concatenate([xywh[:, :2] - half, xywh[:, :2] + half], axis=1)
        offset = (cls.astype(np.float32) * MAX_WH)[:, None]
        kept = nms(xyxy + offset, score, iou, limit=max_det)
        out.append(np.concatenate([xyxy[kept], score[kept, None], cls[kept, None].astype(np.float32)], axis=1))
    return out


def scale_boxes(det: np.ndarray, geo: Geometry) -> np.ndarray:
    """Detections from the network input back to the frame's pixels (in place; returned)."""
    if len(det):
        gain_y, gain_x = geo.gain
        det[:, [0, 2]] = (det[:, [0, 2]] - geo.left) / gain_x
        det[:, [1, 3]] = (det[:, [1, 3]] - geo.top) / gain_y
        h, w = geo.frame_shape
        det[:, [0, 2]] = det[:, [0, 2]].clip(0, w)
        det[:, [1, 3]] = det[:, [1, 3]].clip(0, h)
    return det


def postprocess(raw: np.ndarray, geometries: list[Geometry] | None, *, conf: float, iou: float,
                classes: list[int] | None = None, max_det: int = MAX_DET) -> list[np.ndarray]:
    """NMS and, when geometries are given, boxes back to each frame."""
    dets = non_max_suppression(raw, conf=conf, iou=iou, classes=classes, max_det=max_det)
    if geometries is not None:
        dets = [scale_boxes(d, g) for d, g in zip(dets, geometries)]
    return dets
