"""Model and data versions for Stage C: v0 -> v0.1 -> v0.2, and the candidate training set.

A version names a model and the dataset it was trained on everywhere it appears: the weights
(`models/yolov8n_lbzf_v0.1/yolov8n_lbzf_v0.1.pt`), the dataset (`datasets/lbzf_person_v0.1/`), the
split file (`dataset_split_v0.1.csv`), reports and the production pointer.

The candidate training set of a month is the previous training set (the v0 train split, val kept for
validation) plus every labelled hard example so far that may be trained on. Hard examples are
post-install footage; they are grouped by camera-day (frames of one camera on one day show the same
operators and the same light, so they go together):

* a camera-day that the v0 split holds in test, deployment_test or val is *held out* (training on it
  would leak the frozen test split, the deployment test set or the validation set used to pick the
  best epoch);
* a further, fixed share of camera-days is held out for evaluation (a stable hash of camera and day,
  so a camera-day held out once stays held out every month);
* the rest go to train.

`check_training_set` refuses, with a clear error, any candidate training or validation set that holds
a frame, a video or a camera-day of the frozen test split or the deployment test set.
"""
from __future__ import annotations

import hashlib
import json
import re

import pandas as pd

from pipeline.errors import PipelineInputError

MODEL_FAMILY = "yolov8n_lbzf"
DATASET_FAMILY = "lbzf_person"
BASE_VERSION = "v0"
PROTECTED_SPLITS = ("test", "deployment_test")  # never trained on, never used to pick an epoch
TRAIN, HELD_OUT = "train", "held_out"
_VERSION = re.compile(r"^v(\d+)(?:\.(\d+))?$")


class TestSplitLeakError(PipelineInputError):
    """A candidate training set that holds frozen test or deployment-test data."""

    __test__ = False  # not a pytest test class


def parse_version(version: str) -> tuple[int, int]:
    """'v0' -> (0, 0), 'v0.1' -> (0, 1), 'v1.12' -> (1, 12)."""
    match = _VERSION.match(str(version).strip())
    if not match:
        raise PipelineInputError("model version", "version", version, "use versions like v0, v0.1, v0.2",
                                 problem="not a model version")
    return int(match.group(1)), int(match.group(2) or 0)


def format_version(major: int, minor: int) -> str:
    return f"v{major}" if minor == 0 else f"v{major}.{minor}"


def next_version(version: str) -> str:
    """The monthly bump: v0 -> v0.1 -> v0.2 -> ... -> v0.10 (minor numbers are not decimals)."""
    major, minor = parse_version(version)
    return format_version(major, minor + 1)


def is_version(value: str) -> bool:
    return bool(_VERSION.match(str(value).strip()))


def latest_version(versions) -> str:
    """The highest of `versions` (non-versions such as 'off-shelf' are ignored); v0 when none."""
    known = [v for v in versions if v and is_version(v)]
    return max(known, key=parse_version) if known else BASE_VERSION


def model_name(version: str) -> str:
    parse_version(version)
    return f"{MODEL_FAMILY}_{version}"


def dataset_name(version: str) -> str:
    parse_version(version)
    return f"{DATASET_FAMILY}_{version}"


def candidate_identity(*, month: str, parent_sha256: str, split_sha256: str, recipe: dict,
                       classes: list[str] | None = None) -> str:
    """What makes two candidates the same model: the month, the weights trained from, the exact
    training set, the recipe and the output classes. The same identity reuses its version; anything
    else gets a new one. (Person alone, the default, is left out of the hash: identities made before
    classes were configurable stay the same.)"""
    doc = {"month": month, "parent_sha256": parent_sha256, "split_sha256": split_sha256, "recipe": recipe}
    if classes is not None and list(classes) != ["person"]:
        doc["classes"] = list(classes)
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


# --------------------------------------------------------------------------- hard examples -> splits


def hard_frame_parts(frame_key: str) -> tuple[str, str, str]:
    """(camera, day, clip) of `frames/hard/<YYYY-MM>/<camera>/<YYYY-MM-DD>/<HHMMSS>/<t_ms>.jpg`."""
    parts = frame_key.split("/")
    if len(parts) != 7 or parts[:2] != ["frames", "hard"]:
        raise PipelineInputError(frame_key, "frame_key", frame_key,
                                 "hard-example frames live at frames/hard/<YYYY-MM>/<camera>/<day>/<clip>/<t>.jpg",
                                 problem="not a hard-example frame key")
    return parts[3], parts[4], parts[5]


