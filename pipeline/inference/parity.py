"""Detection parity: does a backend find the same boxes as the PyTorch reference on the same frames?

The stated tolerance (issue: "the same boxes above conf, with IoU >= 0.99 between matched boxes"):
every box one side reports with a confidence clearly above the threshold must be matched one-to-one
by a box of the other side with IoU >= `min_iou`, their confidences within `conf_tolerance`. A box
within `conf_tolerance` of the cut (conf, or the lowest confidence kept when a side hit max_det)
may be missing on the other side: float rounding can move it across the cut and nothing else.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from pipeline.boxes import greedy_match

MIN_IOU = 0.99
CONF_TOLERANCE = 0.005


@dataclass
class Parity:
    frames: int
    boxes_reference: int
    boxes_backend: int
    matched: int
    unmatched_reference: int  # above the cut on the reference side, missing on the backend side
    unmatched_backend: int
    borderline_unmatched: int  # unmatched but within conf_tolerance of the cut: allowed
    min_iou: float  # lowest IoU of a matched pair (1.0 when there was none)
    max_conf_diff: float
    max_raw_diff: float | None
    conf: float
    min_iou_required: float
    conf_tolerance: float
    passed: bool
    reason: str

    def to_metadata(self) -> dict:
        return asdict(self)


def _five(det) -> np.ndarray:
    det = np.asarray(det, float)
    return np.zeros((0, 5)) if det.size == 0 else det.reshape(len(det), -1)[:, :5]


def _cut(det: np.ndarray, conf: float, max_det: int) -> float:
    return float(det[:, 4].min()) if len(det) >= max_det else conf


def detection_parity(reference: list[np.ndarray], backend: list[np.ndarray], *, conf: float, max_det: int = 300,
                     min_iou: float = MIN_IOU, conf_tolerance: float = CONF_TOLERANCE,
                     max_raw_diff: float | None = None) -> Parity:
    """Compare per-frame (n, >=5) x1, y1, x2, y2, conf detections of the reference and a backend."""
    if len(reference) != len(backend):
        raise ValueError(f"parity needs the same frames on both sides ({len(reference)} vs {len(backend)})")
    n_ref = n_back = matched = miss_ref = miss_back = border = 0
    worst_iou, worst_conf = 1.0, 0.0
    for ref, got in zip(reference, backend):
        ref, got = _five(ref), _five(got)
        n_ref, n_back = n_ref + len(ref), n_back + len(got)
        pairs = greedy_match(ref[:, :4], got[:, :4], got[:, 4], iou_threshold=0.5)
        matched += len(pairs)
        for r, g, iou in pairs:
            worst_iou = min(worst_iou, iou)
            worst_conf = max(worst_conf, abs(ref[r, 4] - got[g, 4]))
        cut = max(_cut(ref, conf, max_det), _cut(got, conf, max_det)) + conf_tolerance
        for side, det, used in ((0, ref, {r for r, _, _ in pairs}), (1, got, {g for _, g, _ in pairs})):
            for i in range(len(det)):
                if i in used:
                    continue
                if det[i, 4] <= cut:
                    border += 1
                elif side == 0:
                    miss_ref += 1
                else:
                    miss_back += 1
    reasons = []
    if not reference:
        reasons.append("no frames: parity on nothing proves nothing")
    if miss_ref or miss_back:
        reasons.append(f"{miss_ref} reference box(es) missing from the backend and {miss_back} backend box(es) "
                       f"absent from the reference (above conf {conf} + {conf_tolerance})")
    if worst_iou < min_iou:
        reasons.append(f"a matched box pair has IoU {worst_iou:.4f} < {min_iou}")
    if worst_conf > conf_tolerance:
        reasons.append(f"a matched box pair's confidences differ by {worst_conf:.4f} > {conf_tolerance}")
    return Parity(len(reference), n_ref, n_back, matched, miss_ref, miss_back, border, round(worst_iou, 6),
                  round(worst_conf, 6), None if max_raw_diff is None else round(float(max_raw_diff), 6), conf,
                  min_iou, conf_tolerance, not reasons, "; ".join(reasons) or "same boxes within tolerance")
