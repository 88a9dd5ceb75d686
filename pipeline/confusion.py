"""Detection confusion matrix: which labelled class each detection landed on, with a background
row and column (Ultralytics' layout, transposed so that rows are the truth).

Matching is the one every other measure here uses (pipeline/boxes.greedy_match): detections at or
above `conf`, highest confidence first, each take the unmatched labelled box they overlap most at
IoU >= `iou_threshold`, whatever the classes. A matched pair counts in [true class, predicted class];
a labelled box nobody matched counts in [true class, background] (a miss); a detection that matched
nothing counts in [background, predicted class] (a false positive). With one class this is
person vs background and its counts equal the evaluation's: true positives and false positives of
`precision_recall_at(conf)`, and the false positives of `per_frame(fp_conf=conf)`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.boxes import greedy_match
from pipeline.errors import PipelineInputError

BOX = ["x1", "y1", "x2", "y2"]
BACKGROUND = "background"


def _class_column(table: pd.DataFrame, classes: list[str], what: str) -> np.ndarray:
    """Class index of every row: from class_name, else everything is the first (only) class."""
    if "class_name" not in table.columns:
        if len(classes) > 1:
            raise PipelineInputError(what, "class_name", None, f"give every row a class_name (one of {classes})",
                                     problem="several classes but no class_name column")
        return np.zeros(len(table), dtype=int)
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(table["class_name"]) - set(index))
    if unknown:
        raise PipelineInputError(what, "class_name", unknown[0],
                                 f"map it to one of {classes} in the label mapping or drop those rows",
                                 problem="class not in the class list")
    return table["class_name"].map(index).to_numpy(int)


def confusion_matrix(gt: pd.DataFrame, preds: pd.DataFrame, classes: list[str] | None = None, *,
                     conf: float = 0.25, iou_threshold: float = 0.5) -> dict:
    """The matrix as a dict: labels (classes + background), matrix[true][predicted] (lists of ints),
    and the totals an operator checks it against (labelled boxes, detections kept, matched, misses,
    false positives, class confusions)."""
    classes = list(classes or ["person"])
    n = len(classes)
    matrix = np.zeros((n + 1, n + 1), dtype=int)
    gt = gt.assign(_cls=_class_column(gt, classes, "ground truth boxes"))
    kept = preds[preds["conf"] >= conf]
    kept = kept.assign(_cls=_class_column(kept, classes, "predictions"))
    gt_by = {k: g for k, g in gt.groupby("frame_key")}
    pred_by = {k: g for k, g in kept.groupby("frame_key")}
    for key in set(gt_by) | set(pred_by):
        g = gt_by.get(key, gt.iloc[:0])
        p = pred_by.get(key, kept.iloc[:0])
        g_cls, p_cls = g["_cls"].to_numpy(int), p["_cls"].to_numpy(int)
        matches = greedy_match(g[BOX].to_numpy(float), p[BOX].to_numpy(float), p["conf"].to_numpy(float),
                               iou_threshold)
        matched_g, matched_p = {m[0] for m in matches}, {m[1] for m in matches}
        for gi, pi, _ in matches:
            matrix[g_cls[gi], p_cls[pi]] += 1
        for gi in set(range(len(g))) - matched_g:
            matrix[g_cls[gi], n] += 1
        for pi in set(range(len(p))) - matched_p:
            matrix[n, p_cls[pi]] += 1
    matched = int(matrix[:n, :n].sum())
    return {
        "labels": classes + [BACKGROUND], "rows": "true class", "columns": "predicted class",
        "matrix": matrix.tolist(), "conf": conf, "iou_threshold": iou_threshold,
        "totals": {"gt_boxes": int(matrix[:n, :].sum()), "detections": int(matrix[:, :n].sum()),
                   "matched": matched, "correct_class": int(np.trace(matrix[:n, :n])),
                   "class_confusions": matched - int(np.trace(matrix[:n, :n])),
                   "misses": int(matrix[:n, n].sum()), "false_positives": int(matrix[n, :n].sum())},
    }


def normalized(matrix: list[list[int]]) -> np.ndarray:
    """Each true-class row as fractions of its boxes (the background row: of all false positives)."""
    values = np.asarray(matrix, dtype=float)
    sums = values.sum(axis=1, keepdims=True)
    return np.divide(values, sums, out=np.zeros_like(values), where=sums > 0)
