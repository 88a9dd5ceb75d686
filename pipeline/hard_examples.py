"""Monthly hard examples: frames the production model flagged red or yellow, spread across cameras
and days, near-duplicates (the same camera within a few seconds) removed, drawn with a fixed seed."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

FLAGGED = ("red", "yellow")


@dataclass(frozen=True)
class HardExampleConfig:
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


def attach_clips(flags: pd.DataFrame, clips: pd.DataFrame) -> pd.DataFrame:
    """For each flag, the clip on its camera that holds its timestamp (clips: + duration_s)."""
    rows = []
    by_camera = {c: g.sort_values("start") for c, g in clips.groupby("camera")}
    for flag in flags.itertuples():
        candidates = by_camera.get(flag.camera)
        if candidates is None:
            continue
        ts = pd.Timestamp(flag.ts).tz_convert("UTC") if pd.Timestamp(flag.ts).tzinfo else pd.Timestamp(flag.ts,
                                                                                                       tz="UTC")
        inside = candidates[(candidates["start"] <= ts) &
                            (ts < candidates["start"] + pd.to_timedelta(candidates["duration_s"], unit="s"))]
        if len(inside):
            clip = inside.iloc[-1]
            rows.append({"camera": flag.camera, "ts": ts, "quality": flag.quality,
                         "model_version": flag.model_version, "day": clip["day"], "clip_key": clip["key"],
                         "offset_s": (ts - clip["start"]).total_seconds()})
    return pd.DataFrame(rows, columns=["camera", "ts", "quality", "model_version", "day", "clip_key", "offset_s"])


def sample(flags: pd.DataFrame, config: HardExampleConfig = HardExampleConfig()) -> tuple[pd.DataFrame, dict]:
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
