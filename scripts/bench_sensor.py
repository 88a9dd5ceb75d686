"""Benchmark: one steady-state tick of the buffer listing (`pipeline.buffer_listing.scan`) on a local store.

    .venv/bin/python scripts/bench_sensor.py [--small 1000] [--large 100000] [--clips-per-day 50]

Builds two buffers of tiny files under a temp dir (`buffer/<camera>/<YYYY-MM-DD>/<HHMMSS>.mp4`, two cameras,
a fixed number of clips per camera-day, so a bigger buffer means more days), brings the listing to steady state
(first tick sees everything, second reports it as stable), then times further ticks with nothing new and prints
the median of each and their ratio. Goal: large / small <= 1.5 (a tick costs what is new, not the bucket size).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.buffer_listing import BufferCursor, scan  # noqa: E402
from resources.storage import LocalArtifactStore  # noqa: E402

CAMERAS = ("cam1", "cam2")
LAST_DAY = date(2026, 7, 31)


def seed(root: Path, n_objects: int, clips_per_day: int) -> int:
    """Write `n_objects` one-byte clips, `clips_per_day` per camera-day, days ending on LAST_DAY."""
    days = -(-n_objects // (len(CAMERAS) * clips_per_day))
    written = 0
    for d in range(days):
        day = (LAST_DAY - timedelta(days=d)).isoformat()
        for camera in CAMERAS:
            folder = root / "buffer" / camera / day
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(clips_per_day):
                if written == n_objects:
                    return written
                seconds = i * 86400 // clips_per_day
                (folder / f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}.mp4").write_bytes(b"x")
                written += 1
    return written


def steady_state_ticks(store: LocalArtifactStore, repeats: int) -> tuple[list[float], int, int]:
    listing = lambda p: ((i.key, i.size, i.etag) for i in store.list_keys(p))  # noqa: E731
    cursor = BufferCursor()
    for _ in range(2):  # first sight, then stable (reported)
        _ready, cursor = scan(cursor, store.list_prefixes, listing)
    times, listed = [], 0
    for _ in range(repeats):
        counted = []

        def counting(p):
            for item in listing(p):
                counted.append(item[0])
                yield item

        start = time.perf_counter()
        ready, after = scan(cursor, store.list_prefixes, counting)
        times.append(time.perf_counter() - start)
        assert not ready and after == cursor, "steady state: a tick with nothing new must change nothing"
        listed = len(counted)
    return times, listed, len(cursor.seen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--clips-per-day", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="lbzf-bench-") as tmp:
        for n in (args.small, args.large):
            root = Path(tmp) / str(n)
            t0 = time.perf_counter()
            written = seed(root, n, args.clips_per_day)
            seeded = time.perf_counter() - t0
            store = LocalArtifactStore(root=str(root))
            times, listed, window_days = steady_state_ticks(store, args.repeats)
            results[n] = statistics.median(times)
            days = len(os.listdir(root / "buffer" / CAMERAS[0]))
            print(f"{written:>7} objects ({len(CAMERAS)} cameras x {days} days x {args.clips_per_day} clips; "
                  f"seeded in {seeded:.1f} s): steady-state tick median {results[n] * 1000:.2f} ms, "
                  f"min {min(times) * 1000:.2f} ms over {len(times)} ticks; keys listed per tick {listed}, "
                  f"days in cursor {window_days}")
    ratio = results[args.large] / results[args.small]
    print(f"ratio large/small = {ratio:.2f}x (goal <= 1.5x): {'OK' if ratio <= 1.5 else 'OVER GOAL'}")


if __name__ == "__main__":
    main()
