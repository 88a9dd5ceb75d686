"""Footage faults on real bytes: each bad upload is quarantined with a clear error, the source bytes stay
as they were, nothing partial is written, and the fixed upload re-runs to byte-identical frames."""
from __future__ import annotations

import fractions
from pathlib import Path

import av
import dagster as dg
import numpy as np
import pandas as pd
import pytest

from pipeline.errors import BadFootageError, SplitError
from pipeline.frames import extract_frames, probe_video
from pipeline.near_duplicates import cross_split_pairs, phash_bytes
from pipeline.quarantine import quarantine_bad_footage, quarantine_key, read_record
from orchestration.sensors import BufferSensorSettings, buffer_footage_sensor
from pipeline.split import check_unique_sources
from resources.storage import LocalArtifactStore

try:
    from reliability.conftest import store_hashes, tree_hashes
except ImportError:  # pragma: no cover
    from tests.reliability.conftest import store_hashes, tree_hashes

MS = fractions.Fraction(1, 1000)


def encode(path: Path, n: int = 90, fps: int = 30, *, faststart: bool = False, size=(160, 120)) -> Path:
    """A real H.264 MP4 (moov at the end unless faststart) with a moving square."""
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format="mp4", options=options) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = MS
        stream.codec_context.time_base = MS
        stream.options = {"preset": "ultrafast", "g": "30", "keyint_min": "30", "sc_threshold": "0", "crf": "23"}
        for i in range(n):
            img = np.full((size[1], size[0], 3), 90, np.uint8)
            x = (4 * i) % (size[0] - 30)
            img[40:70, x:x + 30] = (240, 40, 40)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = round(i * 1000 / fps)
            frame.time_base = MS
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def good_video(tmp_path_factory) -> bytes:
    return encode(tmp_path_factory.mktemp("good") / "good.mp4").read_bytes()


@pytest.fixture(scope="module")
def faststart_video(tmp_path_factory) -> bytes:
    return encode(tmp_path_factory.mktemp("fs") / "fs.mp4", n=150, faststart=True).read_bytes()


def audio_only(path: Path) -> bytes:
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=44100)
        stream.layout = "mono"
        t = np.arange(22050) / 44100
        frame = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :],
                                           format="fltp", layout="mono")
        frame.sample_rate = 44100
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path.read_bytes()


