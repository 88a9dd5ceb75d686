"""Paired comparison of two detectors on the same labelled frames, bootstrapped by video.

Both models are scored on exactly the same frames; the difference (B - A) of per-frame recall and
of best-box confidence is resampled by whole videos, so the interval reflects that frames of one
video are not independent. Used for fine-tuned vs off-the-shelf (Stage B) and candidate vs
production (Stage C).
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def paired_difference(a: pd.DataFrame, b: pd.DataFrame, *, by: str | None = None, cluster: str = "video_id",
                      n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Rows (overall, or one per value of `by`): mean recall and median best confidence of A and B,
    their difference B - A and its CI. `a` and `b` are per-frame tables (detection_metrics.per_frame)
    over the same frames."""
    columns = ["frame_key", cluster] + ([by] if by else [])
    merged = a[columns + ["n_gt", "recall", "best_conf"]].merge(
        b[["frame_key", "recall", "best_conf"]], on="frame_key", suffixes=("_a", "_b"))
    if len(merged) != len(a) or len(merged) != len(b):
        raise ValueError("paired comparison needs the same frames for both models")
    merged = merged[merged["n_gt"] > 0]
    groups = [("all", merged)] if by is None else list(merged.groupby(by))
    rng = np.random.default_rng(seed)
    alpha = (1 - level) / 2 * 100
    rows = []
    for name, table in groups:
        clusters = [g for _, g in table.groupby(cluster)]
        d_recall, d_conf = [], []
        if len(clusters) >= 2:
            parts = [(g["recall_a"].to_numpy(), g["recall_b"].to_numpy(), g["best_conf_a"].to_numpy(),
                      g["best_conf_b"].to_numpy()) for g in clusters]
            for _ in range(n_boot):
                pick = [parts[i] for i in rng.integers(0, len(parts), len(parts))]
                ra, rb, ca, cb = (np.concatenate([p[k] for p in pick]) for k in range(4))
                d_recall.append(rb.mean() - ra.mean())
                d_conf.append(np.median(cb) - np.median(ca))
        ci = (lambda v: [float(np.percentile(v, alpha)), float(np.percentile(v, 100 - alpha))] if v
              else [float("nan"), float("nan")])
        rows.append({
            (by or "subset"): name, "frames": len(table), "videos": len(clusters),
            "recall_a": table["recall_a"].mean(), "recall_b": table["recall_b"].mean(),
            "recall_diff": table["recall_b"].mean() - table["recall_a"].mean(), "recall_diff_ci": ci(d_recall),
            "median_conf_a": table["best_conf_a"].median(), "median_conf_b": table["best_conf_b"].median(),
            "median_conf_diff": table["best_conf_b"].median() - table["best_conf_a"].median(),
            "median_conf_diff_ci": ci(d_conf), "n_boot": n_boot, "seed": seed,
        })
    return pd.DataFrame(rows)
