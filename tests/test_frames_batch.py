"""`extract_many`: several videos in worker processes, per-video records and errors.

Small H.264 videos encoded here with PyAV. The batch must give exactly what one `extract_frames`
call per video gives (records and JPEG bytes), and a bad video — unreadable, empty, missing, partly
corrupt, or one that kills its worker — must fail alone while the others succeed.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.errors import BadFootageError
from pipeline.frames import extract_frames, probe_video
from pipeline.frames_batch import BatchResult, FrameJob, extract_many, run_job
from pipeline.sampling import every_n_seconds


def encode(path: Path, *, seconds: float, fps: int, gop: int, bframes: int = 0, size=(192, 144), seed: int = 0) -> Path:
    """Random-pixel frames (so any frame mix-up changes the JPEG) encoded as H.264 MP4."""
    rng = np.random.default_rng(seed)
    width, height = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0", "bf": str(bframes),
                          "preset": "veryfast" if bframes else "ultrafast"}
        for i in range(round(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    return {
        "a": encode(root / "a.mp4", seconds=9, fps=10, gop=20),
        "b": encode(root / "b.mp4", seconds=7, fps=25, gop=12, bframes=2, seed=1),
        "c": encode(root / "c.mp4", seconds=8, fps=15, gop=60, seed=2),  # one long GOP
        "d": encode(root / "d.mp4", seconds=5, fps=30, gop=15, bframes=3, seed=3),
    }


def jobs_for(videos: dict[str, Path], out: Path, step_s: float = 1.5) -> list[FrameJob]:
    return [FrameJob(video_id, path, every_n_seconds(probe_video(path).usable_duration_s, step_s), out / video_id)
            for video_id, path in videos.items()]


def jpegs(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())} if directory.exists() else {}


def sequential(jobs: list[FrameJob], out: Path) -> dict[str, list]:
    return {job.video_id: extract_frames(job.path, job.targets_s, out / job.video_id, video_id=job.video_id)
            for job in jobs}


def test_batch_equals_sequential_extraction(videos: dict[str, Path], tmp_path: Path) -> None:
    jobs = jobs_for(videos, tmp_path / "batch")
    expected = sequential(jobs, tmp_path / "seq")

    result = extract_many(jobs, workers=2)

    assert isinstance(result, BatchResult) and result.ok and result.errors == {}
    assert list(result.records) == list(videos)  # job order
    for job in jobs:
        got, want = result.records[job.video_id], expected[job.video_id]
        assert len(got) == len(job.targets_s) > 3
        assert got == want  # every field: frame index, times, size, JPEG and video sha256
        assert jpegs(Path(job.out_dir)) == jpegs(tmp_path / "seq" / job.video_id)
    # the frames are right, not just equal: frame index = floor(target * fps) at constant rate
    fps = {"a": 10, "b": 25, "c": 15, "d": 30}
    for video_id, records in result.records.items():
        assert [r.frame_index for r in records] == [int(round(r.target_s * fps[video_id], 6)) for r in records]


def test_bad_videos_fail_alone(videos: dict[str, Path], tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(5).integers(0, 256, 40_000, dtype=np.uint8).tobytes())
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    out = tmp_path / "out"
    good = jobs_for({"a": videos["a"], "b": videos["b"]}, out)
    bad = [FrameJob("junk", junk, [0.0, 1.0], out / "junk"), FrameJob("empty", empty, [0.0], out / "empty"),
           FrameJob("missing", tmp_path / "nowhere.mp4", [0.0], out / "missing"),
           FrameJob("late", videos["c"], [0.0, 60.0], out / "late")]  # a target past the end
    jobs = [good[0], bad[0], bad[1], good[1], bad[2], bad[3]]

    result = extract_many(jobs, workers=2)

    assert list(result.records) == ["a", "b"] and list(result.errors) == ["junk", "empty", "missing", "late"]
    assert result.records == sequential(good, tmp_path / "seq")
    fields = {"junk": "container", "empty": "size", "missing": "path", "late": "target_s"}
    for job in bad:
        error = result.errors[job.video_id]
        assert error.is_bad_footage and error.kind == "BadFootageError"
        assert error.field == fields[job.video_id] and error.remedy and error.path == str(job.path)
        with pytest.raises(BadFootageError) as direct:  # the same error as one call in this process
            extract_frames(job.path, job.targets_s, tmp_path / "direct", video_id=job.video_id)
        rebuilt = error.to_exception()
        assert isinstance(rebuilt, BadFootageError) and str(rebuilt) == str(direct.value) == error.message
        assert jpegs(Path(job.out_dir)) == {}  # nothing half-written


def corrupt_keyframe(source: Path, target: Path, nth: int) -> float:
    """Copy `source` with the payload of its `nth` keyframe overwritten; returns that frame's time."""
    data = bytearray(source.read_bytes())
    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        keys = [(p.pos, p.size, float(p.pts * stream.time_base)) for p in container.demux(stream)
                if p.size and p.is_keyframe]
    pos, size, t = keys[nth]
    data[pos + 4 : pos + size] = b"\xff" * (size - 4)
    target.write_bytes(bytes(data))
    return t