def bad_bytes(kind: str, good: bytes, faststart: bytes, tmp: Path) -> bytes:
    if kind == "empty":
        return b""
    if kind == "not_a_video":
        return np.random.default_rng(7).integers(0, 256, 40_000, dtype=np.uint8).tobytes()
    if kind == "text_as_mp4":
        return b"video_id,key,operation\nop1,raw/videos/op1.mp4,collar\n" * 50
    if kind == "audio_only":
        return audio_only(tmp / "sound.mp4")
    if kind == "moov_missing":
        return good[: len(good) // 2]
    if kind == "cut_midstream":
        return faststart[: len(faststart) // 2]
    if kind == "unsupported_codec":
        data = bytearray(good)
        entry = data.index(b"avc1", data.index(b"stsd"))
        data[entry:entry + 4] = b"zzzz"
        return bytes(data)
    raise KeyError(kind)


CASES = [  # kind, field the error must name, words of the problem
    ("empty", "size", "empty file"),
    ("not_a_video", "container", ""),
    ("text_as_mp4", "container", ""),
    ("audio_only", "streams", "audio"),
    ("moov_missing", "container", ""),
    ("cut_midstream", "duration_s", ""),
    ("unsupported_codec", "codec", ""),
]


def ingest(store: LocalArtifactStore, key: str, out_dir: Path, targets=(0.0, 1.0, 2.0)):
    """What video_frames does: read through the store, quarantine bad footage, extract all-or-nothing."""
    with quarantine_bad_footage(store, key):
        with store.local_copy(key) as local:
            probe_video(local)
            return extract_frames(local, list(targets), out_dir, video_id=key.rsplit("/", 1)[-1][:-4])


@pytest.mark.parametrize("kind,field,words", CASES, ids=[c[0] for c in CASES])
def test_bad_footage_is_quarantined_and_the_fix_reruns_identically(request, kind, field, words, good_video,
                                                                    faststart_video, tmp_path):
    request.node.add_marker(pytest.mark.fault(f"footage.{kind}"))
    fault = request.getfixturevalue("fault")
    root = tmp_path / "store"
    seeder = LocalArtifactStore(root=str(root), allow_source_writes=True)
    key = f"raw/videos/op_collar_{kind}.mp4"
    seeder.write_bytes(key, bad_bytes(kind, good_video, faststart_video, tmp_path))
    store = LocalArtifactStore(root=str(root))
    fault.watch(store)
    before = store_hashes(store, "raw/")
    out = tmp_path / "frames"
    with fault.rejects(BadFootageError, key, "Remedy:", f"field '{field}'", words, "quarantine record",
                       outcome="quarantined") as seen:
        ingest(store, key, out)
    assert seen["error"].field == field
    record = read_record(store, key)
    assert record is not None and record.field == field and record.key == key
    assert record.sha256 == before[key]  # the record is about exactly these bytes
    fault.source(before, store_hashes(store, "raw/"))
    assert store_hashes(store, "raw/") == before
    partial = list(out.glob("*")) if out.exists() else []
    fault.partial(len(partial))
    assert partial == []

    # the operator replaces the file: the record goes away and two runs give the same bytes
    seeder.write_bytes(key, good_video)
    first = ingest(store, key, tmp_path / "run1")
    second = ingest(store, key, tmp_path / "run2")
    assert not store.exists(quarantine_key(key))
    assert len(first) == 3
    fault.rerun(tree_hashes(tmp_path / "run1"), tree_hashes(tmp_path / "run2"))
    assert [r.jpeg_sha256 for r in first] == [r.jpeg_sha256 for r in second]


@pytest.mark.fault("footage.fixed_rerun_identical")
def test_good_footage_reruns_byte_identical(fault, good_video, tmp_path):
    root = tmp_path / "store"
    LocalArtifactStore(root=str(root), allow_source_writes=True).write_bytes("raw/videos/a.mp4", good_video)
    store = LocalArtifactStore(root=str(root))
    before = store_hashes(store, "raw/")
    ingest(store, "raw/videos/a.mp4", tmp_path / "r1")
    ingest(store, "raw/videos/a.mp4", tmp_path / "r2")
    fault.rerun(tree_hashes(tmp_path / "r1"), tree_hashes(tmp_path / "r2"))
    fault.source(before, store_hashes(store, "raw/"))
    fault.observed("survived")


@pytest.mark.fault("footage.target_past_end")
def test_target_past_the_end_fails_before_writing(fault, good_video, tmp_path):
    video = tmp_path / "a.mp4"
    video.write_bytes(good_video)
    before = tree_hashes(tmp_path)
    out = tmp_path / "out"
    with fault.rejects(BadFootageError, str(video), "Remedy:"):
        extract_frames(video, [0.0, 60.0], out, video_id="a")
    fault.partial(len(list(out.glob("*"))) if out.exists() else 0)
    assert not out.exists() or list(out.iterdir()) == []
    fault.source(before, {k: v for k, v in tree_hashes(tmp_path).items() if not k.startswith("out")})


@pytest.mark.fault("footage.duplicate_upload")
def test_duplicate_upload_under_another_name_is_refused(fault, good_video, tmp_path):
    """The same bytes uploaded twice under two names: by video id the split cannot see it, so both copies
    could land in different splits. The frame records carry the same video_sha256, and the split refuses
    them (naming both ids and the hash) before anything is written; the near-duplicate audit on
    dataset_split would also report the distance-0 pairs."""
    records, split_of = {}, {"op_collar_01": "train", "op_collar_01_copy": "test"}
    frame_keys, splits, hashes, rows = [], [], [], []
    for vid in split_of:
        path = tmp_path / f"{vid}.mp4"
        path.write_bytes(good_video)
        records[vid] = extract_frames(path, [0.0, 1.0, 2.0], tmp_path / vid, video_id=vid)
        for r in records[vid]:
            frame_keys.append(f"frames/ops/{vid}/{r.jpeg_name}")
            splits.append(split_of[vid])
            hashes.append(phash_bytes((tmp_path / vid / r.jpeg_name).read_bytes()))
            rows.append({"frame_key": frame_keys[-1], "video_id": vid, "video_sha256": r.video_sha256})
    digest = records["op_collar_01"][0].video_sha256
    assert digest == records["op_collar_01_copy"][0].video_sha256
    fault.sources(*(tmp_path / f"{vid}.mp4" for vid in split_of), pd.DataFrame(rows))
    with fault.rejects(SplitError, "raw/videos/manifest.csv", "duplicate upload under another name",
                       "'op_collar_01' and 'op_collar_01_copy'", digest, "Remedy:"):
        check_unique_sources(pd.DataFrame(rows), "raw/videos/manifest.csv")
    distinct = pd.DataFrame(rows).query("video_id == 'op_collar_01'")
    check_unique_sources(distinct)  # one id per recording passes
    pairs = cross_split_pairs(frame_keys, splits, np.array(hashes, dtype=np.uint64), max_distance=6)
    assert len(pairs) >= 3 and int(pairs["distance"].min()) == 0, pairs


def tick(store, cursor):
    context = dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), cursor=cursor,
                                      resources={"store": store, "buffer_sensor_settings": BufferSensorSettings()})
    return buffer_footage_sensor(context)


