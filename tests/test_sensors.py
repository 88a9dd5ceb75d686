"""The automation: buffer_footage_sensor, annotation_exports_sensor and the monthly schedule.

Sensors are evaluated the way the daemon does it (``build_sensor_context`` + a call), against real
bytes in a local directory and in a moto S3 bucket on loopback. The stores the sensors get are
counting subclasses of the real stores, so the tests can also prove what a tick listed.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from pipeline.buffer_listing import BufferCursor, scan
from orchestration.sensors import BufferSensorSettings, annotation_exports_sensor, buffer_footage_sensor
from resources.storage import ArtifactStore, LocalArtifactStore, S3ArtifactStore

try:
    from tests.s3_server import REGION, create_bucket
except ImportError:  # pragma: no cover - depends on how pytest was started
    from s3_server import REGION, create_bucket

S3_PREFIX = "lbzf/sensors"  # the store's root inside the bucket: keys and StartAfter must both honour it
CLIP = "buffer/cam1/2026-07-01/080000.mp4"
CLIP_PARTITION = "cam1|2026-07-01|080000"


# --------------------------------------------------------------------------- counting stores


@dataclass
class Calls:
    """What the sensor's store was asked to list."""

    list_keys: list[str] = field(default_factory=list)  # prefixes given to list_keys
    keys: list[str] = field(default_factory=list)  # keys list_keys returned
    list_prefixes: list[tuple[str, str | None, list[str]]] = field(default_factory=list)  # (prefix, start_after, result)

    def clear(self) -> None:
        self.list_keys.clear()
        self.keys.clear()
        self.list_prefixes.clear()

    def day_prefixes_returned(self) -> list[str]:
        """Day folders the camera-level listings handed back (`buffer/<camera>/<day>/`)."""
        return sorted(p for prefix, _after, out in self.list_prefixes if prefix.count("/") == 2 for p in out)


def counting(store_cls: type[ArtifactStore], calls: Calls, **fields: Any) -> ArtifactStore:
    """An instance of a subclass of ``store_cls`` that records its listings in ``calls``."""

    class Counting(store_cls):  # type: ignore[valid-type, misc]
        def list_keys(self, prefix: str = "", start_after: str | None = None):
            calls.list_keys.append(prefix)
            for info in super().list_keys(prefix, start_after):
                calls.keys.append(info.key)
                yield info

        def list_prefixes(self, prefix: str = "", start_after: str | None = None) -> list[str]:
            out = super().list_prefixes(prefix, start_after)
            calls.list_prefixes.append((prefix, start_after, list(out)))
            return out

    return Counting(**fields)


@dataclass
class Backend:
    name: str
    seeder: ArtifactStore  # allow_source_writes=True: plays the cameras / CVAT
    store: ArtifactStore  # what the sensor gets: pipeline rights, counting
    calls: Calls


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.integration)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    calls = Calls()
    if request.param == "local":
        fields: dict[str, Any] = {"root": str(tmp_path / "store")}
        return Backend("local", LocalArtifactStore(allow_source_writes=True, **fields),
                       counting(LocalArtifactStore, calls, **fields), calls)
    endpoint = request.getfixturevalue("s3_endpoint")
    fields = {"bucket": create_bucket(endpoint), "prefix": S3_PREFIX, "endpoint_url": endpoint,
              "region_name": REGION}
    return Backend("s3", S3ArtifactStore(allow_source_writes=True, **fields),
                   counting(S3ArtifactStore, calls, **fields), calls)


@pytest.fixture
def instance() -> dg.DagsterInstance:
    return dg.DagsterInstance.ephemeral()


STILL = BufferSensorSettings(hot_s=0)  # no day stays "hot": only the window and new folders are re-listed


def tick(sensor, instance: dg.DagsterInstance, store: ArtifactStore, cursor: str | None,
         settings: BufferSensorSettings = BufferSensorSettings()) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={
        "store": store, "buffer_sensor_settings": settings})
    result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def clip_etag(seeder: ArtifactStore, key: str) -> str:
    info = seeder.stat(key)
    assert info is not None
    return info.etag


