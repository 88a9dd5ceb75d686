"""Time the split at scale: `assign_splits` on 10 000 videos plus building the per-frame table
(1 000 000 frames merged with the assignment, as the `dataset_split` asset does). Goal: < 2 s.

    .venv/bin/python scripts/bench_split.py [--videos 10000] [--frames 1000000] [--repeat 3]

Prints the best of `--repeat` runs for each step and the total; exits 1 when the total misses the
goal, so it can gate a change. Not a unit test: timings depend on the machine.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.split import SplitConfig, assign_splits, frame_splits, leaks, split_csv  # noqa: E402

GOAL_S = 2.0


def make_units(n_videos: int, seed: int = 0) -> pd.DataFrame:
    """A manifest like the real one scaled up: 7 operations, 60 cameras, 200 days (so a few videos
    share a camera-day), the last 10 days recorded after the install (post-install)."""
    rng = np.random.default_rng(seed)
    days = pd.date_range("2025-01-01", periods=200, freq="D").strftime("%Y-%m-%d").to_numpy()
    recorded_day = rng.choice(days, n_videos)
    return pd.DataFrame({
        "video_id": [f"v{i:06d}" for i in range(n_videos)],
        "operation": rng.choice([f"op{k}" for k in range(7)], n_videos),
        "camera": rng.choice([f"cam{k:02d}" for k in range(60)], n_videos),
        "recorded_day": recorded_day,
        "post_install": recorded_day >= days[-10],
    })


def make_frames(units: pd.DataFrame, n_frames: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed + 1)
    video = np.sort(rng.integers(0, len(units), n_frames))
    video_ids = units["video_id"].to_numpy()[video]
    index = np.arange(n_frames)
    keys = pd.Series(video_ids).str.cat(pd.Series(index.astype(str)), sep="/")
    return pd.DataFrame({"frame_key": "frames/ops/" + keys + ".jpg", "source": "ops", "video_id": video_ids,
                         "frame_index": index, "width": 1920, "height": 1080})


def best_of(repeat: int, fn):
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=10_000)
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    units = make_units(args.videos)
    frames = make_frames(units, args.frames)
    config = SplitConfig()
    t_assign, assignment = best_of(args.repeat, lambda: assign_splits(units, config))
    t_table, table = best_of(args.repeat, lambda: frame_splits(frames, assignment))
    total = t_assign + t_table
    print(f"videos={args.videos} frames={args.frames} groups={assignment['group'].nunique()}")
    print(f"assign_splits:      {t_assign:7.3f} s")
    print(f"per-frame table:    {t_table:7.3f} s")
    print(f"total:              {total:7.3f} s (goal < {GOAL_S:.1f} s) {'OK' if total < GOAL_S else 'TOO SLOW'}")
    # Not part of the goal, reported for context: the leak check and the CSV the asset writes.
    t_leaks, found = best_of(1, lambda: leaks(table, ("camera", "recorded_day")))
    t_csv, (data, _) = best_of(1, lambda: split_csv(table))
    print(f"(leaks camera-day:  {t_leaks:7.3f} s, {len(found)} leaking)")
    print(f"(split_csv:         {t_csv:7.3f} s, {len(data) / 1e6:.1f} MB)")
    return 0 if total < GOAL_S else 1


if __name__ == "__main__":
    sys.exit(main())