@pytest.mark.fault("footage.still_uploading")
def test_clip_still_uploading_is_waited_for(fault, good_video, tmp_path):
    root = tmp_path / "store"
    uploader = LocalArtifactStore(root=str(root), allow_source_writes=True)
    store = LocalArtifactStore(root=str(root))
    key = "buffer/cam1/2026-07-01/080000.mp4"
    uploader.write_bytes(key, good_video[: len(good_video) // 3])
    r1 = tick(store, None)
    uploader.write_bytes(key, good_video[: 2 * len(good_video) // 3])
    r2 = tick(store, r1.cursor)
    uploader.write_bytes(key, good_video)
    fault.sources((uploader, "buffer/"))
    fault.watch(store)
    r3 = tick(store, r2.cursor)
    r4 = tick(store, r3.cursor)
    assert (r1.run_requests, r2.run_requests, r3.run_requests) == ([], [], [])
    assert [r.partition_key for r in r4.run_requests] == ["cam1|2026-07-01|080000"]
    assert tick(store, r4.cursor).run_requests == []  # and only once
    fault.observed("survived", "no run until two ticks saw the same size/etag")


@pytest.mark.fault("footage.key_without_camera_day")
def test_keys_without_camera_or_day_are_ignored(fault, good_video, tmp_path, capfd):
    root = tmp_path / "store"
    uploader = LocalArtifactStore(root=str(root), allow_source_writes=True)
    store = LocalArtifactStore(root=str(root))
    odd = ["buffer/080000.mp4", "buffer/cam1/not-a-day/080000.mp4", "buffer/cam1/2026-07-01/sub/080000.mp4",
           "buffer/cam1/2026-07-01/080000.txt", "buffer/cam1/2026-13-45/080000.mp4"]
    for key in odd:
        uploader.write_bytes(key, b"x")
    uploader.write_bytes("buffer/cam1/2026-07-01/090000.mp4", good_video)
    fault.sources((uploader, "buffer/"))
    fault.watch(store)
    r1 = tick(store, None)
    r2 = tick(store, r1.cursor)
    requested = [r.tags["lbzf/clip"] for r in r1.run_requests + r2.run_requests]
    assert requested == ["buffer/cam1/2026-07-01/090000.mp4"], requested
    # every ignored key or folder inside a camera folder is counted and named in the tick's log
    warnings = [line for line in capfd.readouterr().err.splitlines() if "outside the buffer layout" in line]
    assert warnings and "4 key(s)" in warnings[-1], warnings
    for shown in ("buffer/cam1/not-a-day/", "buffer/cam1/2026-07-01/sub/080000.mp4",
                  "buffer/cam1/2026-07-01/080000.txt", "buffer/cam1/2026-13-45/", "Remedy:"):
        assert shown in warnings[-1], (shown, warnings[-1])
    fault.observed("ignored", f"{len(odd)} keys outside buffer/<camera>/<YYYY-MM-DD>/<HHMMSS>.mp4: no run; the "
                   "tick logs a warning counting and naming those inside a camera folder")


@pytest.mark.fault("footage.bad_buffer_clip_in_month")
def test_bad_buffer_clip_is_quarantined_and_the_month_goes_on(fault, good_video, tmp_path):
    """A buffer clip that cannot be decoded, among good ones of the month: `hard_examples` quarantines it
    (record under quarantine/, warning naming it), samples from the good clips and counts what it left out."""
    import io

    from assets.retraining import hard_examples

    root = tmp_path / "store"
    uploader = LocalArtifactStore(root=str(root), allow_source_writes=True)
    good_key, bad_key = "buffer/cam1/2026-07-01/080000.mp4", "buffer/cam2/2026-07-01/080000.mp4"
    uploader.write_bytes(good_key, good_video)
    uploader.write_bytes(bad_key, b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)  # a header, then garbage
    log = pd.DataFrame([{"camera": cam, "ts": pd.Timestamp(f"2026-07-01 08:00:0{s}", tz="UTC"), "quality": "red",
                         "model_version": "v0"} for cam in ("cam1", "cam2") for s in (0, 2)])
    buffer = io.BytesIO()
    log.to_parquet(buffer, index=False)
    uploader.write_bytes("buffer/quality/2026-07-01.parquet", buffer.getvalue())
    before = store_hashes(uploader, "buffer/")
    store = LocalArtifactStore(root=str(root))
    fault.watch(store)
    run_config = {"ops": {"hard_examples": {"config": {"n": 10, "min_gap_s": 1.0}}}}
    with dg.instance_for_test() as instance:
        result = dg.materialize([hard_examples], resources={"store": store}, instance=instance,
                                partition_key="2026-07-01", run_config=run_config)
        meta = result.asset_materializations_for_node("hard_examples")[0].metadata
    assert result.success
    assert meta["quarantined_clips"].value == 1 and meta["quarantined"].value == bad_key
    assert meta["frames_extracted"].value == 2  # both flags of the good clip; none of the bad one
    record = read_record(store, bad_key)
    assert record is not None and record.key == bad_key and record.remedy
    fault.observed("quarantined", f"{record.problem}: {bad_key} recorded at {quarantine_key(bad_key)}; "
                   f"{meta['frames_extracted'].value} frames from the good clip",
                   parts={"file": record.key, "field": record.field, "value": record.value, "remedy": record.remedy})
    fault.source(before, store_hashes(uploader, "buffer/"))


@pytest.mark.fault("footage.bad_video_in_stage_a_sample")
def test_bad_video_drawn_for_stage_a_is_quarantined(fault, good_video, tmp_path):
    """A video drawn for the Stage A sample that cannot be decoded: `stage_a_sample` writes its quarantine
    record and fails naming the source key; no sample manifest or CVAT package is written."""
    from assets.footage import stage_a_sample

    root = tmp_path / "store"
    uploader = LocalArtifactStore(root=str(root), allow_source_writes=True)
    bad_key = "raw/videos/op_hem_02.mp4"
    uploader.write_bytes("raw/videos/op_hem_01.mp4", good_video)
    uploader.write_bytes(bad_key, good_video[: len(good_video) // 2])  # moov at the end: cut before the index
    uploader.write_bytes("raw/videos/manifest.csv", (
        "video_id,key,operation,camera,recorded_day,post_install\n"
        "op_hem_01,raw/videos/op_hem_01.mp4,hem,cam1,2026-06-01,false\n"
        f"op_hem_02,{bad_key},hem,cam1,2026-06-02,false\n").encode())
    before = store_hashes(uploader, "raw/")
    store = LocalArtifactStore(root=str(root))
    fault.watch(store)
    run_config = {"ops": {"stage_a_sample": {"config": {"per_category": 2, "window_s": 2.0, "step_s": 1.0}}}}
    with dg.instance_for_test() as instance, fault.rejects(BadFootageError, bad_key, "Remedy:", "quarantine record",
                                                                   outcome="quarantined"):
        dg.materialize([stage_a_sample], resources={"store": store}, instance=instance, run_config=run_config)
    assert read_record(store, bad_key) is not None
    leftovers = [i.key for i in store.list_keys("frames/stage_a/manifest") ] + \
        [i.key for i in store.list_keys("annotations/packages/")]
    fault.partial(len(leftovers))
    assert leftovers == []
    fault.source(before, store_hashes(uploader, "raw/"))
