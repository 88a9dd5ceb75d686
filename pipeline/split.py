"""Leak-free group split: whole videos (and, configurably, whole camera-days) go to one split.

Groups are connected components of videos that share a camera-day (when `by_camera_day`), so no
operator session can sit on both sides. Groups are dealt to train/val/test in a fixed-seed order,
operation by operation, always to the split furthest behind its target share, which spreads every
operation across the splits as far as its number of groups allows. Post-install recordings form
the separate deployment test set.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.errors import SplitError
from pipeline.hashing import sha256_bytes
from pipeline.keys import VIDEO_MANIFEST

SPLITS = ("train", "val", "test")
DEPLOYMENT_TEST = "deployment_test"


@dataclass(frozen=True)
class SplitConfig:
    ratios: tuple[float, float, float] = (0.70, 0.15, 0.15)
    seed: int = 0
    by_camera_day: bool = True
    ratio_tolerance: float = 0.10  # allowed |share of groups - target| per split


def _groups(units: pd.DataFrame, by_camera_day: bool) -> pd.Series:
    """Group id per unit (row): union of units sharing a video id, or a camera-day when asked."""
    parent = list(range(len(units)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    keys = [units["video_id"].astype(str)]
    if by_camera_day:
        keys.append(units["camera"].astype(str) + "|" + units["recorded_day"].astype(str))
    for column in keys:
        first: dict[str, int] = {}
        for i, value in enumerate(column):
            if value in first:
                parent[find(i)] = find(first[value])
            else:
                first[value] = i
    roots = [find(i) for i in range(len(units))]
    video_ids = units["video_id"].astype(str).to_numpy()
    names: dict[int, str] = {}
    for i, root in enumerate(roots):
        names.setdefault(root, video_ids[i])
    return pd.Series([f"g:{names[r]}" for r in roots], index=units.index)


def _targets(n_groups: int, ratios: tuple[float, ...]) -> list[int]:
    raw = np.array(ratios) / sum(ratios) * n_groups
    counts = np.floor(raw).astype(int)
    for k in np.argsort(-(raw - counts), kind="stable")[: n_groups - counts.sum()]:
        counts[k] += 1
    return counts.tolist()


def assign_splits(units: pd.DataFrame, config: SplitConfig = SplitConfig()) -> pd.DataFrame:
    """Split assignment per unit (a video or a photo).

    `units` columns: video_id, operation, camera, recorded_day, post_install. Returns the same rows
    with `group` and `split` added, sorted by video_id.
    """
    required = {"video_id", "operation", "camera", "recorded_day", "post_install"}
    missing = required - set(units.columns)
    if missing:
        raise SplitError("video manifest", ", ".join(sorted(missing)), None,
                         "add the missing columns to raw/videos/manifest.csv", problem="missing columns")
    units = units.sort_values("video_id").reset_index(drop=True).copy()
    units["group"] = _groups(units, config.by_camera_day)
    post = units["post_install"].astype(bool)
    mixed = units.groupby("group")["post_install"].nunique()
    if (mixed > 1).any():
        bad = mixed[mixed > 1].index[0]
        raise SplitError("video manifest", "post_install", bad, "a camera-day cannot hold both pre- and post-install "
                         "recordings; fix recorded_day or post_install for that group", problem="mixed group")
    units.loc[post, "split"] = DEPLOYMENT_TEST

    pre_groups = units.loc[~post].groupby("group").agg(operation=("operation", "first")).reset_index()
    n = len(pre_groups)
    targets = _targets(n, config.ratios)
    needed = sum(1 for r in config.ratios if r > 0)
    if n < needed or any(t == 0 and r > 0 for t, r in zip(targets, config.ratios)):
        raise SplitError("video manifest", "groups", n,
                         f"ratios {config.ratios} need at least one group per split (targets {targets}); add videos "
                         "or cameras/days, or set by_camera_day=false", problem="too few groups for the ratios")
    rng = np.random.default_rng(config.seed)
    order = []
    for _, block in pre_groups.groupby("operation", sort=True):
        order += list(block["group"].to_numpy()[rng.permutation(len(block))])
    assigned = [0, 0, 0]
    chosen: dict[str, str] = {}
    for i, group in enumerate(order):
        schedule = [t * (i + 1) / n - a if a < t else -np.inf for t, a in zip(targets, assigned)]
        k = int(np.argmax(schedule))
        assigned[k] += 1
        chosen[group] = SPLITS[k]
    units.loc[~post, "split"] = units.loc[~post, "group"].map(chosen)
    return units


def check_unique_sources(frames: pd.DataFrame, manifest: str = VIDEO_MANIFEST) -> None:
    """The same bytes under two ids (a duplicate upload under another name) would let one recording land
    in two splits, out of reach of a split by id: refuse it. `frames` holds video_id and video_sha256."""
    if frames.empty or "video_sha256" not in frames.columns:
        return
    ids = frames.dropna(subset=["video_sha256"]).groupby("video_sha256")["video_id"].unique()
    shared = ids[ids.map(len) > 1]
    if len(shared):
        digest, names = shared.index[0], sorted(str(v) for v in shared.iloc[0])
        raise SplitError(manifest, "video_id", names,
                         f"the same bytes (sha256 {digest}) were uploaded as {' and '.join(map(repr, names))}: "
                         f"remove the duplicate row (or file) so one recording cannot land in two splits "
                         f"({len(shared)} such group(s))", problem="duplicate upload under another name")


def frame_splits(frames: pd.DataFrame, assignment: pd.DataFrame) -> pd.DataFrame:
    """The per-frame table: every frame (frame_key, video_id, ...) with its video's assignment
    (operation, camera, recorded_day, post_install, group, split). The assignment is the authority
    for the columns both tables hold. A frame whose video has no assignment is an error (it would
    otherwise land in no split and fail much later, when the dataset is written)."""
    index = pd.Index(assignment["video_id"])
    if not index.is_unique:
        raise SplitError("split assignment", "video_id", index[index.duplicated()][:5].tolist(),
                         "give every video and photo a unique video_id", problem="duplicate video id")
    position = index.get_indexer(frames["video_id"])  # a hash lookup: one pass over the frames
    unassigned = position < 0
    if unassigned.any():
        videos = sorted(frames.loc[unassigned, "video_id"].astype(str).unique())
        raise SplitError("video manifest", "video_id", videos[:5],
                         f"{len(videos)} video(s) of {int(unassigned.sum())} labelled frame(s) are not in the "
                         "manifest (raw/videos/manifest.csv); add them or drop their frames",
                         problem="frames without a split")
    shared = [c for c in assignment.columns if c in frames.columns and c != "video_id"]
    per_frame = assignment.drop(columns="video_id").iloc[position].reset_index(drop=True)
    return pd.concat([frames.drop(columns=shared).reset_index(drop=True), per_frame], axis=1)


def leaks(frames: pd.DataFrame, columns: tuple[str, ...] = ("video_id",)) -> pd.DataFrame:
    """Values of `columns` (e.g. a video, or camera+day) that appear in more than one split."""
    name = "|".join(columns)
    keys = [frames[c].astype(str).rename(c) for c in columns]
    spread = frames["split"].groupby(keys, sort=True, dropna=False).nunique()
    spread = spread[spread > 1]
    if len(columns) == 1:
        key = spread.index.astype(str)
    else:
        key = pd.Index(["|".join(values) for values in spread.index])
    return pd.DataFrame({name: key, "n_splits": spread.to_numpy()})


def ratio_report(assignment: pd.DataFrame, config: SplitConfig) -> pd.DataFrame:
    """Share of groups per split against its target, and whether it is within tolerance."""
    pre = assignment[assignment["split"] != DEPLOYMENT_TEST]
    groups = pre.groupby("group")["split"].first()
    total = max(len(groups), 1)
    rows = []
    for name, ratio in zip(SPLITS, config.ratios):
        share = float((groups == name).sum()) / total
        rows.append({"split": name, "groups": int((groups == name).sum()), "share": round(share, 4),
                     "target": ratio, "within_tolerance": abs(share - ratio) <= config.ratio_tolerance})
    return pd.DataFrame(rows)


def split_csv(frames: pd.DataFrame) -> tuple[bytes, str]:
    """Bytes of dataset_split_vN.csv (one row per frame, sorted) and their sha256: the data version."""
    columns = ["frame_key", "video_id", "operation", "camera", "recorded_day", "group", "split"]
    table = frames[columns].sort_values("frame_key").reset_index(drop=True)
    buffer = io.StringIO()
    table.to_csv(buffer, index=False, lineterminator="\n")
    data = buffer.getvalue().encode()
    return data, sha256_bytes(data)
