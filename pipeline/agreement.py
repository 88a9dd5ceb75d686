"""Inter-annotator agreement for person boxes: Cohen's kappa on a grid of image cells.

Definition (documented in docs/architecture.md). Kappa needs both "yes" and "no" decisions; with box
annotations the "no person here" decisions are implicit, and counting only boxes leaves almost no
negatives (on a sewing line nearly every frame holds an operator), which makes an object-level kappa
collapse whatever the annotators do (the prevalence paradox). So each overlap frame is divided into a
`grid` x `grid` lattice; for every cell each annotator "says person" when the cell centre lies inside
one of their person boxes. Kappa = (p_o - p_e) / (1 - p_e) over all cells of all overlap frames: it
rewards agreeing on where people are and where they are not, and falls when a box is missed, added or
drawn much larger or smaller. Beside it we report the object-level view: boxes matched one-to-one at
IoU >= 0.5 (both / only A / only B) and their F1, and a frame-level kappa. The confidence interval
resamples frames (cells within a frame are not independent). The disagreements table lists every
unmatched box and every matched pair with IoU < 0.75.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipeline.boxes import iou_matrix

BOX = ["x1", "y1", "x2", "y2"]


def cohens_kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa for two binary raters; 1.0 when both agree perfectly (even with one class only)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if len(a) == 0:
        return float("nan")
    p_o = float(np.mean(a == b))
    p_a, p_b = a.mean(), b.mean()
    p_e = float(p_a * p_b + (1 - p_a) * (1 - p_b))
    if p_e >= 1.0:
        return 1.0 if p_o == 1.0 else 0.0
    return (p_o - p_e) / (1 - p_e)


def _match_pairs(a: np.ndarray, b: np.ndarray, iou_threshold: float) -> list[tuple[int, int, float]]:
    ious = iou_matrix(a, b)
    pairs = []
    if ious.size:
        order = np.dstack(np.unravel_index(np.argsort(-ious, axis=None), ious.shape))[0]
        used_a, used_b = set(), set()
        for i, j in order:
            if ious[i, j] < iou_threshold:
                break
            if i in used_a or j in used_b:
                continue
            used_a.add(i)
            used_b.add(j)
            pairs.append((int(i), int(j), float(ious[i, j])))
    return pairs


@dataclass
class AgreementResult:
    kappa: float
    frame_kappa: float
    n_frames: int
    n_items: int
    ci_low: float
    ci_high: float
    counts: dict
    disagreements: pd.DataFrame = field(repr=False)
    seed: int = 0

    def to_metadata(self) -> dict:
        return {"kappa": round(self.kappa, 4), "frame_kappa": round(self.frame_kappa, 4), "n_frames": self.n_frames,
                "n_items": self.n_items, "ci95": [round(self.ci_low, 4), round(self.ci_high, 4)],
                "bootstrap_seed": self.seed, **self.counts}


def _cells(boxes: np.ndarray, width: float, height: float, grid: int) -> np.ndarray:
    """Flat bool array: is each cell centre inside any box?"""
    xs = (np.arange(grid) + 0.5) * width / grid
    ys = (np.arange(grid) + 0.5) * height / grid
    cx, cy = np.meshgrid(xs, ys)
    inside = np.zeros(cx.shape, dtype=bool)
    for x1, y1, x2, y2 in boxes:
        inside |= (cx >= x1) & (cx <= x2) & (cy >= y1) & (cy <= y2)
    return inside.ravel()


def box_agreement(a: pd.DataFrame, b: pd.DataFrame, frames: list[str], *, sizes: dict[str, tuple[float, float]],
                  iou_threshold: float = 0.5, grid: int = 16, n_boot: int = 1000, seed: int = 0) -> AgreementResult:
    """Kappa between annotators A and B on `frames` (frame_key list); a and b hold boxes with frame_key + x1..y2."""
    ga = {k: g[BOX].to_numpy(float) for k, g in a.groupby("frame_key")}
    gb = {k: g[BOX].to_numpy(float) for k, g in b.groupby("frame_key")}
    items_a, items_b, item_frame, frame_a, frame_b, rows = [], [], [], [], [], []
    cells_a, cells_b = [], []
    empty = np.zeros((0, 4))
    for f_index, frame in enumerate(frames):
        boxes_a, boxes_b = ga.get(frame, empty), gb.get(frame, empty)
        width, height = sizes[frame]
        cells_a.append(_cells(boxes_a, width, height, grid))
        cells_b.append(_cells(boxes_b, width, height, grid))
        frame_a.append(len(boxes_a) > 0)
        frame_b.append(len(boxes_b) > 0)
        pairs = _match_pairs(boxes_a, boxes_b, iou_threshold)
        matched_a = {i for i, _, _ in pairs}
        matched_b = {j for _, j, _ in pairs}
        for _ in pairs:
            items_a.append(1), items_b.append(1), item_frame.append(f_index)
        for i in range(len(boxes_a)):
            if i not in matched_a:
                items_a.append(1), items_b.append(0), item_frame.append(f_index)
                rows.append({"frame_key": frame, "kind": "only A marked a person", "box": boxes_a[i].round(1).tolist()})
        for j in range(len(boxes_b)):
            if j not in matched_b:
                items_a.append(0), items_b.append(1), item_frame.append(f_index)
                rows.append({"frame_key": frame, "kind": "only B marked a person", "box": boxes_b[j].round(1).tolist()})
        if len(boxes_a) == 0 and len(boxes_b) == 0:
            items_a.append(0), items_b.append(0), item_frame.append(f_index)
        for i, j, iou in pairs:
            if iou < 0.75:
                rows.append({"frame_key": frame, "kind": f"boxes differ (IoU {iou:.2f})",
                             "box": boxes_a[i].round(1).tolist()})
    ia, ib = np.array(items_a), np.array(items_b)
    ca, cb = np.array(cells_a), np.array(cells_b)  # (frames, cells)
    kappa = cohens_kappa(ca.ravel(), cb.ravel())
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot if len(frames) > 1 else 0):
        pick = rng.integers(0, len(frames), len(frames))
        value = cohens_kappa(ca[pick].ravel(), cb[pick].ravel())
        if not np.isnan(value):
            boots.append(value)
    low, high = (np.percentile(boots, [2.5, 97.5]) if boots else (float("nan"), float("nan")))
    counts = {"both": int(np.sum((ia == 1) & (ib == 1))), "only_a": int(np.sum((ia == 1) & (ib == 0))),
              "only_b": int(np.sum((ia == 0) & (ib == 1))), "neither": int(np.sum((ia == 0) & (ib == 0)))}
    both, only = counts["both"], counts["only_a"] + counts["only_b"]
    counts["object_f1"] = round(2 * both / (2 * both + only), 4) if both + only else 1.0
    counts["grid"] = grid
    return AgreementResult(kappa, cohens_kappa(np.array(frame_a), np.array(frame_b)), len(frames), int(ca.size),
                           float(low), float(high), counts,
                           pd.DataFrame(rows, columns=["frame_key", "kind", "box"]), seed)