def _unit_hash(camera: str, day: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}|{camera}|{day}".encode()).hexdigest()
    return int(digest[:12], 16) / float(16 ** 12)


def assign_hard_examples(hard: pd.DataFrame, base_split: pd.DataFrame, *, holdout_fraction: float = 0.2,
                         seed: int = 0) -> pd.DataFrame:
    """`hard`: one row per labelled hard-example frame (frame_key, video_id). `base_split`: the v0
    split table (frame_key, video_id, camera, recorded_day, split). Returns `hard` with camera, day,
    group (`cd:<camera>|<day>`), split (train / held_out) and the reason for it."""
    if not 0.0 <= holdout_fraction < 1.0:
        raise PipelineInputError("hard examples", "holdout_fraction", holdout_fraction, "use a share in [0, 1)")
    table = hard.copy()
    parts = [hard_frame_parts(k) for k in table["frame_key"]]
    table["camera"] = [p[0] for p in parts]
    table["day"] = [p[1] for p in parts]
    table["group"] = "cd:" + table["camera"] + "|" + table["day"]
    where = {}
    for name in ("val",) + PROTECTED_SPLITS:
        rows = base_split[base_split["split"] == name]
        for camera, day in zip(rows["camera"].astype(str), rows["recorded_day"].astype(str)):
            where.setdefault((camera, day), name)
    splits, reasons = [], []
    for camera, day in zip(table["camera"], table["day"]):
        taken = where.get((camera, day))
        if taken:
            splits.append(HELD_OUT)
            reasons.append(f"camera-day {camera} {day} is in the v0 {taken} split")
        elif _unit_hash(camera, day, seed) < holdout_fraction:
            splits.append(HELD_OUT)
            reasons.append(f"camera-day held out for evaluation (fixed {holdout_fraction:.0%} sample)")
        else:
            splits.append(TRAIN)
            reasons.append("train")
    table["split"] = splits
    table["reason"] = reasons
    return table


def protected_frames(base_split: pd.DataFrame) -> pd.DataFrame:
    """The rows of the frozen test split and the deployment test set."""
    return base_split[base_split["split"].isin(PROTECTED_SPLITS)]


def check_training_set(frames: pd.DataFrame, base_split: pd.DataFrame, *, version: str,
                       role: str = "training") -> None:
    """Refuse (TestSplitLeakError) a candidate training/validation set (frame_key, video_id, camera,
    recorded_day) holding any frame, video or camera-day of the frozen test split or the deployment
    test set."""
    protected = protected_frames(base_split)
    if protected.empty or frames.empty:
        return
    problems = []
    by_frame = frames[frames["frame_key"].isin(set(protected["frame_key"]))]
    if len(by_frame):
        problems.append(f"{len(by_frame)} frame(s) of the protected splits, e.g. {by_frame['frame_key'].iloc[0]}")
    by_video = frames[frames["video_id"].astype(str).isin(set(protected["video_id"].astype(str)))]
    if len(by_video) > len(by_frame):
        problems.append(f"frames of {by_video['video_id'].nunique()} protected video(s), e.g. "
                        f"{by_video['video_id'].iloc[0]}")
    # camera-days: checked for frames added to the v0 split (its own rows follow its own grouping rule)
    added = frames[~frames["frame_key"].isin(set(base_split["frame_key"]))]
    protected_days = set(zip(protected["camera"].astype(str), protected["recorded_day"].astype(str)))
    days = [(c, d) for c, d in zip(added["camera"].astype(str), added["recorded_day"].astype(str))
            if (c, d) in protected_days]
    if days:
        problems.append(f"{len(days)} frame(s) from protected camera-days, e.g. {days[0][0]} {days[0][1]}")
    if problems:
        raise TestSplitLeakError(
            f"candidate {version} {role} set", "split", "; ".join(problems),
            "the frozen test split and the deployment test set of dataset_split_v0.csv are never trained on "
            "(nor used for validation): drop those frames from the candidate set; hard examples from a protected "
            "camera-day are held out by assign_hard_examples",
            problem="refusing to train on the frozen test split / deployment test set")
