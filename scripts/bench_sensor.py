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


class SteadyBuffer:
    """A seeded local buffer whose listing has reached steady state (everything seen and reported)."""

    def __init__(self, root: Path):
        self.store = LocalArtifactStore(root=str(root))
        self.listed: list[str] = []
        self.cursor = BufferCursor()
        for _ in range(3):  # first sight (backfill), stable (reported), then the window only
            _ready, self.cursor = scan(self.cursor, self.store.list_prefixes, self._listing, hot_s=0)

    def _listing(self, prefix: str):
        for info in self.store.list_keys(prefix):
            self.listed.append(info.key)
            yield info.key, info.size, info.etag, info.last_modified

    def tick(self) -> float:
        """One timed steady-state tick; checks it found nothing new and left the cursor as it was."""
        self.listed.clear()
        start = time.perf_counter()
        ready, after = scan(self.cursor, self.store.list_prefixes, self._listing, hot_s=0, full_listing_s=10**9)
        elapsed = time.perf_counter() - start
        assert not ready and after == self.cursor, "steady state: a tick with nothing new must change nothing"
        return elapsed

    def full_tick(self) -> float:
        """One timed tick that also enumerates every day folder (done once per full_listing_s)."""
        self.listed.clear()
        start = time.perf_counter()
        ready, after = scan(self.cursor, self.store.list_prefixes, self._listing, hot_s=0, full_listing_s=0)
        elapsed = time.perf_counter() - start
        assert not ready and after.seen == self.cursor.seen, "a full listing with nothing new reports nothing"
        return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--clips-per-day", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=31)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lbzf-bench-") as tmp:
        buffers, times = {}, {}
        for n in (args.small, args.large):
            root = Path(tmp) / str(n)
            t0 = time.perf_counter()
            written = seed(root, n, args.clips_per_day)
            seeded = time.perf_counter() - t0
            buffers[n], times[n] = SteadyBuffer(root), []
            days = len(os.listdir(root / "buffer" / CAMERAS[0]))
            print(f"{written:>7} objects: {len(CAMERAS)} cameras x {days} days x {args.clips_per_day} clips "
                  f"(seeded in {seeded:.1f} s)")
        full = {n: [] for n in buffers}
        for _ in range(args.repeats):  # interleaved, so both sizes see the same machine noise
            for n, buffer in buffers.items():
                times[n].append(buffer.tick())
        listed = {n: len(buffer.listed) for n, buffer in buffers.items()}
        for _ in range(max(3, args.repeats // 5)):
            for n, buffer in buffers.items():
                full[n].append(buffer.full_tick())
        for n, buffer in buffers.items():
            print(f"{n:>7} objects: steady-state tick median {statistics.median(times[n]) * 1000:.2f} ms, "
                  f"min {min(times[n]) * 1000:.2f} ms over {len(times[n])} ticks; keys listed per tick "
                  f"{listed[n]}, days in cursor {len(buffer.cursor.seen)}; the hourly full listing of "
                  f"every day folder: median {statistics.median(full[n]) * 1000:.2f} ms")
    ratio = statistics.median(times[args.large]) / statistics.median(times[args.small])
    print(f"ratio large/small (medians) = {ratio:.2f}x, (mins) = {min(times[args.large]) / min(times[args.small]):.2f}x "
          f"(goal <= 1.5x): {'OK' if ratio <= 1.5 else 'OVER GOAL'}")


if __name__ == "__main__":
    main()