def clip_run_key(seeder: ArtifactStore, key: str) -> str:
    """The run key a stable clip gets: key, etag and last-modified time (a rewrite is a new run)."""
    info = seeder.stat(key)
    assert info is not None
    return f"{key}@{info.etag}@{info.last_modified.astimezone(timezone.utc).isoformat(timespec='microseconds')}"


def cursor_keys(result: dg.SensorResult) -> set[str]:
    return {key for day in BufferCursor.parse(result.cursor).seen.values() for key in day}


# --------------------------------------------------------------------------- buffer_footage_sensor


def test_new_clip_is_requested_once_stable(backend: Backend, instance: dg.DagsterInstance) -> None:
    backend.seeder.write_bytes(CLIP, b"clip bytes")

    first = tick(buffer_footage_sensor, instance, backend.store, None)
    assert first.run_requests == [] and first.dynamic_partitions_requests == []  # not known stable yet
    assert BufferCursor.parse(first.cursor).newest_day == "2026-07-01"
    assert cursor_keys(first) == {CLIP}

    second = tick(buffer_footage_sensor, instance, backend.store, first.cursor)
    etag = clip_etag(backend.seeder, CLIP)
    assert [(r.run_key, r.partition_key, r.tags["lbzf/clip"]) for r in second.run_requests] == [
        (clip_run_key(backend.seeder, CLIP), CLIP_PARTITION, CLIP)]
    [add] = second.dynamic_partitions_requests
    assert isinstance(add, dg.AddDynamicPartitionsRequest)
    assert (add.partitions_def_name, list(add.partition_keys)) == ("buffer_clips", [CLIP_PARTITION])
    assert BufferCursor.parse(second.cursor).seen["2026-07-01"][CLIP] == [len(b"clip bytes"), etag, clip_run_key(backend.seeder, CLIP).rsplit("@", 1)[1], True]

    # what the daemon does with the result: the partition exists afterwards, the run targets it
    instance.add_dynamic_partitions(add.partitions_def_name, list(add.partition_keys))
    assert instance.get_dynamic_partitions("buffer_clips") == [CLIP_PARTITION]
    assert second.run_requests[0].partition_key in instance.get_dynamic_partitions("buffer_clips")


def test_cameras_sharing_a_day_are_each_requested_once(backend: Backend, instance: dg.DagsterInstance) -> None:
    """The cursor groups clips by day; one camera's listing of that day must not evict the other's clips."""
    keys = [CLIP, "buffer/cam2/2026-07-01/080000.mp4", "buffer/cam3/2026-07-01/120000.mp4"]
    for key in keys:
        backend.seeder.write_bytes(key, b"x")
    cursor = None
    requested = []
    for _ in range(4):
        result = tick(buffer_footage_sensor, instance, backend.store, cursor)
        requested += [r.partition_key for r in result.run_requests]
        cursor = result.cursor
    assert sorted(requested) == [CLIP_PARTITION, "cam2|2026-07-01|080000", "cam3|2026-07-01|120000"]
    assert cursor_keys(result) == set(keys)


def test_non_clips_and_quality_logs_are_ignored(backend: Backend, instance: dg.DagsterInstance) -> None:
    for key in ("buffer/quality/2026-07-01.parquet", "buffer/cam1/2026-07-01/notes.txt",
                "buffer/cam1/2026-07-01/sub/080000.mp4", "buffer/cam1/not-a-day/080000.mp4", CLIP):
        backend.seeder.write_bytes(key, b"x")
    cursor = None
    requested = []
    for _ in range(3):
        result = tick(buffer_footage_sensor, instance, backend.store, cursor)
        requested += [r.partition_key for r in result.run_requests]
        cursor = result.cursor
    assert requested == [CLIP_PARTITION]
    assert "buffer/quality/" not in backend.calls.list_keys


