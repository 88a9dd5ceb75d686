"""Incremental listing of the rolling buffer, one cursor per camera: no clip is missed, none runs twice.

Per camera the cursor remembers its newest day and the day folders it has seen. Each tick lists the
camera's day folders (one delimiter listing per camera) and then the clips of:

* the overlap window: the camera's own newest day and the `overlap_days` before it, so a camera
  that is days behind the others (a Jetson offline) is followed on its own clock;
* every day folder that was not there before, whatever its age: a camera's late backlog;
* every *hot* day: a day whose newest clip changed less than `hot_s` ago (by the store's
  last-modified times against the clock `now`), so a backlog uploaded into an older day folder
  over several ticks is followed until it settles;
* every day holding a clip seen but not yet stable.

Enumerating a camera's day folders costs O(days) on some stores, so it is done in full only every
`full_listing_s`; in between, only the folders from the oldest day still followed on are enumerated.
A late folder older than that (a backlog uploaded out of order) is found at the next full listing.

A camera seen for the first time is backfilled: its days from (its newest day - `backfill_days`)
on are listed; older folders are noted and left alone, and the result says how far back it went.

A clip is *stable* once two consecutive ticks saw the same size, etag and last-modified time; only
stable clips are reported, so files still uploading are left alone. A rewrite (A -> B -> A) always
changes the last-modified time, so it is never taken for "unchanged", and the run key carries it,
so the run of the rewritten clip is not deduplicated against the first one.

What is not followed: a clip added, after it settled, to a day folder that is older than the
overlap window (a rewrite of old footage). Raise `overlap_days`, or materialize that clip's
`buffer_frames` partition by hand.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

from pipeline.keys import BUFFER_PREFIX, QUALITY_PREFIX, buffer_clip_parts

Listing = Iterable[tuple[str, int, str, datetime]]  # (key, size, etag, last_modified)


@dataclass
class CameraCursor:
    newest_day: str
    known_days: list[str]  # the camera's day folders at the last listing
    hot: dict[str, str] = field(default_factory=dict)  # day -> newest last-modified seen in it (ISO)


@dataclass
class BufferCursor:
    cameras: dict[str, CameraCursor] = field(default_factory=dict)
    seen: dict[str, dict[str, list]] = field(default_factory=dict)  # day -> key -> [size, etag, modified, reported]
    last_full_listing: str | None = None  # when every camera's day folders were last enumerated (ISO)

    @property
    def newest_day(self) -> str | None:
        return max((c.newest_day for c in self.cameras.values()), default=None)

    @classmethod
    def parse(cls, text: str | None) -> "BufferCursor":
        if not text:
            return cls()
        raw = json.loads(text)
        if "cameras" not in raw:  # the single-day cursor of earlier versions: start each camera afresh
            return cls()
        cameras = {name: CameraCursor(c["newest_day"], list(c["known_days"]), dict(c.get("hot", {})))
                   for name, c in raw["cameras"].items()}
        return cls(cameras, raw.get("seen", {}), raw.get("last_full_listing"))

    def dump(self) -> str:
        cameras = {name: {"newest_day": c.newest_day, "known_days": c.known_days, "hot": c.hot}
                   for name, c in sorted(self.cameras.items())}
        return json.dumps({"cameras": cameras, "seen": self.seen, "last_full_listing": self.last_full_listing},
                          sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class StableClip:
    key: str
    camera: str
    day: str
    size: int
    etag: str
    modified: str  # ISO last-modified: part of the run key, so a rewrite is a new run

    @property
    def run_key(self) -> str:
        return f"{self.key}@{self.etag}@{self.modified}"


@dataclass
class Backfill:
    """What a camera's first tick did: the days it listed and the older folders it left alone."""

    camera: str
    first_day: str
    newest_day: str
    days_listed: int
    older_days_left: int

    def describe(self) -> str:
        older = f"; {self.older_days_left} older day folder(s) left alone" if self.older_days_left else ""
        return (f"{self.camera}: backfilled {self.days_listed} day(s), {self.first_day} to {self.newest_day}"
                f"{older}")


def _is_day(name: str) -> bool:
    try:
        date.fromisoformat(name)
        return len(name) == 10
    except ValueError:
        return False


def _minus(day: str, days: int) -> str:
    return (date.fromisoformat(day) - timedelta(days=days)).isoformat()


def _iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds")


