"""Does the TensorRT engine detect what the PyTorch model detects? A pure comparison.

Given the labelled validation frames, their person boxes, and two prediction tables for the same
frames (PyTorch, and the engine run on the device), `compare_engine` scores both with the same
COCO-style AP@0.5 (`pipeline.coco_map`) and passes when the engine's mAP@0.5 is within `delta` of
PyTorch's (either way: an engine that scores much *better* than the model it was built from is as
suspect as one that scores worse), and, when a latency budget is set, when the engine's median
latency per frame is within it.

Tables: `gt` has frame_key, x1, y1, x2, y2; predictions add conf (person class only, boxes in the
frame's pixels). The comparison refuses predictions for frames outside `frames` (two tables of
different frames would compare nothing), and fails (rather than passes) when there is nothing to
compare: no frames, or no labelled person on them.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from pipeline.coco_map import average_precision

DEFAULT_DELTA = 0.02  # mAP@0.5 points (0.02 = 2 points); FP16 typically moves < 0.005, INT8 < 0.02


@dataclass
class EngineValidation:
    frames: int
    persons: int
    map50_pytorch: float
    map50_engine: float
    map50_diff: float  # engine - pytorch
    delta: float
    latency_ms_engine: dict = field(default_factory=dict)  # median, p95, mean, max per frame
    latency_ms_pytorch: dict = field(default_factory=dict)
    max_latency_ms: float | None = None
    passed: bool = False
    reasons: list[str] = field(default_factory=list)

    def to_metadata(self) -> dict:
        out = asdict(self)
        for key in ("map50_pytorch", "map50_engine", "map50_diff"):
            if isinstance(out[key], float) and math.isnan(out[key]):
                out[key] = None  # JSON has no NaN
        return out

    @property
    def summary(self) -> str:
        if self.passed:
            return (f"engine mAP@0.5 {self.map50_engine:.4f} vs PyTorch {self.map50_pytorch:.4f} on {self.frames} "
                    f"validation frames (diff {self.map50_diff:+.4f}, within ±{self.delta})")
        return "; ".join(self.reasons)


def latency_summary(values: Sequence[float]) -> dict:
    """median, p95, mean and max of per-frame latencies in ms ({} when none were measured)."""
    data = np.asarray([float(v) for v in values if v is not None and np.isfinite(v)], dtype=float)
    if not len(data):
        return {}
    return {"frames": int(len(data)), "median": round(float(np.median(data)), 4),
            "p95": round(float(np.percentile(data, 95)), 4), "mean": round(float(data.mean()), 4),
            "max": round(float(data.max()), 4)}


def _restrict(table: pd.DataFrame, frames: set[str], what: str) -> pd.DataFrame:
    missing = {"frame_key", "x1", "y1", "x2", "y2"} - set(table.columns)
    if missing:
        raise ValueError(f"{what} table lacks columns {sorted(missing)}")
    outside = sorted(set(table["frame_key"]) - frames)
    if outside:
        raise ValueError(f"{what} table has rows for {len(outside)} frame(s) that are not validation frames "
                         f"(e.g. {outside[:3]}); compare predictions on the same frames")
    return table


def compare_engine(frames: Sequence[str], gt: pd.DataFrame, pytorch: pd.DataFrame, engine: pd.DataFrame, *,
                   delta: float = DEFAULT_DELTA, engine_latency_ms: Sequence[float] = (),
                   pytorch_latency_ms: Sequence[float] = (), max_latency_ms: float | None = None) -> EngineValidation:
    """Engine vs PyTorch on the same validation frames: mAP@0.5 difference within `delta`, latency
    within `max_latency_ms` (when set). Never raises for a bad engine: the result says why it failed."""
    if delta < 0:
        raise ValueError(f"delta must be >= 0 (got {delta})")
    keys = [str(k) for k in frames]
    universe = set(keys)
    gt = _restrict(gt, universe, "ground truth")
    pytorch = _restrict(pytorch, universe, "PyTorch prediction")
    engine = _restrict(engine, universe, "engine prediction")
    for name, table in (("PyTorch prediction", pytorch), ("engine prediction", engine)):
        if "conf" not in table.columns:
            raise ValueError(f"{name} table lacks the conf column")
    reasons: list[str] = []
    n_persons = int(len(gt))
    if not keys:
        reasons.append("no validation frames: nothing was compared")
    elif n_persons == 0:
        reasons.append(f"the {len(keys)} validation frame(s) hold no labelled person: mAP@0.5 is undefined")
    ap_t = average_precision(gt, pytorch)["ap50"] if keys and n_persons else float("nan")
    ap_e = average_precision(gt, engine)["ap50"] if keys and n_persons else float("nan")
    diff = ap_e - ap_t
    if not reasons and abs(diff) > delta + 1e-12:
        reasons.append(f"engine mAP@0.5 {ap_e:.4f} differs from PyTorch {ap_t:.4f} by {diff:+.4f}, outside ±{delta} "
                       f"on {len(keys)} validation frames")
    lat_e, lat_t = latency_summary(engine_latency_ms), latency_summary(pytorch_latency_ms)
    if max_latency_ms is not None and max_latency_ms > 0:
        if not lat_e:
            reasons.append(f"a latency budget of {max_latency_ms} ms is set but the engine's latency was not measured")
        elif lat_e["median"] > max_latency_ms:
            reasons.append(f"engine median latency {lat_e['median']:.2f} ms per frame exceeds the budget of "
                           f"{max_latency_ms} ms")
    return EngineValidation(frames=len(keys), persons=n_persons, map50_pytorch=float(ap_t), map50_engine=float(ap_e),
                            map50_diff=float(diff), delta=float(delta), latency_ms_engine=lat_e,
                            latency_ms_pytorch=lat_t,
                            max_latency_ms=float(max_latency_ms) if max_latency_ms else None,
                            passed=not reasons, reasons=reasons)


def predictions_table(frame_key: str, detections: np.ndarray) -> pd.DataFrame:
    """(n, >=5) x1, y1, x2, y2, conf[, class] rows of one frame -> a prediction table."""
    det = np.asarray(detections, dtype=float)
    if det.size == 0:
        det = np.zeros((0, 6))
    return pd.DataFrame({"frame_key": [frame_key] * len(det), "x1": det[:, 0], "y1": det[:, 1], "x2": det[:, 2],
                         "y2": det[:, 3], "conf": det[:, 4]})


VALIDATION_SPLIT = "val"


def validation_frames(split: pd.DataFrame, chosen: pd.DataFrame, boxes: pd.DataFrame,
                      n: int) -> tuple[list[str], pd.DataFrame]:
    """Up to n labelled frames of the val split (evenly spread over the sorted keys) and their person
    boxes; `chosen` and `boxes` are the main annotator's labels (pipeline.labels.primary_labels)."""
    labelled = set(chosen["frame_key"])
    pool = sorted(k for k in split.loc[split["split"] == VALIDATION_SPLIT, "frame_key"] if k in labelled)
    if len(pool) > n:
        step = len(pool) / n
        pool = [pool[int(i * step)] for i in range(n)]
    boxes = boxes[boxes["frame_key"].isin(set(pool)) & (boxes["class_name"] == "person")]
    return pool, boxes[["frame_key", "x1", "y1", "x2", "y2"]].reset_index(drop=True)