def test_still_uploading_clip_waits_until_unchanged_across_two_ticks(backend: Backend,
                                                                     instance: dg.DagsterInstance) -> None:
    sizes = [1000, 5000, 9000]  # the upload grows between ticks
    backend.seeder.write_bytes(CLIP, b"a" * sizes[0])
    result = tick(buffer_footage_sensor, instance, backend.store, None)
    for size in sizes[1:]:
        backend.seeder.write_bytes(CLIP, b"a" * size)
        result = tick(buffer_footage_sensor, instance, backend.store, result.cursor)
        assert result.run_requests == [] and result.dynamic_partitions_requests == []
        assert BufferCursor.parse(result.cursor).seen["2026-07-01"][CLIP][0] == size

    # same size, different bytes (a re-encode finishing): still a change, still no run
    backend.seeder.write_bytes(CLIP, b"b" * sizes[-1])
    if backend.name == "local":  # the local etag is size+mtime; make sure the mtime moved (coarse clocks)
        path = Path(backend.seeder.root) / CLIP
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    result = tick(buffer_footage_sensor, instance, backend.store, result.cursor)
    assert result.run_requests == []

    final_etag = clip_etag(backend.seeder, CLIP)
    result = tick(buffer_footage_sensor, instance, backend.store, result.cursor)  # unchanged since last tick
    assert [(r.run_key, r.partition_key) for r in result.run_requests] == [(clip_run_key(backend.seeder, CLIP), CLIP_PARTITION)]


def test_repeated_ticks_are_idempotent(backend: Backend, instance: dg.DagsterInstance) -> None:
    backend.seeder.write_bytes(CLIP, b"clip")
    first = tick(buffer_footage_sensor, instance, backend.store, None)
    second = tick(buffer_footage_sensor, instance, backend.store, first.cursor)
    assert len(second.run_requests) == 1

    third = tick(buffer_footage_sensor, instance, backend.store, second.cursor)
    assert third.run_requests == [] and third.dynamic_partitions_requests == []
    assert third.cursor == second.cursor

    # the daemon re-evaluating from the same old cursor (e.g. after a crash before the cursor was
    # saved) asks for the same run key, so Dagster does not launch the clip twice
    again = tick(buffer_footage_sensor, instance, backend.store, first.cursor)
    assert [r.run_key for r in again.run_requests] == [r.run_key for r in second.run_requests]
    assert again.cursor == second.cursor


def test_replaced_clip_is_requested_again_with_a_new_run_key(backend: Backend, instance: dg.DagsterInstance) -> None:
    backend.seeder.write_bytes(CLIP, b"v1")
    cursor = tick(buffer_footage_sensor, instance, backend.store, None).cursor
    first_run = tick(buffer_footage_sensor, instance, backend.store, cursor)
    backend.seeder.write_bytes(CLIP, b"version 2")
    changed = tick(buffer_footage_sensor, instance, backend.store, first_run.cursor)
    assert changed.run_requests == []
    second_run = tick(buffer_footage_sensor, instance, backend.store, changed.cursor)
    assert [r.partition_key for r in second_run.run_requests] == [CLIP_PARTITION]
    assert second_run.run_requests[0].run_key == clip_run_key(backend.seeder, CLIP)
    assert second_run.run_requests[0].run_key != first_run.run_requests[0].run_key


