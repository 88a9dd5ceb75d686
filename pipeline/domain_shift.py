"""Domain-shift gap: how much worse (or better) the model does on post-install recordings (the
deployment test set) than on the frozen test split, with CIs clustered by video.

The two sets hold different videos, so the bootstrap resamples whole videos of each set
independently and takes the difference (deployment - test) of per-frame recall, median best-box
confidence and AP@0.5 in every draw.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.curves import ap50

MEASURES = ("recall", "median_best_conf", "map50")


def _video_parts(table: pd.DataFrame, flags: pd.DataFrame, cluster: str) -> list[tuple]:
    """Per video: per-frame recall and best conf (frames with a person), detection conf/tp flags, n_gt."""
    flags_by = flags.merge(table[["frame_key", cluster]], on="frame_key", how="inner")
    by_video = {v: g for v, g in flags_by.groupby(cluster)}
    parts = []
    for video, g in table.groupby(cluster):
        person = g[g["n_gt"] > 0]
        f = by_video.get(video, flags_by.iloc[:0])
        parts.append((person["recall"].to_numpy(float), person["best_conf"].to_numpy(float),
                      f["conf"].to_numpy(float), f["tp"].to_numpy(bool), int(g["n_gt"].sum())))
    return parts


def _measures(parts: list[tuple]) -> dict:
    recall = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0)
    conf = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0)
    return {"recall": float(recall.mean()) if len(recall) else float("nan"),
            "median_best_conf": float(np.median(conf)) if len(conf) else float("nan"),
            "map50": ap50(np.concatenate([p[2] for p in parts]), np.concatenate([p[3] for p in parts]),
                          sum(p[4] for p in parts))}


def domain_shift_gap(test: tuple[pd.DataFrame, pd.DataFrame], deployment: tuple[pd.DataFrame, pd.DataFrame], *,
                     cluster: str = "video_id", n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """`test` and `deployment` are (per-frame table, detection flags) pairs (detection_metrics.per_frame,
    curves.match_flags). Returns each set's measures, the gap (deployment - test) and its CI."""
    sides = {"test": _video_parts(*test, cluster), "deployment_test": _video_parts(*deployment, cluster)}
    point = {name: _measures(parts) for name, parts in sides.items()}
    gap = {m: point["deployment_test"][m] - point["test"][m] for m in MEASURES}
    rng = np.random.default_rng(seed)
    draws = {m: [] for m in MEASURES}
    if all(len(parts) >= 2 for parts in sides.values()):
        for _ in range(n_boot):
            drawn = {name: _measures([parts[i] for i in rng.integers(0, len(parts), len(parts))])
                     for name, parts in sides.items()}
            for m in MEASURES:
                draws[m].append(drawn["deployment_test"][m] - drawn["test"][m])
    alpha = (1 - level) / 2 * 100

    def interval(values: list[float]) -> list[float]:
        values = [v for v in values if v == v]
        return [float(np.percentile(values, alpha)), float(np.percentile(values, 100 - alpha))] if values \
            else [float("nan"), float("nan")]

    return {"test": point["test"], "deployment_test": point["deployment_test"], "gap": gap,
            "gap_ci": {m: interval(draws[m]) for m in MEASURES},
            "n_videos": {name: len(parts) for name, parts in sides.items()}, "direction": "deployment_test - test",
            "cluster": cluster, "n_boot": n_boot, "seed": seed, "level": level}
