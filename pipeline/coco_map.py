"""COCO-style average precision (101-point interpolation, IoU 0.50:0.95), single or multi class.

Written to agree with the reference COCO evaluation (pycocotools) on the same predictions; a test
checks the agreement on real labelled images. Boxes are x1, y1, x2, y2; no crowd regions.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.boxes import iou_matrix

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
BOX = ["x1", "y1", "x2", "y2"]


def _match_image(gt: np.ndarray, det: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """tp flags (n_thresholds, n_det) for one image and class, detections in descending score."""
    ious = iou_matrix(det, gt)
    tp = np.zeros((len(IOU_THRESHOLDS), len(det)), dtype=bool)
    for t_index, threshold in enumerate(IOU_THRESHOLDS):
        taken = np.zeros(len(gt), dtype=bool)
        for d in range(len(det)):
            best, best_iou = -1, min(threshold, 1 - 1e-10)
            for g in range(len(gt)):
                if taken[g] or ious[d, g] < best_iou:
                    continue
                best, best_iou = g, ious[d, g]
            if best >= 0:
                taken[best] = True
                tp[t_index, d] = True
    return tp


def average_precision(gt: pd.DataFrame, preds: pd.DataFrame, *, max_dets: int = 100) -> dict:
    """AP per IoU threshold for one class. gt: frame_key + x1..y2; preds: frame_key + x1..y2 + conf."""
    gt_by = {k: g[BOX].to_numpy(float) for k, g in gt.groupby("frame_key")}
    scores_all, tps_all = [], []
    for key, g in preds.groupby("frame_key"):
        conf = g["conf"].to_numpy(float)
        order = np.argsort(-conf, kind="mergesort")[:max_dets]
        det = g[BOX].to_numpy(float)[order]
        tps_all.append(_match_image(gt_by.get(key, np.zeros((0, 4))), det, conf[order]))
        scores_all.append(conf[order])
    n_gt = int(sum(len(v) for v in gt_by.values()))
    if n_gt == 0:
        return {"ap50": float("nan"), "ap50_95": float("nan"), "per_threshold": [], "n_gt": 0}
    if not scores_all:
        return {"ap50": 0.0, "ap50_95": 0.0, "per_threshold": [0.0] * len(IOU_THRESHOLDS), "n_gt": n_gt}
    scores = np.concatenate(scores_all)
    order = np.argsort(-scores, kind="mergesort")
    tps = np.concatenate(tps_all, axis=1)[:, order]
    aps = []
    for tp in tps:
        tp_sum = np.cumsum(tp).astype(float)
        fp_sum = np.cumsum(~tp).astype(float)
        recall = tp_sum / n_gt
        precision = tp_sum / np.maximum(tp_sum + fp_sum, np.spacing(1))
        precision = np.maximum.accumulate(precision[::-1])[::-1]  # envelope: best precision at >= this recall
        idx = np.searchsorted(recall, RECALL_POINTS, side="left")
        q = np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0)
        aps.append(float(q.mean()))
    return {"ap50": aps[0], "ap50_95": float(np.mean(aps)), "per_threshold": aps, "n_gt": n_gt}


def precision_recall_at(gt: pd.DataFrame, preds: pd.DataFrame, conf: float, iou_threshold: float = 0.5) -> dict:
    """Precision and recall of detections at or above `conf` (one-to-one matching at the IoU)."""
    from pipeline.boxes import greedy_match

    kept = preds[preds["conf"] >= conf]
    gt_by = {k: g[BOX].to_numpy(float) for k, g in gt.groupby("frame_key")}
    tp = 0
    for key, g in kept.groupby("frame_key"):
        tp += len(greedy_match(gt_by.get(key, np.zeros((0, 4))), g[BOX].to_numpy(float), g["conf"].to_numpy(float),
                               iou_threshold))
    n_gt = sum(len(v) for v in gt_by.values())
    return {"conf": conf, "precision": tp / len(kept) if len(kept) else float("nan"),
            "recall": tp / n_gt if n_gt else float("nan"), "tp": tp, "n_pred": int(len(kept)), "n_gt": int(n_gt)}