def test_expired_clip_leaves_the_cursor_without_error(backend: Backend, instance: dg.DagsterInstance) -> None:
    other = "buffer/cam1/2026-07-01/090000.mp4"
    lone = "buffer/cam2/2026-07-01/100000.mp4"
    for key in (CLIP, other, lone):
        backend.seeder.write_bytes(key, b"x")
    cursor = tick(buffer_footage_sensor, instance, backend.store, None).cursor
    steady = tick(buffer_footage_sensor, instance, backend.store, cursor)
    assert len(steady.run_requests) == 3

    assert backend.seeder.delete(CLIP) and backend.seeder.delete(lone)  # the buffer's retention removed them
    after = tick(buffer_footage_sensor, instance, backend.store, steady.cursor)
    assert after.run_requests == []
    assert cursor_keys(after) == {other}
    assert BufferCursor.parse(after.cursor).newest_day == "2026-07-01"

    # the day emptied completely: still no error, and nothing left of it in the cursor
    backend.seeder.delete(other)
    emptied = tick(buffer_footage_sensor, instance, backend.store, after.cursor)
    assert emptied.run_requests == [] and BufferCursor.parse(emptied.cursor).seen == {}


def test_days_older_than_the_overlap_window_are_dropped_and_not_listed_again(
        backend: Backend, instance: dg.DagsterInstance) -> None:
    old_days = [(date(2026, 6, 1) + timedelta(days=i)).isoformat() for i in range(20)]
    for day in old_days:
        backend.seeder.write_bytes(f"buffer/cam1/{day}/080000.mp4", b"old")
    cursor = tick(buffer_footage_sensor, instance, backend.store, None, STILL).cursor
    backfilled = tick(buffer_footage_sensor, instance, backend.store, cursor, STILL)
    # the first sight backfills 7 days before the newest (bounded); the 12 older folders are left alone
    assert sorted(r.partition_key.split("|")[1] for r in backfilled.run_requests) == old_days[-8:]
    cursor = tick(buffer_footage_sensor, instance, backend.store, backfilled.cursor, STILL).cursor
    assert sorted(BufferCursor.parse(cursor).seen) == ["2026-06-19", "2026-06-20"]  # newest day and the overlap

    backend.seeder.write_bytes("buffer/cam1/2026-06-21/080000.mp4", b"new")
    backend.seeder.write_bytes("buffer/cam1/2026-06-22/080000.mp4", b"new")
    moved = tick(buffer_footage_sensor, instance, backend.store, cursor, STILL)
    parsed = BufferCursor.parse(moved.cursor)
    assert parsed.newest_day == "2026-06-22" and {"2026-06-21", "2026-06-22"} <= set(parsed.seen)

    # a late clip lands in a known day that aged out and settled: it is not looked at any more
    backend.seeder.write_bytes("buffer/cam1/2026-06-19/235900.mp4", b"late")
    backend.calls.clear()
    cursor = moved.cursor
    requested = []
    for _ in range(3):
        result = tick(buffer_footage_sensor, instance, backend.store, cursor, STILL)
        requested += [r.partition_key for r in result.run_requests]
        cursor = result.cursor
    assert requested == ["cam1|2026-06-21|080000", "cam1|2026-06-22|080000"]
    assert sorted(set(backend.calls.list_keys)) == ["buffer/cam1/2026-06-21/", "buffer/cam1/2026-06-22/"]
    assert len(backend.calls.list_keys) == 6  # two day folders per tick, three ticks
    assert set(backend.calls.keys) == {"buffer/cam1/2026-06-21/080000.mp4", "buffer/cam1/2026-06-22/080000.mp4"}
    # the camera's day folders are enumerated by one delimiter listing per tick (so a late folder of any
    # age is noticed); the clips of old days are not listed
    assert [prefix for prefix, _after, _out in backend.calls.list_prefixes] == ["buffer/", "buffer/cam1/"] * 3


def _fake_buffer(listed: dict[str, list[tuple]]):
    """list_prefixes / list_objects over a dict of day prefix -> clips, recording what was asked."""
    object_calls: list[str] = []

    def list_prefixes(prefix: str, start_after: str | None = None) -> list[str]:
        if prefix == "buffer/":
            return sorted({"/".join(p.split("/")[:2]) + "/" for p in listed} | {"buffer/quality/"})
        return [p for p in sorted(listed) if p.startswith(prefix) and (start_after is None or p > start_after)]

    def list_objects(prefix: str):
        object_calls.append(prefix)
        return list(listed.get(prefix, []))

    return list_prefixes, list_objects, object_calls


