"""Precision-recall and F1-confidence curves, and the AP@0.5 of a resample, from one matching pass.

Matching is greedy, highest confidence first (pipeline/boxes.greedy_match), so whether a detection
is a true positive does not depend on detections below it: one pass over all detections gives, for
every confidence threshold c, exactly what `precision_recall_at(c)` would (a test checks this).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.boxes import greedy_match
from pipeline.coco_map import RECALL_POINTS

BOX = ["x1", "y1", "x2", "y2"]
CONF_GRID = np.round(np.linspace(0.0, 1.0, 101), 2)


def match_flags(gt: pd.DataFrame, preds: pd.DataFrame, *, iou_threshold: float = 0.5,
                max_dets: int | None = None) -> pd.DataFrame:
    """One row per detection: frame_key, conf, tp (matched a labelled box at the IoU). With max_dets,
    only each frame's top detections count (COCO keeps 100)."""
    gt_by = {k: g[BOX].to_numpy(float) for k, g in gt.groupby("frame_key")}
    rows = []
    for key, g in preds.groupby("frame_key"):
        conf = g["conf"].to_numpy(float)
        order = np.argsort(-conf, kind="mergesort")[:max_dets]
        boxes, conf = g[BOX].to_numpy(float)[order], conf[order]
        matched = {p for _, p, _ in greedy_match(gt_by.get(key, np.zeros((0, 4))), boxes, conf, iou_threshold)}
        rows.extend((key, float(c), i in matched) for i, c in enumerate(conf))
    return pd.DataFrame(rows, columns=["frame_key", "conf", "tp"])


def pr_table(flags: pd.DataFrame, n_gt: int, grid: np.ndarray = CONF_GRID) -> pd.DataFrame:
    """Precision, recall and F1 of the detections at or above each confidence of `grid`."""
    conf = flags["conf"].to_numpy(float)
    tp = flags["tp"].to_numpy(bool)
    order = np.argsort(-conf, kind="mergesort")
    conf, tp = conf[order], tp[order]
    tp_cum = np.concatenate([[0], np.cumsum(tp)])
    rows = []
    for c in grid:
        kept = int(np.searchsorted(-conf, -c, side="right"))  # detections with conf >= c
        hits = int(tp_cum[kept])
        precision = hits / kept if kept else float("nan")
        recall = hits / n_gt if n_gt else float("nan")
        f1 = 2 * precision * recall / (precision + recall) if kept and n_gt and precision + recall > 0 else 0.0
        rows.append({"conf": float(c), "precision": precision, "recall": recall, "f1": f1, "tp": hits,
                     "n_pred": kept})
    return pd.DataFrame(rows)


def ap50(conf: np.ndarray, tp: np.ndarray, n_gt: int) -> float:
    """COCO 101-point AP from detections' confidences and true-positive flags (at one IoU)."""
    if n_gt == 0:
        return float("nan")
    if len(conf) == 0:
        return 0.0
    order = np.argsort(-np.asarray(conf, float), kind="mergesort")
    hits = np.asarray(tp, bool)[order]
    tp_sum = np.cumsum(hits).astype(float)
    fp_sum = np.cumsum(~hits).astype(float)
    recall = tp_sum / n_gt
    precision = np.maximum.accumulate((tp_sum / np.maximum(tp_sum + fp_sum, np.spacing(1)))[::-1])[::-1]
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    return float(np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0).mean())


def pr_curve(flags: pd.DataFrame, n_gt: int) -> pd.DataFrame:
    """The interpolated precision-recall curve (COCO's envelope) at the 101 recall points."""
    conf, tp = flags["conf"].to_numpy(float), flags["tp"].to_numpy(bool)
    if n_gt == 0 or len(conf) == 0:
        return pd.DataFrame({"recall": RECALL_POINTS, "precision": np.zeros(len(RECALL_POINTS))})
    order = np.argsort(-conf, kind="mergesort")
    hits = tp[order]
    tp_sum = np.cumsum(hits).astype(float)
    recall = tp_sum / n_gt
    precision = np.maximum.accumulate((tp_sum / np.arange(1, len(hits) + 1))[::-1])[::-1]
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    q = np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0)
    return pd.DataFrame({"recall": RECALL_POINTS, "precision": q})
