"""Monthly hard examples: frames the production model flagged red or yellow, spread across cameras
and days, near-duplicates (the same camera within a few seconds) removed, drawn with a fixed seed."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

FLAGGED = ("red", "yellow")


@dataclass(frozen=True)
class HardExampleSampling:
    n: int = 200
    seed: int = 0
    min_gap_s: float = 20.0  # flags closer than this on one camera show the same moment


def clip_table(keys: list[str]) -> pd.DataFrame:
    """camera, day, key, start (UTC) for buffer keys `buffer/<camera>/<YYYY-MM-DD>/<HHMMSS>.mp4`."""
    from pipeline.keys import buffer_clip_parts

    rows = []
    for key in keys:
        parts = buffer_clip_parts(key)
        if parts is None:
            continue
        camera, day, name = parts
        try:  # a stray file such as `notes.mp4` or `clip-1.mp4` is not a clip: skip it, do not fail the month
            if len(name) != len("HHMMSS.mp4") or not name[:6].isdigit():
                raise ValueError(name)
            start = pd.Timestamp(f"{day} {name[:2]}:{name[2:4]}:{name[4:6]}", tz="UTC")
        except ValueError:
            continue
        rows.append({"camera": camera, "day": day, "key": key, "start": start})
    return pd.DataFrame(rows, columns=["camera", "day", "key", "start"])


ATTACHED_COLUMNS = ["camera", "ts", "quality", "model_version", "day", "clip_key", "offset_s"]


def _as_utc(values: pd.Series) -> pd.Series:
    """Timestamps in UTC; naive ones are taken to be UTC already."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        out = values.dt.tz_convert("UTC")
    elif pd.api.types.is_datetime64_dtype(values.dtype):
        out = values.dt.tz_localize("UTC")
    else:  # an object column (mixed zones, strings): one value at a time
        one = [pd.Timestamp(v) for v in values]
        out = pd.Series([t if t is pd.NaT else t.tz_convert("UTC") if t.tzinfo else t.tz_localize("UTC") for t in one],
                        index=values.index, dtype="datetime64[ns, UTC]")
    return out.astype("datetime64[ns, UTC]")


def attach_clips(flags: pd.DataFrame, clips: pd.DataFrame) -> pd.DataFrame:
    """For each flag, the clip on its camera that holds its timestamp (clips: + duration_s): the
    latest-starting such clip when clips overlap. Flags with no footage are dropped; the rest keep
    their order. One sorted as-of join (a month of flags against a month of clips), not a scan of the
    clips per flag."""
    if flags.empty or clips.empty:
        return pd.DataFrame(columns=ATTACHED_COLUMNS)
    left = pd.DataFrame({"_row": np.arange(len(flags)), "camera": flags["camera"].to_numpy(),
                         "ts": _as_utc(flags["ts"]).reset_index(drop=True)}).dropna(subset=["ts"])
    right = pd.DataFrame({"camera": clips["camera"].to_numpy(), "start": _as_utc(clips["start"]).reset_index(drop=True),
                          "day": clips["day"].to_numpy(), "clip_key": clips["key"].to_numpy(),
                          "duration_s": clips["duration_s"].to_numpy(float)}).dropna(subset=["start"])
    right = right.sort_values("start", kind="stable").reset_index(drop=True)
    right["_end"] = right["start"] + pd.to_timedelta(right["duration_s"], unit="s")
    right["_reach"] = right.groupby("camera")["_end"].cummax()  # the furthest any clip so far extends
    merged = pd.merge_asof(left.sort_values("ts", kind="stable"), right, left_on="ts", right_on="start",
                           by="camera", direction="backward")
    inside = merged["start"].notna() & (merged["ts"] < merged["_end"])
    # The latest clip to start before ts ended before it, yet an earlier, longer clip still runs: resolve
    # those (only possible with overlapping clips) by searching that camera's clips.
    overlapped = merged["start"].notna() & ~inside & (merged["ts"] < merged["_reach"])
    for i in np.flatnonzero(overlapped.to_numpy()):
        ts, camera = merged.at[i, "ts"], merged.at[i, "camera"]
        holding = right[(right["camera"] == camera) & (right["start"] <= ts) & (ts < right["_end"])]
        clip = holding.iloc[-1]
        for column in ("start", "day", "clip_key"):
            merged.at[i, column] = clip[column]
        inside.iat[i] = True
    found = merged[inside.to_numpy()].sort_values("_row", kind="stable").reset_index(drop=True)
    rows = found["_row"].to_numpy()
    return pd.DataFrame({
        "camera": found["camera"], "ts": found["ts"], "quality": flags["quality"].to_numpy()[rows],
        "model_version": flags["model_version"].to_numpy()[rows], "day": found["day"],
        "clip_key": found["clip_key"], "offset_s": (found["ts"] - found["start"]).dt.total_seconds(),
    }, columns=ATTACHED_COLUMNS)


def sample(flags: pd.DataFrame, config: HardExampleSampling = HardExampleSampling()) -> tuple[pd.DataFrame, dict]:
    """Draw up to `config.n` flagged frames. Round-robin over (camera, day) strata so no camera or
    day dominates; within a stratum a seeded random order; a frame within `min_gap_s` of one already
    taken on the same camera is a near-duplicate and skipped. Returns the sample and a summary that
    says when fewer were available than asked."""
    flagged = flags[flags["quality"].isin(FLAGGED)].sort_values(["camera", "ts"]).reset_index(drop=True)
    rng = np.random.default_rng(config.seed)
    strata = [g.iloc[rng.permutation(len(g))] for _, g in flagged.groupby(["camera", "day"], sort=True)]
    taken: dict[str, list[pd.Timestamp]] = {}
    chosen, duplicates = [], 0
    cursors = [0] * len(strata)
    while len(chosen) < config.n and any(c < len(s) for c, s in zip(cursors, strata)):
        for i, stratum in enumerate(strata):
            if len(chosen) >= config.n:
                break
            while cursors[i] < len(stratum):
                row = stratum.iloc[cursors[i]]
                cursors[i] += 1
                near = any(abs((row["ts"] - t).total_seconds()) < config.min_gap_s for t in taken.get(row["camera"], []))
                if near:
                    duplicates += 1
                    continue
                taken.setdefault(row["camera"], []).append(row["ts"])
                chosen.append(row)
                break
    result = pd.DataFrame(chosen, columns=flagged.columns).sort_values(["camera", "ts"]).reset_index(drop=True)
    info = {"asked": config.n, "taken": len(result), "flagged": len(flagged), "near_duplicates_removed": duplicates,
            "seed": config.seed, "min_gap_s": config.min_gap_s,
            "shortfall": max(0, config.n - len(result)),
            "note": (f"only {len(result)} usable flagged frames (asked {config.n}); took all of them"
                     if len(result) < config.n else "full sample")}
    return result, info