T0 = datetime(2026, 7, 10, 12, 0, tzinfo=timezone.utc)


def test_scan_lists_only_the_window(tmp_path: Path) -> None:
    """`scan` itself, with counting callables and the clock as an input: what it asks for, tick by tick."""
    listed = {f"buffer/cam1/{day}/": [(f"buffer/cam1/{day}/080000.mp4", 10, f"e-{day}", T0 - timedelta(days=2))]
              for day in ("2026-07-01", "2026-07-02", "2026-07-03", "2026-07-04")}
    list_prefixes, list_objects, object_calls = _fake_buffer(listed)
    backfills: list = []
    ready, cursor = scan(BufferCursor(), list_prefixes, list_objects, now=T0, backfill_days=1, backfills=backfills)
    assert ready == [] and cursor.newest_day == "2026-07-04" and sorted(cursor.seen) == ["2026-07-03", "2026-07-04"]
    assert object_calls == ["buffer/cam1/2026-07-03/", "buffer/cam1/2026-07-04/"]
    assert [b.describe() for b in backfills] == [
        "cam1: backfilled 2 day(s), 2026-07-03 to 2026-07-04; 2 older day folder(s) left alone"]

    object_calls.clear()
    ready, cursor2 = scan(cursor, list_prefixes, list_objects, now=T0)
    assert [c.key for c in ready] == ["buffer/cam1/2026-07-03/080000.mp4", "buffer/cam1/2026-07-04/080000.mp4"]
    assert object_calls == ["buffer/cam1/2026-07-03/", "buffer/cam1/2026-07-04/"]
    assert not any(p.startswith("buffer/quality/") for p in object_calls)

    object_calls.clear()
    ready, cursor3 = scan(cursor2, list_prefixes, list_objects, now=T0)
    assert ready == [] and cursor3 == cursor2 and len(object_calls) == 2


def test_a_late_camera_is_followed_on_its_own_clock_and_its_backlog_is_not_lost() -> None:
    """cam2's Jetson is offline for three days while cam1 moves on; then cam2 uploads today first and its
    backlog afterwards, folder by folder, over several ticks. Every clip runs once."""
    listed: dict[str, list[tuple]] = {}

    def upload(camera: str, day: str, clip: str, at: datetime) -> None:
        listed.setdefault(f"buffer/{camera}/{day}/", []).append(
            (f"buffer/{camera}/{day}/{clip}.mp4", 100, f"e-{camera}-{day}-{clip}", at))

    list_prefixes, list_objects, _calls = _fake_buffer(listed)
    reported: list[str] = []
    cursor, now = BufferCursor(), T0

    def ticks(n: int) -> None:
        nonlocal cursor, now
        for _ in range(n):  # a tick a minute; every camera's folders are enumerated in full every 5 minutes
            ready, cursor = scan(cursor, list_prefixes, list_objects, now=now, full_listing_s=300)
            reported.extend(c.key for c in ready)
            now += timedelta(minutes=1)

    for day in ("2026-07-06", "2026-07-07"):
        upload("cam1", day, "080000", now)
        upload("cam2", day, "080000", now)
    ticks(2)
    for day in ("2026-07-08", "2026-07-09", "2026-07-10"):  # cam2 offline: only cam1 uploads, days pass
        upload("cam1", day, "080000", now)
        ticks(2)
        now += timedelta(days=1)
    assert BufferCursor.parse(cursor.dump()).cameras["cam2"].newest_day == "2026-07-07"
    upload("cam2", "2026-07-10", "080000", now)  # back online: today first
    ticks(2)
    upload("cam2", "2026-07-08", "080000", now)  # then the backlog, an old day folder at a time
    ticks(1)
    upload("cam2", "2026-07-08", "120000", now)  # more of the same old day, after its folder was seen
    ticks(1)
    upload("cam2", "2026-07-09", "080000", now)
    ticks(3)
    upload("cam2", "2026-07-08", "160000", now + timedelta(minutes=5))  # still uploading into the old day
    ticks(3)
    expected = sorted(key for clips in listed.values() for key, *_ in clips)
    assert sorted(reported) == expected  # none missed
    assert len(reported) == len(set(reported))  # none twice


