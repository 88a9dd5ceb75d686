"""Incremental listing of the rolling buffer: a tick costs what is new, not the size of the bucket.

The cursor remembers the newest day seen and, for the days inside an overlap window, each clip's
(size, etag) as last seen. Only date prefixes from (newest day - overlap) on are listed. A clip is
*stable* once two consecutive ticks saw the same size and etag; only stable clips are reported,
so files still uploading are left alone. Days that age out of the window are forgotten, and clips
that expired out of the buffer simply stop appearing.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta

from pipeline.keys import BUFFER_PREFIX, buffer_clip_parts


@dataclass
class BufferCursor:
    newest_day: str | None = None
    seen: dict[str, dict[str, list]] = field(default_factory=dict)  # day -> key -> [size, etag, reported]

    @classmethod
    def parse(cls, text: str | None) -> "BufferCursor":
        if not text:
            return cls()
        raw = json.loads(text)
        return cls(raw.get("newest_day"), raw.get("seen", {}))

    def dump(self) -> str:
        return json.dumps({"newest_day": self.newest_day, "seen": self.seen}, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class StableClip:
    key: str
    camera: str
    day: str
    size: int
    etag: str


def _is_day(name: str) -> bool:
    try:
        date.fromisoformat(name)
        return len(name) == 10
    except ValueError:
        return False


def scan(cursor: BufferCursor, list_prefixes: Callable[..., list[str]],
         list_objects: Callable[[str], Iterable[tuple[str, int, str]]], *,
         overlap_days: int = 1, ignored: list[tuple[str, str]] | None = None) -> tuple[list[StableClip], BufferCursor]:
    """One tick: (stable clips not yet reported, new cursor). `list_prefixes(p, start_after=None)`
    returns immediate sub-prefixes ending in '/' (with `start_after`, only those sorting after it, as
    ArtifactStore.list_prefixes); `list_objects(p)` yields (key, size, etag) under p. Keys and folders
    outside `buffer/<camera>/<YYYY-MM-DD>/<HHMMSS>.mp4` never start a run; when `ignored` is a list,
    each one seen this tick is appended to it as (key or prefix, why), so the caller can report them."""
    skipped = ignored if ignored is not None else []
    since = None
    if cursor.newest_day:
        since = (date.fromisoformat(cursor.newest_day) - timedelta(days=overlap_days)).isoformat()
    cameras = [p for p in list_prefixes(BUFFER_PREFIX) if p != f"{BUFFER_PREFIX}quality/"]
    day_prefixes = []
    for camera_prefix in cameras:
        # days before the window are skipped by the listing itself, so they cost nothing per tick
        for day_prefix in list_prefixes(camera_prefix, start_after=f"{camera_prefix}{since}" if since else None):
            day = day_prefix.rstrip("/").rsplit("/", 1)[-1]
            if not _is_day(day):
                skipped.append((day_prefix, "folder is not a YYYY-MM-DD day"))
            elif since is None or day >= since:
                day_prefixes.append((day, day_prefix))
    if since is None and day_prefixes:  # first tick: days before the window would be forgotten below unread
        since = (date.fromisoformat(max(day_prefixes)[0]) - timedelta(days=overlap_days)).isoformat()
        day_prefixes = [(day, prefix) for day, prefix in day_prefixes if day >= since]
    seen = {d: dict(v) for d, v in cursor.seen.items() if since is None or d >= since}
    ready: list[StableClip] = []
    newest = cursor.newest_day
    for day, prefix in sorted(day_prefixes):
        day_seen = seen.setdefault(day, {})
        present = set()
        for key, size, etag in list_objects(prefix):
            parts = buffer_clip_parts(key)
            if parts is None:
                skipped.append((key, "not buffer/<camera>/<YYYY-MM-DD>/<HHMMSS>.mp4"))
                continue
            present.add(key)
            before = day_seen.get(key)
            if before and before[0] == size and before[1] == etag:
                if not before[2]:
                    ready.append(StableClip(key, parts[0], day, size, etag))
                    day_seen[key] = [size, etag, True]
            else:
                day_seen[key] = [size, etag, False]  # new or still changing: look again next tick
        for key in [k for k in day_seen if k.startswith(prefix) and k not in present]:
            del day_seen[key]  # expired out of the buffer (only this camera's day was listed)
        newest = max(newest or day, day)
    # a camera-day that emptied out (or a camera gone) is not listed any more: forget its clips too
    listed = {prefix for _day, prefix in day_prefixes}
    seen = {d: {k: v for k, v in day_seen.items() if f"{k.rsplit('/', 1)[0]}/" in listed} for d, day_seen in seen.items()}
    new_since = (date.fromisoformat(newest) - timedelta(days=overlap_days)).isoformat() if newest else None
    seen = {d: v for d, v in seen.items() if v and (new_since is None or d >= new_since)}
    return ready, BufferCursor(newest, seen)
