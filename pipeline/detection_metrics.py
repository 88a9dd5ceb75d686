"""Per-frame detection measures used by Stage A and every evaluation after it.

For each labelled frame: how many labelled persons there are, how many the detector found at
IoU >= 0.5 (one-to-one, highest confidence first), the confidence of the best person box (0 when the
detector returned none), and the false positives (detections at or above `fp_conf` matching no
labelled person). Per-frame recall is matched / labelled, on frames that hold at least one person.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.boxes import greedy_match

BOX = ["x1", "y1", "x2", "y2"]


def per_frame(frames: pd.DataFrame, gt: pd.DataFrame, preds: pd.DataFrame, *, iou_threshold: float = 0.5,
              fp_conf: float = 0.25) -> pd.DataFrame:
    """One row per frame of `frames` (frame_key + any grouping columns) with n_gt, n_found, recall,
    best_conf, n_fp. `gt` has frame_key + x1..y2; `preds` has frame_key + x1..y2 + conf (person class)."""
    gt_by = {k: g[BOX].to_numpy(float) for k, g in gt.groupby("frame_key")}
    pr_by = {k: (g[BOX].to_numpy(float), g["conf"].to_numpy(float)) for k, g in preds.groupby("frame_key")}
    empty = (np.zeros((0, 4)), np.zeros(0))
    rows = []
    for key in frames["frame_key"]:
        boxes = gt_by.get(key, np.zeros((0, 4)))
        p_boxes, p_conf = pr_by.get(key, empty)
        matches = greedy_match(boxes, p_boxes, p_conf, iou_threshold)
        matched_preds = {p for _, p, _ in matches}
        n_fp = int(sum(1 for i, c in enumerate(p_conf) if c >= fp_conf and i not in matched_preds))
        rows.append({"frame_key": key, "n_gt": len(boxes), "n_found": len(matches),
                     "recall": len(matches) / len(boxes) if len(boxes) else np.nan,
                     "best_conf": float(p_conf.max()) if len(p_conf) else 0.0, "n_fp": n_fp})
    result = pd.DataFrame(rows, columns=["frame_key", "n_gt", "n_found", "recall", "best_conf", "n_fp"])
    return frames.reset_index(drop=True).merge(result, on="frame_key", how="left")


def summary(table: pd.DataFrame) -> dict:
    """Point estimates over frames that hold a person (recall, median best confidence) and FP counts."""
    with_person = table[table["n_gt"] > 0]
    return {
        "n_frames": int(len(table)),
        "n_frames_with_person": int(len(with_person)),
        "recall": float(with_person["recall"].mean()) if len(with_person) else float("nan"),
        "object_recall": float(with_person["n_found"].sum() / max(with_person["n_gt"].sum(), 1)),
        "median_best_conf": float(with_person["best_conf"].median()) if len(with_person) else float("nan"),
        "false_positives": int(table["n_fp"].sum()),
        "fp_per_frame": float(table["n_fp"].mean()) if len(table) else float("nan"),
    }


def cluster_bootstrap(table: pd.DataFrame, cluster: str = "video_id", *, n_boot: int = 2000, seed: int = 0,
                      level: float = 0.95) -> dict:
    """Percentile CIs for recall and median best confidence, resampling whole clusters (videos):
    frames of one video are not independent, so resampling frames would understate the uncertainty."""
    with_person = table[table["n_gt"] > 0]
    groups = [g for _, g in with_person.groupby(cluster)]
    rng = np.random.default_rng(seed)
    recalls, medians = [], []
    if len(groups) >= 2:
        recall_parts = [g["recall"].to_numpy(float) for g in groups]
        conf_parts = [g["best_conf"].to_numpy(float) for g in groups]
        for _ in range(n_boot):
            pick = rng.integers(0, len(groups), len(groups))
            recalls.append(np.concatenate([recall_parts[i] for i in pick]).mean())
            medians.append(np.median(np.concatenate([conf_parts[i] for i in pick])))
    alpha = (1 - level) / 2 * 100

    def interval(values: list[float]) -> list[float]:
        return [float("nan"), float("nan")] if not values else [float(np.percentile(values, alpha)),
                                                                 float(np.percentile(values, 100 - alpha))]

    return {"recall_ci": interval(recalls), "median_best_conf_ci": interval(medians), "n_clusters": len(groups),
            "n_frames": int(len(with_person)), "n_boot": n_boot, "seed": seed, "level": level, "cluster": cluster}


def breakdown(table: pd.DataFrame, by: str) -> pd.DataFrame:
    """Recall, median best confidence and FPs per value of `by` (operation, camera)."""
    rows = []
    for value, g in table.groupby(by):
        s = summary(g)
        rows.append({by: value, "frames": s["n_frames"], "recall": s["recall"],
                     "median_best_conf": s["median_best_conf"], "false_positives": s["false_positives"]})
    return pd.DataFrame(rows)
