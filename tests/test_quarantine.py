"""Bad footage is quarantined: real bad files through the real assets (`video_frames`, `buffer_frames`).

Each case seeds a local store with a manifest and one video, materializes the asset through Dagster
and checks what an operator relies on: the run fails with an error naming the stored file and a
remedy, `quarantine/<key>.json` describes exactly those bytes, no frame keys were left behind, the
source is byte-for-byte unchanged, and once the file is replaced by a good video the same partition
materializes and the stale record goes away.
"""
from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone
from pathlib import Path

import av
import dagster as dg
import numpy as np
import pandas as pd
import pytest

from assets.buffer import buffer_frames
from assets.footage import video_frames
from pipeline.errors import BadFootageError
from pipeline.hashing import sha256_bytes
from pipeline.quarantine import (
    QuarantineRecord,
    build_record,
    quarantine_bad_footage,
    quarantine_key,
    read_record,
)
from resources.storage import LocalArtifactStore

VIDEO_ID = "op_collar_01"
VIDEO_KEY = f"raw/videos/{VIDEO_ID}.mp4"


# --------------------------------------------------------------------------- real files, good and bad


def encode_video(path: Path, seconds: float = 6.0, fps: int = 10, gop: int = 10, faststart: bool = False) -> bytes:
    """A small, valid H.264 MP4 whose frames all differ (random pixels)."""
    rng = np.random.default_rng(3)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format="mp4", options=options) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        stream.options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0", "bf": "0",
                          "preset": "ultrafast"}
        for i in range(round(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path.read_bytes()


def audio_only(path: Path) -> bytes:
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=44100)
        stream.layout = "mono"
        t = np.arange(44100) / 44100
        frame = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :],
                                           format="fltp", layout="mono")
        frame.sample_rate = 44100
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path.read_bytes()


def corrupt_keyframe(path: Path) -> bytes:
    """A valid file whose keyframe at 2 s is overwritten: it opens and probes, extraction fails."""
    data = bytearray(encode_video(path))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        keyframes = [(p.pos, p.size, float(p.pts * stream.time_base)) for p in container.demux(stream)
                     if p.size and p.is_keyframe]
    pos, size, t = keyframes[2]
    assert t == pytest.approx(2.0)
    data[pos + 4:pos + size] = b"\xff" * (size - 4)
    return bytes(data)


