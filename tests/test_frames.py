"""Frame extraction and sampling policies, on small videos each test encodes itself with PyAV.

Every synthetic frame carries its own ordinal as a row of black/white blocks (10 bits), so a
decoded frame says which frame it is even after lossy compression: an off-by-one cannot hide
behind a reference decode that shares the bug.
"""
from __future__ import annotations

import fractions
import os
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from pipeline import frames
from pipeline.errors import BadFootageError
from pipeline.frames import (
    TIME_EPS_S,
    extract_frames,
    iter_target_frames,
    motion_energy,
    probe_video,
    reference_frames,
)
from pipeline.hashing import sha256_bytes, sha256_file
from pipeline.sampling import (
    WindowChoice,
    buffer_targets,
    choose_active_window,
    every_n_seconds,
    stage_a_targets,
)

W, H = 320, 240
BITS = 10
BLOCK_W = W // BITS  # code blocks along the top edge of the stored (unrotated) picture
BLOCK_H = 24
MS = fractions.Fraction(1, 1000)


# --------------------------------------------------------------------------- synthetic videos


def draw_frame(i: int, width: int = W, height: int = H, moving: bool = True) -> np.ndarray:
    """RGB frame: drifting gradient, a moving box, and the ordinal i coded in the top row."""
    img = np.empty((height, width, 3), np.uint8)
    shift = 5 * i if moving else 0
    ramp = ((np.arange(width) + shift) % 256).astype(np.uint8)
    img[:] = ramp[None, :, None]
    img[..., 1] = 96
    img[..., 2] = np.uint8((60 + 3 * i) % 256 if moving else 60)
    if moving:
        y = BLOCK_H + 8 + (4 * i) % (height - BLOCK_H - 48)
        x = (7 * i) % (width - 40)
        img[y : y + 40, x : x + 40] = (250, 30, 30)
    for bit in range(BITS):
        on = (i >> bit) & 1
        img[:BLOCK_H, bit * BLOCK_W : (bit + 1) * BLOCK_W] = 255 if on else 0
    return img


def read_code(rgb: np.ndarray) -> int:
    """The ordinal written by draw_frame, read from block centres of an unrotated picture."""
    value = 0
    for bit in range(BITS):
        cell = rgb[6 : BLOCK_H - 6, bit * BLOCK_W + 8 : (bit + 1) * BLOCK_W - 8]
        if cell.mean() > 128:
            value |= 1 << bit
    return value


def write_video(
    path: Path,
    pts: list[int],
    time_base: fractions.Fraction = MS,
    *,
    gop: int = 30,
    bframes: int = 0,
    rotation: int | None = None,
    fmt: str | None = None,
    rate: fractions.Fraction | int = 30,
    pix_fmt: str = "yuv420p",
    size: tuple[int, int] = (W, H),
    moving: bool = True,
    options: dict[str, str] | None = None,
    drawer=None,
    open_gop: bool = False,
) -> Path:
    """Encode frames 0..len(pts)-1 with H.264 at the given presentation timestamps."""
    width, height = size
    with av.open(str(path), "w", format=fmt, options=options or {}) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = width, height
        stream.pix_fmt = pix_fmt
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        # x264's 'ultrafast' turns B-frames off, so use it only when none are wanted.
        stream.options = {
            "preset": "veryfast" if bframes else "ultrafast",
            "bf": str(bframes),
            "g": str(gop),
            "keyint_min": str(gop),
            "sc_threshold": "0",
            "crf": "20",
        }
        if open_gop:  # leading B-frames of a GOP then reference the previous GOP
            stream.options = {**stream.options, "x264-params": "open-gop=1"}
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i, p in enumerate(pts):
            img = drawer(i) if drawer else draw_frame(i, width, height, moving)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = p
            frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def cfr_pts(n: int, fps: int = 30) -> list[int]:
    return [round(i * 1000 / fps) for i in range(n)]