def test_rewrite_a_b_a_is_a_change_every_time() -> None:
    """A clip rewritten A -> B -> A: each version is reported once it settles, with its own run key,
    so Dagster's run-key deduplication cannot swallow the third (A again)."""
    key = "buffer/cam1/2026-07-10/080000.mp4"
    listed = {"buffer/cam1/2026-07-10/": [(key, 100, "etag-A", T0)]}
    list_prefixes, list_objects, _calls = _fake_buffer(listed)
    cursor, run_keys, now = BufferCursor(), [], T0
    for version, (etag, size) in enumerate([("etag-A", 100), ("etag-B", 120), ("etag-A", 100)]):
        listed["buffer/cam1/2026-07-10/"] = [(key, size, etag, T0 + timedelta(minutes=10 * version))]
        for _ in range(2):
            ready, cursor = scan(cursor, list_prefixes, list_objects, now=now)
            run_keys += [c.run_key for c in ready]
            now += timedelta(minutes=1)
    assert len(run_keys) == 3 and len(set(run_keys)) == 3
    assert [k.split("@")[1] for k in run_keys] == ["etag-A", "etag-B", "etag-A"]
    # unchanged afterwards: no further run
    ready, _ = scan(cursor, list_prefixes, list_objects, now=now)
    assert ready == []


@pytest.mark.integration
def test_late_camera_backfill_and_rewrite_on_s3(s3_endpoint: str, instance: dg.DagsterInstance) -> None:
    """The same three cases through the sensor, against real S3 listings (moto on loopback)."""
    bucket = create_bucket(s3_endpoint)
    fields = {"bucket": bucket, "endpoint_url": s3_endpoint, "region_name": REGION}
    seeder = S3ArtifactStore(allow_source_writes=True, **fields)
    store = S3ArtifactStore(**fields)
    requested: list[tuple[str, str]] = []
    cursor = None

    every_tick = BufferSensorSettings(full_listing_s=0)  # the clock is real here: enumerate in full every tick

    def ticks(n: int) -> None:
        nonlocal cursor
        for _ in range(n):
            result = tick(buffer_footage_sensor, instance, store, cursor, every_tick)
            requested.extend((r.partition_key, r.run_key) for r in result.run_requests)
            cursor = result.cursor

    # history older than the backfill horizon, then a fortnight of cam1 and a first sight that backfills
    days = [(date(2026, 7, 1) + timedelta(days=i)).isoformat() for i in range(14)]
    for day in days:
        seeder.write_bytes(f"buffer/cam1/{day}/080000.mp4", b"cam1 " + day.encode())
    seeder.write_bytes(f"buffer/cam2/{days[8]}/080000.mp4", b"cam2 before going offline")
    ticks(2)
    partitions = [p for p, _ in requested]
    assert sorted(p for p in partitions if p.startswith("cam1")) == [f"cam1|{d}|080000" for d in days[-8:]]
    assert partitions.count(f"cam2|{days[8]}|080000") == 1  # cam2's own newest day, though cam1 is 5 days ahead

    # cam2 comes back: today first, then its backlog into day folders older than cam1's window
    requested.clear()
    seeder.write_bytes(f"buffer/cam2/{days[13]}/080000.mp4", b"cam2 today")
    ticks(2)
    for day in days[9:13]:
        seeder.write_bytes(f"buffer/cam2/{day}/080000.mp4", b"cam2 backlog " + day.encode())
    ticks(2)
    seeder.write_bytes(f"buffer/cam2/{days[9]}/120000.mp4", b"more backlog")  # its folder is known by now
    ticks(2)
    assert sorted(p for p, _ in requested) == sorted(
        [f"cam2|{d}|080000" for d in days[9:14]] + [f"cam2|{days[9]}|120000"])

    # a rewrite A -> B -> A of a clip that already ran
    requested.clear()
    clip = f"buffer/cam1/{days[13]}/080000.mp4"
    original = seeder.read_bytes(clip)
    for data in (b"rewritten B", original):
        seeder.write_bytes(clip, data)
        ticks(2)
    assert [p for p, _ in requested] == [f"cam1|{days[13]}|080000"] * 2
    assert len({k for _, k in requested}) == 2 and all(k.startswith(clip + "@") for _, k in requested)
    ticks(2)
    assert len(requested) == 2  # settled: nothing more


