"""Box geometry and greedy matching at an IoU threshold (the matching every metric here uses)."""
from __future__ import annotations

import numpy as np


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between every box in a (N,4) and b (M,4), boxes as x1, y1, x2, y2."""
    a = np.asarray(a, dtype=float).reshape(-1, 4)
    b = np.asarray(b, dtype=float).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def greedy_match(gt: np.ndarray, pred: np.ndarray, scores: np.ndarray | None = None,
                 iou_threshold: float = 0.5) -> list[tuple[int, int, float]]:
    """One-to-one matches (gt_index, pred_index, iou): predictions in descending score order each
    take the unmatched ground-truth box they overlap most, if that overlap reaches the threshold
    (the COCO/VOC rule)."""
    ious = iou_matrix(gt, pred)
    if ious.size == 0:
        return []
    order = np.argsort(-np.asarray(scores), kind="stable") if scores is not None else np.arange(ious.shape[1])
    taken = np.zeros(ious.shape[0], dtype=bool)
    matches = []
    for p in order:
        column = np.where(taken, -1.0, ious[:, p])
        g = int(np.argmax(column))
        if column[g] >= iou_threshold:
            taken[g] = True
            matches.append((g, int(p), float(column[g])))
    return matches