def bad_bytes(kind: str, tmp: Path) -> bytes:
    if kind == "empty":
        return b""
    if kind == "random":
        return np.random.default_rng(1).integers(0, 256, 64_000, dtype=np.uint8).tobytes()
    if kind == "truncated":  # index first, so the half file opens and demuxes "normally" (trap 5)
        data = encode_video(tmp / "full.mp4", faststart=True)
        return data[: len(data) // 2]
    if kind == "cut_before_index":
        data = encode_video(tmp / "full.mp4")
        return data[: len(data) // 2]
    if kind == "audio_only":
        return audio_only(tmp / "sound.mp4")
    if kind == "corrupt_keyframe":
        return corrupt_keyframe(tmp / "corrupt.mp4")
    raise ValueError(kind)


# (kind, field of the error, words of its problem): each a different failure of real bytes
BAD = [
    ("empty", "size", "empty file"),
    ("random", "container", "not a readable video"),
    ("truncated", "duration_s", "truncated"),
    ("cut_before_index", "container", "truncated before its index"),
    ("audio_only", "streams", "no video stream"),
    ("corrupt_keyframe", "frames", "frames could not be decoded"),
]


# --------------------------------------------------------------------------- a seeded store


def seed_store(root: Path, data: bytes, key: str = VIDEO_KEY) -> LocalArtifactStore:
    seeder = LocalArtifactStore(root=str(root), allow_source_writes=True)
    manifest = pd.DataFrame([{"video_id": VIDEO_ID, "key": VIDEO_KEY, "operation": "Collar", "camera": "phone_a",
                              "recorded_day": "2026-04-10", "post_install": False}])
    seeder.write_bytes("raw/videos/manifest.csv", manifest.to_csv(index=False).encode())
    seeder.write_bytes(key, data)
    return seeder


def source_state(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256_bytes(p.read_bytes()) for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root).parts[0] in ("raw", "buffer")}


def materialize(asset, partition: str, partitions_def: str, root: Path) -> dg.ExecuteInProcessResult:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(partitions_def, [partition])
    return dg.materialize([asset], partition_key=partition, resources={"store": LocalArtifactStore(root=str(root))},
                          instance=instance, raise_on_error=False)


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    """Message of the error the asset raised (the first one below Dagster's wrapper), as the UI shows it."""
    (event,) = result.get_step_failure_events()
    error = event.step_failure_data.error
    while error is not None and error.cls_name.startswith("Dagster"):
        error = error.cause
    assert error is not None, event.step_failure_data.error.to_string()
    return f"{error.cls_name}: {error.message}"


def keys_under(root: Path, prefix: str) -> list[str]:
    return sorted(i.key for i in LocalArtifactStore(root=str(root)).list_keys(prefix))


# --------------------------------------------------------------------------- through the assets


@pytest.mark.parametrize("kind,field,problem", BAD, ids=[b[0] for b in BAD])
def test_bad_video_is_quarantined_and_the_run_fails(tmp_path: Path, kind: str, field: str, problem: str) -> None:
    root = tmp_path / "store"
    data = bad_bytes(kind, tmp_path)
    seed_store(root, data)
    before = source_state(root)
    started = datetime.now(timezone.utc)

    result = materialize(video_frames, VIDEO_ID, "videos", root)

    assert not result.success
    text = failure_text(result)
    # names the stored file by its key (not a local copy's path), the problem, the remedy, the record
    assert text.startswith(f"BadFootageError: pipeline.errors.BadFootageError: {VIDEO_KEY}: "), text
    assert problem in text and f"field '{field}'" in text and "Remedy:" in text
    assert quarantine_key(VIDEO_KEY) in text

    store = LocalArtifactStore(root=str(root))
    record = read_record(store, VIDEO_KEY)
    assert record is not None, keys_under(root, "")
    assert record.key == VIDEO_KEY
    assert record.size == len(data) and record.sha256 == sha256_bytes(data)
    assert record.field == field and problem in record.problem and record.remedy
    assert started - timedelta(seconds=1) <= datetime.fromisoformat(record.when) <= datetime.now(timezone.utc)
    assert VIDEO_KEY in record.error

    assert keys_under(root, f"frames/ops/{VIDEO_ID}/") == []  # nothing partial at final keys
    assert keys_under(root, "frames/") == []
    assert source_state(root) == before  # source bytes (and the manifest) untouched, nothing removed
    assert (root / VIDEO_KEY).read_bytes() == data


def test_rerun_after_replacing_the_file_succeeds(tmp_path: Path) -> None:
    root = tmp_path / "store"
    seeder = seed_store(root, bad_bytes("truncated", tmp_path))
    assert not materialize(video_frames, VIDEO_ID, "videos", root).success
    assert keys_under(root, "quarantine/") == [quarantine_key(VIDEO_KEY)]

    good = encode_video(tmp_path / "good.mp4")
    seeder.write_bytes(VIDEO_KEY, good)  # the operator replaces the file
    result = materialize(video_frames, VIDEO_ID, "videos", root)

    assert result.success
    frames = keys_under(root, f"frames/ops/{VIDEO_ID}/")
    assert frames == [f"frames/ops/{VIDEO_ID}/{ms:09d}.jpg" for ms in (0, 2000, 4000)] + \
        [f"frames/ops/{VIDEO_ID}/manifest.parquet"]
    manifest = pd.read_parquet(io.BytesIO((root / f"frames/ops/{VIDEO_ID}/manifest.parquet").read_bytes()))
    assert set(manifest["video_sha256"]) == {sha256_bytes(good)}
    assert keys_under(root, "quarantine/") == []  # the stale record is gone with the bad bytes
    assert (root / VIDEO_KEY).read_bytes() == good


def test_bad_buffer_clip_is_quarantined(tmp_path: Path) -> None:
    root = tmp_path / "store"
    clip = "buffer/cam1/2026-07-01/080000.mp4"
    data = bad_bytes("random", tmp_path)
    LocalArtifactStore(root=str(root), allow_source_writes=True).write_bytes(clip, data)

    result = materialize(buffer_frames, "cam1|2026-07-01|080000", "buffer_clips", root)

    assert not result.success
    text = failure_text(result)
    assert text.startswith(f"BadFootageError: pipeline.errors.BadFootageError: {clip}: ") and "Remedy:" in text
    record = read_record(LocalArtifactStore(root=str(root)), clip)
    assert record is not None and record.sha256 == sha256_bytes(data) and record.field == "container"
    assert keys_under(root, "frames/") == []
    assert (root / clip).read_bytes() == data


# --------------------------------------------------------------------------- the module itself


def test_record_round_trip_and_json_safe_values(tmp_path: Path) -> None:
    path = tmp_path / "v.mp4"
    path.write_bytes(b"abc")
    error = BadFootageError(str(path), "duration_s", {"declared": 5.0, "decodable": float("nan"), "n": (1, 2)},
                            "re-copy it", problem="truncated")
    when = datetime(2026, 7, 1, 3, 0, tzinfo=timezone(timedelta(hours=-5)))
    record = build_record("raw/videos/v.mp4", path, error, when=when)
    assert record.when == "2026-07-01T08:00:00+00:00"  # stored in UTC
    assert record.value == {"declared": 5.0, "decodable": "nan", "n": [1, 2]}
    assert (record.size, record.sha256) == (3, sha256_bytes(b"abc"))
    assert QuarantineRecord.from_json(record.to_json()) == record
    assert quarantine_key("raw/videos/v.mp4") == "quarantine/raw/videos/v.mp4.json"


def test_guard_passes_other_errors_through_and_writes_nothing(tmp_path: Path) -> None:
    store = LocalArtifactStore(root=str(tmp_path / "s"))
    with pytest.raises(ValueError):
        with quarantine_bad_footage(store, "raw/videos/x.mp4"):
            raise ValueError("not about footage")
    assert keys_under(tmp_path / "s", "") == []