@pytest.mark.parametrize("start_after, expected", [
    (None, ["2026-06-30", "2026-07-01", "2026-07-02", "2026-07-03"]),
    ("buffer/cam1/2026-07-01", ["2026-07-01", "2026-07-02", "2026-07-03"]),
    ("buffer/cam1/2026-07-01/", ["2026-07-02", "2026-07-03"]),  # strictly after: the folder itself is not
    ("buffer/cam1/2026-07-0", ["2026-07-01", "2026-07-02", "2026-07-03"]),
    ("buffer/cam1/2026-07-03", ["2026-07-03"]),
    ("buffer/cam1/2026-07-04", []),
    ("buffer/cam0", ["2026-06-30", "2026-07-01", "2026-07-02", "2026-07-03"]),
    ("buffer/cam2", []),
])
def test_list_prefixes_start_after(backend: Backend, start_after: str | None, expected: list[str]) -> None:
    """The store feature the sensor's window relies on: the directory and S3 give the same answers."""
    for key in ("buffer/cam1/2026-06-30/080000.mp4", "buffer/cam1/2026-07-01/080000.mp4",
                "buffer/cam1/2026-07-01/090000.mp4", "buffer/cam1/2026-07-02/sub/x.mp4",
                "buffer/cam1/2026-07-03/x", "buffer/cam2/2026-07-09/080000.mp4"):
        backend.seeder.write_bytes(key, b"x")
    assert backend.store.list_prefixes("buffer/cam1/", start_after=start_after) == [
        f"buffer/cam1/{day}/" for day in expected]
    assert backend.store.list_prefixes("buffer/cam1/2026-07-0", start_after=start_after) == [
        f"buffer/cam1/{day}/" for day in expected if day.startswith("2026-07-0")]


# --------------------------------------------------------------------------- annotation_exports_sensor


EXPORT = "annotations/incoming/stage_a/ana/export.zip"


def test_annotation_export_requested_once_stable_then_again_when_changed(
        backend: Backend, instance: dg.DagsterInstance) -> None:
    backend.seeder.write_bytes(EXPORT, b"PK export v1")
    backend.seeder.write_bytes("annotations/incoming/stage_a/ana/readme.txt", b"not an export")
    backend.seeder.write_bytes("annotations/packages/stage_a.zip", b"outgoing package, not incoming")

    first = tick(annotation_exports_sensor, instance, backend.store, None)
    assert first.run_requests == []  # just landed: maybe still uploading

    second = tick(annotation_exports_sensor, instance, backend.store, first.cursor)
    etag_v1 = clip_etag(backend.seeder, EXPORT)
    assert [(r.run_key, r.tags["lbzf/exports"]) for r in second.run_requests] == [(f"{EXPORT}@{etag_v1}", "1")]

    third = tick(annotation_exports_sensor, instance, backend.store, second.cursor)
    assert third.run_requests == []  # repeated tick: nothing new
    again = tick(annotation_exports_sensor, instance, backend.store, first.cursor)  # re-evaluated old cursor
    assert [r.run_key for r in again.run_requests] == [r.run_key for r in second.run_requests]

    backend.seeder.write_bytes(EXPORT, b"PK export v2, corrected boxes")  # the annotator re-exported
    changed = tick(annotation_exports_sensor, instance, backend.store, third.cursor)
    assert changed.run_requests == []  # changed since the last tick: wait one more
    requested = tick(annotation_exports_sensor, instance, backend.store, changed.cursor)
    etag_v2 = clip_etag(backend.seeder, EXPORT)
    assert etag_v2 != etag_v1
    assert [r.run_key for r in requested.run_requests] == [f"{EXPORT}@{etag_v2}"]
    assert tick(annotation_exports_sensor, instance, backend.store, requested.cursor).run_requests == []