def scan(cursor: BufferCursor, list_prefixes: Callable[..., list[str]], list_objects: Callable[[str], Listing], *,
         now: datetime | None = None, overlap_days: int = 1, backfill_days: int = 7, hot_s: float = 3600.0,
         full_listing_s: float = 3600.0, ignored: list[tuple[str, str]] | None = None,
         backfills: list[Backfill] | None = None) -> tuple[list[StableClip], BufferCursor]:
    """One tick: (stable clips not yet reported, new cursor). `list_prefixes(p, start_after=None)` returns
    immediate sub-prefixes ending in '/' (with `start_after`, only those sorting after it, as
    ArtifactStore.list_prefixes); `list_objects(p)` yields (key, size, etag, last_modified) under p.
    Every `full_listing_s` (by `now`) each camera's day folders are enumerated in full, so a late folder
    older than the camera's window is found; in between, a tick enumerates only the folders from the
    oldest day it still follows (window, hot, pending) on, so it costs what is new. Keys and folders
    outside `buffer/<camera>/<YYYY-MM-DD>/<HHMMSS>.mp4` never start a run; when `ignored` is a list,
    each one seen this tick is appended as (key or prefix, why). When `backfills` is a list, each
    camera's first tick is appended to it."""
    now = now or datetime.now(timezone.utc)
    skipped = ignored if ignored is not None else []
    full = cursor.last_full_listing is None or \
        (now - datetime.fromisoformat(cursor.last_full_listing)).total_seconds() >= full_listing_s
    cooled = now - timedelta(seconds=hot_s)
    cameras: dict[str, CameraCursor] = {}
    to_list: list[tuple[str, str, str]] = []  # (camera, day, prefix)
    for camera_prefix in list_prefixes(BUFFER_PREFIX):
        if camera_prefix == QUALITY_PREFIX:
            continue
        camera = camera_prefix[len(BUFFER_PREFIX):].rstrip("/")
        before = cursor.cameras.get(camera)
        hot_days = {d for d, at in (before.hot if before else {}).items() if datetime.fromisoformat(at) > cooled}
        pending = {d for d, clips in cursor.seen.items()
                   if any(k.startswith(camera_prefix) and not v[3] for k, v in clips.items())}
        start_after = None
        if before is not None and not full:  # folders before the oldest day still followed cost nothing
            start_after = camera_prefix + min({_minus(before.newest_day, overlap_days)} | hot_days | pending)
        days = []
        for day_prefix in list_prefixes(camera_prefix, start_after=start_after):
            day = day_prefix.rstrip("/").rsplit("/", 1)[-1]
            if _is_day(day):
                days.append(day)
            else:
                skipped.append((day_prefix, "folder is not a YYYY-MM-DD day"))
        if not days:
            if before is not None and not full:
                cameras[camera] = before
            continue
        newest = max(days + ([before.newest_day] if before else []))
        if before is None:  # first sight of this camera: a bounded backfill
            since = _minus(newest, backfill_days)
            chosen = [d for d in days if d >= since]
            if backfills is not None:
                backfills.append(Backfill(camera, min(chosen), newest, len(chosen), len(days) - len(chosen)))
            known_days = days
        else:
            since = _minus(newest, overlap_days)
            known = set(before.known_days)
            chosen = [d for d in days if d >= since or d not in known or d in hot_days or d in pending]
            known_days = days if full else sorted(known | set(days))
        cameras[camera] = CameraCursor(newest, sorted(known_days), {})
        to_list += [(camera, day, f"{camera_prefix}{day}/") for day in sorted(chosen)]

    ready: list[StableClip] = []
    seen: dict[str, dict[str, list]] = {}
    for camera, day, prefix in to_list:
        before_day = cursor.seen.get(day, {})
        day_seen = seen.setdefault(day, {})
        newest_change: str | None = None
        for key, size, etag, modified in list_objects(prefix):
            parts = buffer_clip_parts(key)
            if parts is None:
                skipped.append((key, "not buffer/<camera>/<YYYY-MM-DD>/<HHMMSS>.mp4"))
                continue
            stamp = _iso(modified)
            newest_change = max(newest_change or stamp, stamp)
            previous = before_day.get(key)
            if previous and previous[:3] == [size, etag, stamp]:
                if not previous[3]:
                    ready.append(StableClip(key, camera, day, size, etag, stamp))
                day_seen[key] = [size, etag, stamp, True]
            else:
                day_seen[key] = [size, etag, stamp, False]  # new or still changing: look again next tick
        if newest_change is not None:
            cameras[camera].hot[day] = newest_change
    seen = {d: v for d, v in seen.items() if v}
    return ready, BufferCursor(cameras, seen, now.isoformat() if full else cursor.last_full_listing)