def vfr_pts(n: int, seed: int = 7) -> list[int]:
    """Irregular spacing (10..120 ms) with a 0.9 s hole in the middle, in milliseconds."""
    rng = np.random.default_rng(seed)
    gaps = rng.integers(10, 120, size=n - 1)
    gaps[n // 2] = 900
    return [0, *np.cumsum(gaps).tolist()]


@dataclass
class Truth:
    """All frames' times (normalised) from a plain decode done by the test itself."""

    times: list[float]

    def expected_index(self, target: float) -> int:
        return max(bisect_right(self.times, target + TIME_EPS_S) - 1, 0)


def decode_times(path: Path) -> Truth:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        start = stream.start_time
        times = [float((f.pts - start) * stream.time_base) for f in container.decode(stream)]
    assert times == sorted(times)
    return Truth(times)


def probing_targets(truth: Truth, end_s: float) -> list[float]:
    """Targets that catch off-by-one errors: on, just before and just after frame times."""
    times = truth.times
    picks = {0.0, times[-1], end_s - 1e-3}
    for k in range(1, len(times), max(1, len(times) // 9)):
        t = times[k]
        picks |= {t, t - 2e-6, t + 2e-6, (times[k - 1] + t) / 2}
    picks |= set(every_n_seconds(end_s, 0.37))
    return sorted(p for p in picks if p < end_s)


def has_reordering(path: Path) -> bool:
    """True if decode order differs from presentation order (B-frames present)."""
    with av.open(str(path)) as container:
        pts = [p.pts for p in container.demux(video=0) if p.size]
    return pts != sorted(pts)


def assert_exact(path: Path, targets: list[float], *, rotation_turns: int = 0, threads: int = 0) -> None:
    """Fast path == full reference decode, pixel for pixel, and frame ordinals are right."""
    truth = decode_times(path)
    fast = list(iter_target_frames(path, targets, threads=threads))
    slow = reference_frames(path, targets)
    assert [f.target_s for f in fast] == sorted(targets) == [f.target_s for f in slow]
    for got, ref in zip(fast, slow):
        expected = truth.expected_index(got.target_s)
        assert got.frame_index == ref.frame_index == expected, got.target_s
        assert got.actual_s == ref.actual_s == pytest.approx(truth.times[expected], abs=1e-9)
        assert got.actual_s <= got.target_s + TIME_EPS_S or expected == 0
        assert got.rgb.dtype == np.uint8 and got.rgb.shape == ref.rgb.shape
        assert np.array_equal(got.rgb, ref.rgb), f"pixels differ at target {got.target_s}"
        assert read_code(np.rot90(got.rgb, -rotation_turns)) == expected


# --------------------------------------------------------------------------- exactness


def test_constant_rate_keyframe_targets_decode_only_keyframes(tmp_path: Path) -> None:
    video = write_video(tmp_path / "cfr.mp4", list(range(300)), fractions.Fraction(1, 30), gop=30)
    info = probe_video(video)
    assert (info.width, info.height, info.rotation, info.codec) == (W, H, 0, "h264")
    assert info.n_frames == 300 and info.n_keyframes == 10
    assert info.avg_fps == pytest.approx(30, rel=1e-3)
    assert info.duration_s == info.usable_duration_s == pytest.approx(10.0, abs=1e-9)

    targets = every_n_seconds(info.usable_duration_s, 1.0)  # lands on the 1 s keyframes
    stats: dict[str, int] = {}
    got = list(iter_target_frames(video, targets, stats=stats))
    assert [f.frame_index for f in got] == [30 * k for k in range(10)]
    # the floor: one keyframe decoded per target, nothing else
    assert stats["packets_decoded"] == len(targets) and stats["packets_total"] == 300
    assert_exact(video, probing_targets(decode_times(video), info.end_s))


@pytest.mark.parametrize(
    "gop,bframes",
    [(5, 0), (12, 3), (250, 2)],
    ids=["short-gop", "bframes", "long-gop-bframes"],
)
def test_gop_and_bframes(tmp_path: Path, gop: int, bframes: int) -> None:
    video = write_video(tmp_path / "v.mp4", cfr_pts(240, 24), gop=gop, bframes=bframes, rate=24)
    assert has_reordering(video) == bool(bframes)
    info = probe_video(video)
    assert_exact(video, probing_targets(decode_times(video), info.end_s))
    # sparse targets decode only part of a short-GOP file
    stats: dict[str, int] = {}
    list(iter_target_frames(video, [1.0, 5.5], stats=stats))
    if gop <= 12:
        assert stats["packets_decoded"] < stats["packets_total"] / 3


def leading_pictures(path: Path) -> list[int]:
    """pts of frames that follow a (non-first) keyframe in decode order but are shown before it."""
    with av.open(str(path)) as container:
        packets = [(p.pts, p.is_keyframe) for p in container.demux(video=0) if p.size]
    keys = [i for i, (_, key) in enumerate(packets) if key][1:]
    return [
        packets[j][0] for i in keys for j in range(i + 1, min(i + 8, len(packets))) if packets[j][0] < packets[i][0]
    ]


def test_open_gop_leading_pictures(tmp_path: Path) -> None:
    video = write_video(tmp_path / "open.mkv", cfr_pts(240), gop=24, bframes=3, open_gop=True)
    leading = leading_pictures(video)
    assert len(leading) >= 3, "encoder made no open GOPs; the test would prove nothing"
    times = [p / 1000 for p in leading]
    for t in times[:3]:  # alone: decoding must start one keyframe earlier than the frame's own
        assert_exact(video, [t])
    assert_exact(video, times)


@pytest.mark.parametrize("threads", [1, 2])
def test_variable_frame_rate(tmp_path: Path, threads: int) -> None:
    pts = vfr_pts(150)
    video = write_video(tmp_path / "vfr.mkv", pts, gop=20, bframes=2)
    info = probe_video(video)
    truth = decode_times(video)
    assert truth.times == pytest.approx([p / 1000 for p in pts], abs=1e-9)
    # targets inside the 0.9 s hole all get the frame before the hole
    assert pts[76] - pts[75] == 900
    inside = [pts[75] / 1000 + d for d in (0.1, 0.4, 0.8)]
    got = list(iter_target_frames(video, inside, threads=threads))
    assert {f.frame_index for f in got} == {75}
    assert_exact(video, probing_targets(truth, info.end_s) + inside, threads=threads)


def test_odd_frame_rate(tmp_path: Path) -> None:
    rate = fractions.Fraction(2953, 100)  # 29.53 fps: frame counts and seconds never align
    video = write_video(tmp_path / "odd.mp4", list(range(200)), 1 / rate, rate=rate, gop=15, bframes=2)
    info = probe_video(video)
    assert info.avg_fps == pytest.approx(29.53, rel=1e-3)
    truth = decode_times(video)
    assert_exact(video, probing_targets(truth, info.end_s))
    # 1 frame / 2 s must pick frame floor(t * 29.53), not t * 30
    got = list(iter_target_frames(video, [2.0, 4.0, 6.0]))
    assert [f.frame_index for f in got] == [59, 118, 177]


@pytest.mark.parametrize("suffix,fmt", [(".ts", "mpegts"), (".mkv", None), (".mp4", None)])
def test_nonzero_start_time(tmp_path: Path, suffix: str, fmt: str | None) -> None:
    pts = [1400 + round(i * 1000 / 25) for i in range(100)]  # stream starts at 1.4 s
    video = write_video(tmp_path / f"offset{suffix}", pts, gop=25, bframes=2, rate=25, fmt=fmt)
    info = probe_video(video)
    assert info.start_time_s == pytest.approx(1.4, abs=0.01)
    assert info.end_s == pytest.approx(4.0, abs=0.01)
    assert info.usable_duration_s == pytest.approx(4.0, abs=0.01)  # relative to the stream start
    got = list(iter_target_frames(video, [0.0, 1.0, 2.0]))
    assert [f.frame_index for f in got] == [0, 25, 50]
    assert [f.actual_s for f in got] == pytest.approx([0.0, 1.0, 2.0], abs=1e-6)
    assert_exact(video, probing_targets(decode_times(video), info.end_s))


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_metadata(tmp_path: Path, rotation: int) -> None:
    video = write_video(tmp_path / "rot.mp4", cfr_pts(60), gop=10, bframes=2, rotation=rotation)
    info = probe_video(video)
    turns = (rotation // 90) % 4
    assert info.rotation == rotation
    assert (info.width, info.height) == ((H, W) if turns % 2 else (W, H))
    first = next(iter_target_frames(video, [0.0]))
    assert first.rgb.shape == (info.height, info.width, 3)
    # OpenCV rotates on its own (trap 4): the first frame must match its upright picture
    capture = cv2.VideoCapture(str(video))
    ok, bgr = capture.read()
    capture.release()
    assert ok and bgr.shape == first.rgb.shape
    assert np.abs(bgr[..., ::-1].astype(int) - first.rgb.astype(int)).mean() < 1.0
    assert_exact(video, probing_targets(decode_times(video), info.end_s), rotation_turns=turns)


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuvj420p"], ids=["limited-range", "full-range"])
def test_colour_range_is_expanded(tmp_path: Path, pix_fmt: str) -> None:
    def black_white(i: int) -> np.ndarray:
        img = draw_frame(i)
        img[80:, : W // 2] = 0
        img[80:, W // 2 :] = 255
        return img

    video = write_video(tmp_path / "bw.mp4", cfr_pts(10), pix_fmt=pix_fmt, drawer=black_white)
    (frame,) = iter_target_frames(video, [0.1])
    black, white = frame.rgb[120:220, 20:140], frame.rgb[120:220, 180:300]
    # washed-out output (limited-range planes taken as full range) would read ~16 and ~235
    assert black.max() <= 8 and white.min() >= 247


# --------------------------------------------------------------------------- JPEG output


def test_extract_frames_writes_records_and_jpegs(tmp_path: Path) -> None:
    video = write_video(tmp_path / "in.mp4", cfr_pts(150), gop=30, bframes=2)
    source_hash = sha256_file(video)
    out = tmp_path / "frames"
    targets = every_n_seconds(probe_video(video).usable_duration_s, 2.0)
    records = extract_frames(video, targets, out, video_id="v1")

    assert sha256_file(video) == source_hash  # the source is never touched
    assert [r.target_s for r in records] == targets == [0.0, 2.0, 4.0]
    assert sorted(os.listdir(out)) == ["000000000.jpg", "000002000.jpg", "000004000.jpg"]
    reference = reference_frames(video, targets)
    for record, ref in zip(records, reference):
        data = (out / record.jpeg_name).read_bytes()
        assert record.jpeg_sha256 == sha256_bytes(data)
        assert record.video_sha256 == source_hash and record.video_id == "v1"
        assert (record.frame_index, record.actual_s) == (ref.frame_index, ref.actual_s)
        assert (record.width, record.height) == (W, H)
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
        assert np.abs(decoded.astype(int) - ref.rgb.astype(int)).mean() < 3
        assert read_code(decoded) == record.frame_index
    row = records[1].to_dict()
    assert row["jpeg_name"] == "000002000.jpg" and row["frame_index"] == 60
    assert set(row) == {
        "video_id", "video_sha256", "target_s", "actual_s", "frame_index",
        "width", "height", "jpeg_name", "jpeg_sha256",
    }


def test_extract_frames_custom_names_and_quality(tmp_path: Path) -> None:
    video = write_video(tmp_path / "in.mp4", cfr_pts(60), gop=30)
    records = extract_frames(
        video, [1.5, 0.5], tmp_path / "o", video_id="v", jpeg_quality=50, name=lambda t: f"f{t:.1f}.jpg"
    )
    assert [r.jpeg_name for r in records] == ["f0.5.jpg", "f1.5.jpg"]
    with pytest.raises(ValueError):
        extract_frames(video, [0.5], tmp_path / "o", video_id="v", name=lambda t: "../escape.jpg")
    with pytest.raises(ValueError):
        extract_frames(video, [0.1, 0.2], tmp_path / "o", video_id="v", name=lambda t: "same.jpg")


def test_target_beyond_end_fails_before_writing(tmp_path: Path) -> None:
    video = write_video(tmp_path / "short.mp4", cfr_pts(60), gop=30)
    out = tmp_path / "frames"
    with pytest.raises(BadFootageError) as err:
        extract_frames(video, [0.0, 1.0, 2.5], out, video_id="v")
    assert err.value.field == "target_s" and err.value.value == 2.5
    assert str(video) in str(err.value) and "Remedy:" in str(err.value)
    assert not out.exists() or os.listdir(out) == []


def test_failure_mid_extraction_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    video = write_video(tmp_path / "in.mp4", cfr_pts(90), gop=30)
    out = tmp_path / "frames"
    real_encode = frames._encode_jpeg
    calls = {"n": 0}

    def flaky(rgb: np.ndarray, quality: int) -> bytes:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real_encode(rgb, quality)

    monkeypatch.setattr(frames, "_encode_jpeg", flaky)
    with pytest.raises(OSError):
        extract_frames(video, [0.0, 1.0, 2.0], out, video_id="v")
    assert os.listdir(out) == []  # neither finished JPEGs nor temp files


# --------------------------------------------------------------------------- bad footage


def assert_bad(path: Path, field: str) -> BadFootageError:
    with pytest.raises(BadFootageError) as err:
        probe_video(path)
    message = str(err.value)
    assert err.value.field == field, message
    assert str(path) in message and "Remedy:" in message and err.value.remedy
    with pytest.raises(BadFootageError):
        extract_frames(path, [0.0], path.parent / "out", video_id="bad")
    return err.value


def test_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert_bad(empty, "size")


def test_missing_file(tmp_path: Path) -> None:
    assert_bad(tmp_path / "nowhere.mp4", "path")


def test_random_bytes(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(1).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    assert_bad(junk, "container")


@pytest.mark.parametrize("codec,suffix", [("aac", ".m4a"), ("mp2", ".mp2")])
def test_audio_only(tmp_path: Path, codec: str, suffix: str) -> None:
    path = tmp_path / f"sound{suffix}"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=44100)
        stream.layout = "mono"
        t = np.arange(44100 // 2) / 44100
        samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
        fmt = "fltp" if codec == "aac" else "s16"
        if fmt == "s16":
            samples = (samples * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples, format=fmt, layout="mono")
        frame.sample_rate = 44100
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    error = assert_bad(path, "streams")
    assert "audio" in str(error.value)


def test_truncated_midstream(tmp_path: Path) -> None:
    # faststart puts the index first, so the half file still opens and demuxes "normally" (trap 5)
    video = write_video(tmp_path / "full.mp4", cfr_pts(150), gop=30, options={"movflags": "faststart"})
    data = video.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    error = assert_bad(cut, "duration_s")
    assert error.value["declared"] == pytest.approx(5.0, abs=0.05)
    assert error.value["decodable"] < 4.0


def test_truncated_before_index(tmp_path: Path) -> None:
    video = write_video(tmp_path / "full.mp4", cfr_pts(150), gop=30)  # moov written at the end
    data = video.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    assert_bad(cut, "container")


def test_codec_without_decoder(tmp_path: Path) -> None:
    video = write_video(tmp_path / "full.mp4", cfr_pts(30), gop=30)
    data = bytearray(video.read_bytes())
    entry = data.index(b"avc1", data.index(b"stsd"))  # the sample entry names the codec
    data[entry : entry + 4] = b"zzzz"
    odd = tmp_path / "odd.mp4"
    odd.write_bytes(bytes(data))
    assert_bad(odd, "codec")


# --------------------------------------------------------------------------- motion


def test_motion_energy_finds_the_busy_window(tmp_path: Path) -> None:
    def scene(i: int) -> np.ndarray:  # 10 fps, still except between 12 s and 20 s
        img = np.full((120, 160, 3), 90, np.uint8)
        step = min(max(i - 120, 0), 80)
        img[40:80, step : step + 40] = 240
        return img

    video = write_video(
        tmp_path / "m.mp4", [i * 100 for i in range(300)], rate=10, gop=10, size=(160, 120), drawer=scene
    )
    motion = motion_energy(video, every_s=1.0)
    assert len(motion) == 29  # one sample per keyframe after the first
    busy = [t for t, e in motion if e > 1.0]
    assert busy and 12.0 <= min(busy) and max(busy) <= 20.0 + 1e-6
    choice = choose_active_window(motion, 30.0, window_s=8.0)
    assert 12.0 <= choice.start_s <= 13.0 and choice.end_s == choice.start_s + 8.0
    assert choice.score > 1.0


# --------------------------------------------------------------------------- sampling policies


def test_every_n_seconds() -> None:
    assert every_n_seconds(10.0, 2.0) == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert every_n_seconds(10.5, 2.0) == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    assert every_n_seconds(10.0, 2.0, start_s=3.0) == [3.0, 5.0, 7.0, 9.0]
    assert every_n_seconds(0.0, 2.0) == []
    tenths = every_n_seconds(1.0, 0.1)
    assert len(tenths) == 10 and tenths[3] == 0.3
    assert len(every_n_seconds(3600.0, 2.0)) == 1800  # no drift over an hour
    for bad in [(10.0, 0.0), (10.0, -1.0), (float("nan"), 1.0), (10.0, 1.0, -1.0)]:
        with pytest.raises(ValueError):
            every_n_seconds(*bad)


def test_buffer_targets() -> None:
    assert buffer_targets(300.0) == [30.0 * k for k in range(10)]
    assert buffer_targets(29.9) == [0.0]
    assert buffer_targets(61.0) == [0.0, 30.0, 60.0]


def burst(duration: int, first: int, last: int, energy: float = 5.0) -> list[tuple[float, float]]:
    return [(float(t), energy if first <= t <= last else 0.0) for t in range(1, duration)]


def test_choose_active_window() -> None:
    assert choose_active_window(burst(100, 40, 49), 100.0, window_s=10.0) == WindowChoice(40.0, 50.0, 5.0)
    # every window holding the whole burst ties; the earliest wins
    late = choose_active_window(burst(180, 150, 159), 180.0)
    assert (late.start_s, late.end_s) == (100.0, 160.0)
    assert late.score == pytest.approx(50.0 / 60)
    # a burst at the very end: the window is clamped inside the video
    end = choose_active_window(burst(180, 175, 179), 180.0)
    assert (end.start_s, end.end_s) == (120.0, 180.0)
    # shorter than the window: the whole video
    short = choose_active_window(burst(40, 10, 19), 40.0)
    assert (short.start_s, short.end_s) == (0.0, 40.0) and short.score == pytest.approx(50.0 / 39)
    assert choose_active_window([], 300.0) == WindowChoice(0.0, 60.0, 0.0)


def test_stage_a_targets() -> None:
    targets = stage_a_targets(WindowChoice(30.0, 90.0, 1.0))
    assert targets == [30.0 + 5.0 * k for k in range(12)]
    assert stage_a_targets(WindowChoice(0.0, 12.0, 0.0)) == [0.0, 5.0, 10.0]
