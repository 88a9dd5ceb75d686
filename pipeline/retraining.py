"""Stage C's logic, apart from Dagster: the month's CVAT task, which production model a month's
candidate is trained from and compared with, the candidate's split, the frames it is compared on,
and the buffer frames a simulated shadow run may replay (none a trained hard example shows).

Functions that need stored records take a store-like object (`exists`, `read_bytes`), as
pipeline/registry.py's do; the rest are pure functions over tables the assets read.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import pandas as pd

from pipeline import keys, registry
from pipeline.versioning import HELD_OUT, TRAIN, is_version
from pipeline.weights import fetch_weights

LABEL_TABLE_COLUMNS = ["frame_key", "video_id", "camera", "day", "group", "split", "reason", "n_boxes", "width",
                       "height", "annotator", "month"]


def task_name(month: str) -> str:
    """The CVAT task of a month's hard examples (`hard_examples_<YYYY-MM>`)."""
    return f"hard_examples_{month}"


def _json(store, key: str):
    return json.loads(store.read_bytes(key))


# --------------------------------------------------------------------------- the month's candidate and its parent


def month_candidate(store, month: str) -> dict:
    """The model card of the month's candidate (through the month's candidate pointer)."""
    pointer = _json(store, keys.month_keys(month).candidate_pointer)
    return _json(store, keys.version_keys(pointer["version"]).model_card)


def candidate_weights(store, card: dict, target: Path) -> Path:
    """The candidate's `.pt`, checked against its model card and the allow-list before it is unpickled."""
    return fetch_weights(store, card["weights_key"], target, expected_sha256=card.get("weights_sha256"),
                         recorded_by=keys.version_keys(card["version"]).model_card)


def card_month(store, version) -> str | None:
    """The month whose candidate `version` is (from its model card), else None."""
    key = keys.version_keys(str(version)).model_card if version and is_version(str(version)) else None
    return _json(store, key).get("month") if key and store.exists(key) else None


def month_parent(store, month: str) -> dict | None:
    """The production model the month's candidate is trained from and compared with: current
    production, unless that is itself a candidate of this month or a later one (the month is being
    re-run after its promotion): then the production entry before it."""
    current = registry.production(store)
    if current is None or (card_month(store, current.get("version")) or "") < month:
        return current
    for entry in reversed(registry.history(store)):
        if entry.get("action") in ("promote", "bootstrap") and (card_month(store, entry.get("version")) or "") < month:
            return entry
    return current


# --------------------------------------------------------------------------- hard examples and the candidate's split


def hard_label_keys(stored_keys: Iterable[str], up_to_month: str) -> list[str]:
    """The months' labelled hard-example tables among `stored_keys`, up to and including `up_to_month`."""
    return [k for k in stored_keys if (keys.hard_labels_month(k) or "9999") <= up_to_month]


def all_hard_labels(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """The months' labelled hard examples in one table (empty, with the label table's columns, when none)."""
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=LABEL_TABLE_COLUMNS)


def candidate_split(base: pd.DataFrame, hard: pd.DataFrame) -> pd.DataFrame:
    """The candidate's split table: every v0 row unchanged (the frozen test split stays frozen) plus
    the hard examples (train or held_out), in the columns of dataset_split_v0.csv."""
    rows = hard.assign(operation="hard example " + hard["month"], recorded_day=hard["day"])
    columns = ["frame_key", "video_id", "operation", "camera", "recorded_day", "group", "split"]
    return pd.concat([base[columns], rows[columns]], ignore_index=True)


def comparison_frames(split: pd.DataFrame, month_hard: pd.DataFrame | None, chosen: pd.DataFrame,
                      boxes: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Frames (frame_key, video_id, operation, camera, subset) to compare on, and their person boxes:
    the test and deployment test splits and the month's labelled hard examples (`month_hard`, None
    when there are none), kept where the main annotator's labels (`chosen`, `boxes`) exist."""
    frames = [split.loc[split["split"] == s, ["frame_key", "video_id", "operation", "camera"]].assign(subset=s)
              for s in ("test", "deployment_test")]
    if month_hard is not None:
        frames.append(month_hard.assign(operation="hard example", subset=month_hard["split"].map(
            {HELD_OUT: "hard_held_out", TRAIN: "hard_trained"}))[["frame_key", "video_id", "operation", "camera",
                                                                 "subset"]])
    table = pd.concat(frames, ignore_index=True)
    table = table[table["frame_key"].isin(set(chosen["frame_key"]))].reset_index(drop=True)
    return table, boxes[boxes["frame_key"].isin(set(table["frame_key"])) & (boxes["class_name"] == "person")]


def held_out_buffer_frames(buffer_frames: pd.DataFrame, hard: pd.DataFrame, hard_frames: pd.DataFrame, month: str,
                           exclude_within_s: float) -> pd.DataFrame:
    """Buffer frames of the month (frame_key, video_id, camera, captured_at) that no trained hard
    example shows: nothing within `exclude_within_s` of one on the same clip. `buffer_frames` and
    `hard_frames` are the frame manifests of the buffer and of the hard examples, `hard` the labelled
    hard examples so far."""
    frames = buffer_frames
    if frames.empty:
        return frames.assign(camera=[], captured_at=[])
    parts = frames["frame_key"].str.split("/")
    frames = frames.assign(camera=parts.str[2], day=parts.str[3], clip=parts.str[4])
    frames = frames[frames["day"].str.startswith(month)].copy()
    frames["captured_at"] = pd.to_datetime(frames["day"] + " " + frames["clip"].str[:2] + ":" +
                                           frames["clip"].str[2:4] + ":" + frames["clip"].str[4:6], utc=True) + \
        pd.to_timedelta(frames["actual_s"], unit="s")
    trained = hard[hard["split"] == TRAIN]
    if len(trained):
        trained = hard_frames[hard_frames["frame_key"].isin(set(trained["frame_key"]))]
        near = frames.merge(trained[["video_id", "actual_s"]], on="video_id", suffixes=("", "_hard"))
        near = near[(near["actual_s"] - near["actual_s_hard"]).abs() < exclude_within_s]
        frames = frames[~frames["frame_key"].isin(set(near["frame_key"]))]
    return frames.sort_values("captured_at").reset_index(drop=True)