@pytest.mark.parametrize("threads", [1, 3])
def test_corrupt_keyframe_costs_only_its_own_frame(videos: dict[str, Path], tmp_path: Path, threads: int) -> None:
    """With frame threads the decoder reports a corrupt packet late and its drain can stop early;
    the frames still inside must not be lost with it (they are decoded again on their own)."""
    broken = tmp_path / "broken.mp4"
    lost = corrupt_keyframe(videos["a"], broken, 2)  # keyframes every 2 s: the one at 4 s
    assert lost == pytest.approx(4.0)
    # keyframes (decoded on their own); with 3 frame threads the error surfaces in the final drain
    targets = [0.0, 2.0, lost, 8.0]
    job = FrameJob("broken", broken, targets, tmp_path / "out")

    result = extract_many([job, *jobs_for({"c": videos["c"]}, tmp_path)], workers=2, threads_per_worker=threads)

    assert list(result.records) == ["c"]
    error = result.errors["broken"]
    assert error.field == "frames" and error.value == [pytest.approx(lost)]  # that frame only
    assert jpegs(tmp_path / "out") == {}


def crash_on_b(job: FrameJob, threads: int):
    """A worker function that dies the way a decoder crash kills a process, for video 'b' only,
    after writing one JPEG and the temp file of another."""
    if job.video_id == "b":
        out = Path(job.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "000000000.jpg").write_bytes(b"half")
        (out / f".000001500.jpg.{os.getpid()}.tmp").write_bytes(b"half")
        os._exit(3)
    return run_job(job, threads)


def test_a_crashing_worker_takes_only_its_video(videos: dict[str, Path], tmp_path: Path) -> None:
    jobs = jobs_for(videos, tmp_path / "out")

    result = extract_many(jobs, workers=2, runner=crash_on_b)

    assert list(result.records) == ["a", "c", "d"] and list(result.errors) == ["b"]
    assert result.errors["b"].kind == "WorkerCrash" and result.errors["b"].remedy
    assert result.records == sequential([j for j in jobs if j.video_id != "b"], tmp_path / "seq")
    assert jpegs(tmp_path / "out" / "b") == {}


def test_job_checks(videos: dict[str, Path], tmp_path: Path) -> None:
    job = FrameJob("a", videos["a"], [0.0], tmp_path / "a")
    assert extract_many([], workers=2) == BatchResult()
    with pytest.raises(ValueError, match="video_id"):
        extract_many([job, replace(job, out_dir=tmp_path / "other")])
    with pytest.raises(ValueError, match="out_dir"):
        extract_many([job, replace(job, video_id="a2")])
    with pytest.raises(ValueError, match="workers"):
        extract_many([job], workers=0)