def test_annotation_exports_landing_together_make_one_run(backend: Backend, instance: dg.DagsterInstance) -> None:
    second_export = "annotations/incoming/stage_a/ben/export.json"
    growing = "annotations/incoming/hard_2026-07/ana/export.xml"
    backend.seeder.write_bytes(EXPORT, b"a")
    backend.seeder.write_bytes(second_export, b"{}")
    backend.seeder.write_bytes(growing, b"<a")
    cursor = tick(annotation_exports_sensor, instance, backend.store, None).cursor
    backend.seeder.write_bytes(growing, b"<annotations")
    result = tick(annotation_exports_sensor, instance, backend.store, cursor)
    [run] = result.run_requests
    assert run.run_key == ",".join(f"{k}@{clip_etag(backend.seeder, k)}" for k in sorted([EXPORT, second_export]))
    assert run.tags["lbzf/exports"] == "2"
    later = tick(annotation_exports_sensor, instance, backend.store, result.cursor)
    assert [r.run_key for r in later.run_requests] == [f"{growing}@{clip_etag(backend.seeder, growing)}"]

    backend.seeder.delete(EXPORT)  # removed exports are forgotten without error
    after = tick(annotation_exports_sensor, instance, backend.store, later.cursor)
    assert after.run_requests == [] and EXPORT not in after.cursor


# --------------------------------------------------------------------------- schedule and registration


def test_monthly_schedule_requests_the_month_that_just_ended(tmp_path: Path) -> None:
    from orchestration.definitions import build_definitions

    defs = build_definitions("local", env={"LBZF_STORAGE_ROOT": str(tmp_path / "store")})
    schedule = defs.resolve_schedule_def("monthly_retraining_job_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 6 1 * *", "America/Bogota")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING

    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 8, 1, 6, 0, tzinfo=ZoneInfo("America/Bogota")))
    [run] = schedule.evaluate_tick(context).run_requests
    assert run.partition_key == "2026-07-01"
    assert run.tags["dagster/partition"] == "2026-07-01"
    assert run.job_name == "monthly_retraining_job"

    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2027, 1, 1, 6, 0, tzinfo=ZoneInfo("America/Bogota")))
    assert [r.partition_key for r in schedule.evaluate_tick(context).run_requests] == ["2026-12-01"]


def test_schedule_and_sensors_are_registered() -> None:
    from orchestration import definitions

    defs = definitions.defs
    assert "monthly_retraining_job_schedule" in {s.name for s in defs.schedules}
    assert {"annotation_exports_sensor", "buffer_footage_sensor"} <= {s.name for s in defs.sensors}
    assert defs.resolve_schedule_def("monthly_retraining_job_schedule").job_name == "monthly_retraining_job"
    assert defs.resolve_sensor_def("buffer_footage_sensor").job_name == "buffer_frames_job"
    assert defs.resolve_sensor_def("annotation_exports_sensor").job_name == "annotations_job"
    for name in ("buffer_footage_sensor", "annotation_exports_sensor"):
        sensor = defs.resolve_sensor_def(name)
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
        assert "store" in sensor.required_resource_keys
    assert "store" in defs.resources
