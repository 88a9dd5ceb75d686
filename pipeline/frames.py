"""Exact, fast frame extraction with PyAV (see docs/FRAMES-NOTES.md for the measurements).

The contract: for a target time t (seconds from the start of the video stream) the extracted frame
is the last one *presented* at or before t. Times always come from the stream's presentation
timestamps, normalised as (pts - stream.start_time) * time_base — never from frame counts or the
nominal frame rate, which are wrong on variable-rate, odd-rate and offset-start video.

How it stays fast: one cheap pass reads the packets without decoding them (timestamps, keyframe
flags). From that index we know which frame each target needs and which keyframe its decoding
must start from. A second pass feeds the decoder only those stretches — keyframe up to the last
wanted frame of each group of pictures (GOP) — and skips every other packet undecoded. Without
B-frames the stretches go through one frame-threaded decoder back to back (drained once, at the
end), and `extract_frames` converts, encodes and writes JPEGs on a helper thread while decoding
goes on. docs/benchmarks.md ("Frame extraction") has the figures against the decode-only floor.

How it stays exact: the chosen frame is identified by its pts before any decoding, and the
decoded frame is matched by pts, never by counting outputs; decode order differs from
presentation order when B-frames exist. `reference_frames` gives the ground truth by a plain full
decode with the same conversion, and the tests compare the two pixel for pixel.
"""
from __future__ import annotations

import math
import os
import threading
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from statistics import median_low
from typing import Any

import av
import av.error
import cv2
import numpy as np
from av.container import InputContainer
from av.video.frame import VideoFrame
from av.video.reformatter import VideoReformatter
from av.video.stream import VideoStream

from pipeline.errors import BadFootageError
from pipeline.hashing import sha256_bytes, sha256_file

# Float slack when comparing a target with a frame time: a frame at exactly t must win even when
# t went through a float round trip (e.g. 2.002 read back as 2.0019999999999998).
TIME_EPS_S = 5e-7
# A video whose decodable end falls this far (or two frame intervals, if longer) short of its
# declared duration is treated as truncated.
_TRUNCATION_SLACK_S = 0.5
# Decoded frames that may wait for the output thread in `extract_frames` (1080p: ~3 MB each).
_OUTPUT_QUEUE = 4
# One colour converter per thread (see `_to_rgb`).
_SCALERS = threading.local()
# Side of the grayscale thumbnails compared by `motion_energy`.
_MOTION_WIDTH = 64

_REMEDY_RECOPY = "re-copy the complete file from its source (camera, phone, upload) and ingest it again"
_REMEDY_REMUX = "remux it into MP4 without re-encoding: ffmpeg -i INPUT -c copy -map 0 OUTPUT.mp4"
_REMEDY_TRANSCODE = "transcode it to H.264: ffmpeg -i INPUT -c:v libx264 -crf 18 -c:a copy OUTPUT.mp4"


def default_frame_name(target_s: float) -> str:
    """JPEG name for a target: its time in milliseconds, zero-padded (matches keys.frame_key)."""
    return f"{round(target_s * 1000):09d}.jpg"


@dataclass(frozen=True)
class VideoInfo:
    """What the packet index says about a video (rotation and size come from its first frame)."""

    path: str
    duration_s: float  # declared by the container or stream header
    start_time_s: float  # the stream's start time; every other time here is relative to it
    width: int  # as displayed, i.e. after applying `rotation`
    height: int
    rotation: int  # counter-clockwise degrees to apply for display (0, 90, 180, -90)
    codec: str
    avg_fps: float
    n_packets: int
    n_frames: int  # packets that produce a presented frame (edit-list discards excluded)
    n_keyframes: int
    end_s: float  # decodable end: last frame's time plus its duration

    @property
    def usable_duration_s(self) -> float:
        """Duration to sample over: never past the decodable end, nor past the declared one."""
        return min(self.duration_s, self.end_s)


@dataclass(frozen=True)
class TargetFrame:
    """One extracted frame before JPEG encoding: RGB, rotated for display."""

    target_s: float
    actual_s: float  # presentation time of the chosen frame
    frame_index: int  # rank of that frame in presentation order, from 0
    rgb: np.ndarray  # (height, width, 3) uint8; shared by targets that pick the same frame


@dataclass(frozen=True)
class FrameRecord:
    """One manifest row: which frame of which video a JPEG holds."""

    video_id: str
    video_sha256: str
    target_s: float
    actual_s: float
    frame_index: int
    width: int
    height: int
    jpeg_name: str
    jpeg_sha256: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- opening a file


def _check_file(path: Path) -> None:
    file = str(path)
    if not path.is_file():
        raise BadFootageError(file, "path", file, "check the path and that the upload finished", problem="no such file")
    if path.stat().st_size == 0:
        raise BadFootageError(file, "size", 0, _REMEDY_RECOPY, problem="empty file")


@contextmanager
def _open_video(path: Path) -> Iterator[tuple[InputContainer, VideoStream]]:
    """Open `path` read-only and yield its first real video stream, or raise BadFootageError."""
    _check_file(path)
    file = str(path)
    try:
        container = av.open(file, mode="r")
    except av.error.FFmpegError as exc:
        # A MP4 cut before its index (moov) lands here too: nothing says where the frames are.
        raise BadFootageError(
            file,
            "container",
            str(exc),
            f"{_REMEDY_RECOPY}; if the file plays elsewhere, {_REMEDY_REMUX}",
            problem="not a readable video (unknown format, or truncated before its index)",
        ) from exc
    try:
        yield container, _video_stream(container, file)
    finally:
        container.close()


def _video_stream(container: InputContainer, file: str) -> VideoStream:
    # Cover art in audio files shows up as a one-picture "video" stream; it is not footage.
    streams = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    if not streams:
        kinds = [s.type for s in container.streams]
        raise BadFootageError(
            file, "streams", kinds, "supply the video recording; this file holds no video track",
            problem="no video stream",
        )
    stream = streams[0]
    if stream.codec_context is None:
        raise BadFootageError(
            file, "codec", f"video stream #{stream.index}: unknown codec", _REMEDY_TRANSCODE,
            problem="video codec has no decoder in this build",
        )
    return stream


def _data_packets(container: InputContainer, stream: VideoStream, file: str) -> Iterator[av.Packet]:
    """Demux the stream's packets that carry data (the demuxer ends with an empty one)."""
    try:
        for packet in container.demux(stream):
            if packet.size:
                yield packet
    except av.error.FFmpegError as exc:
        raise BadFootageError(
            file, "packets", str(exc), _REMEDY_RECOPY, problem="unreadable data in the container"
        ) from exc


def _decode(codec: Any, packet: av.Packet | None) -> list[VideoFrame]:
    """Decode one packet (None drains). A corrupt packet costs its frame, not the whole video (trap 6)."""
    try:
        return codec.decode(packet)
    except av.error.InvalidDataError:
        return []


def _stream_start(stream: VideoStream, first_pts: int) -> int:
    return stream.start_time if stream.start_time is not None else first_pts


def _seconds(pts: int, start: int, time_base: Fraction) -> float:
    return float((pts - start) * time_base)


# --------------------------------------------------------------------------- rotation, colour


def _quarter_turns(rotation: float, file: str) -> int:
    """Counter-clockwise quarter turns for a display rotation; only right angles are supported."""
    turns = round(rotation / 90)
    if abs(rotation - 90 * turns) > 1:
        raise BadFootageError(
            file, "rotation", rotation, "re-encode it upright: ffmpeg -i INPUT -c:v libx264 -crf 18 OUTPUT.mp4",
            problem="rotation is not a multiple of 90 degrees",
        )
    return turns % 4


def _to_rgb(frame: VideoFrame, file: str) -> np.ndarray:
    """Display-ready RGB: full-range colour (trap 9) and the stream's rotation applied (trap 4).

    PyAV's rgb24 conversion reads the frame's own colour range and matrix, so limited-range
    YUV is expanded to 0..255 instead of washed out. np.rot90 turns counter-clockwise, the same
    sense as `VideoFrame.rotation`. The conversion is `frame.to_ndarray(format="rgb24")`, but
    through one reformatter per thread: a new scaler context (and its threads) per frame costs
    more than converting a small frame.
    """
    reformatter = getattr(_SCALERS, "reformatter", None)
    if reformatter is None:
        reformatter = _SCALERS.reformatter = VideoReformatter()
    rgb = reformatter.reformat(frame, format="rgb24").to_ndarray()
    turns = _quarter_turns(frame.rotation, file)
    if turns:
        rgb = np.ascontiguousarray(np.rot90(rgb, turns))
    return rgb


# --------------------------------------------------------------------------- packet index


@dataclass(frozen=True, slots=True)
class _Packet:
    pts: int
    key: bool
    discard: bool  # decoded for reference but never shown (MP4 edit lists)
    duration: int


@dataclass(frozen=True)
class _Index:
    info: VideoInfo
    time_base: Fraction
    start_pts: int
    packets: list[_Packet]  # decode order
    frame_pts: list[int]  # presentation order
    frame_times: list[float]  # seconds, parallel to frame_pts


def _read_packets(container: InputContainer, stream: VideoStream, file: str) -> tuple[list[_Packet], VideoFrame | None]:
    """All packets' metadata, plus the first frame (the decoder stops being fed once it has one)."""
    packets: list[_Packet] = []
    first: VideoFrame | None = None
    codec = stream.codec_context
    for packet in _data_packets(container, stream, file):
        if packet.pts is None:
            raise BadFootageError(file, "pts", None, _REMEDY_REMUX, problem="packets without presentation timestamps")
        packets.append(_Packet(packet.pts, packet.is_keyframe, packet.is_discard, packet.duration or 0))
        if first is None:
            frames = _decode(codec, packet)
            first = frames[0] if frames else None
    if first is None and packets:
        frames = _decode(codec, None)  # the decoder may hold the first frame back (B-frames)
        first = frames[0] if frames else None
    return packets, first


def _declared_duration(container: InputContainer, stream: VideoStream) -> float | None:
    if stream.duration:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def _index_video(path: Path) -> _Index:
    """One pass over the packets, no decoding past the first frame; raises on bad footage."""
    file = str(path)
    with _open_video(path) as (container, stream):
        time_base = stream.time_base
        if time_base is None:
            raise BadFootageError(file, "time_base", None, _REMEDY_REMUX, problem="stream has no time base")
        packets, first = _read_packets(container, stream, file)
        frame_pts = sorted(p.pts for p in packets if not p.discard)
        if not frame_pts:
            raise BadFootageError(file, "frames", 0, _REMEDY_RECOPY, problem="video stream holds no frames")
        if first is None:
            raise BadFootageError(file, "frames", len(packets), _REMEDY_RECOPY, problem="no frame could be decoded")
        # Read everything needed from the stream while the container is still open.
        start = _stream_start(stream, frame_pts[0])
        declared = _declared_duration(container, stream)
        codec_name = stream.codec_context.name
        average_rate = stream.average_rate
        turns = _quarter_turns(first.rotation, file)
        width, height = (first.height, first.width) if turns % 2 else (first.width, first.height)

    if len(set(frame_pts)) != len(frame_pts):
        raise BadFootageError(
            file, "pts", "duplicate timestamps", _REMEDY_REMUX, problem="two frames share a timestamp"
        )
    frame_times = [_seconds(p, start, time_base) for p in frame_pts]

    # The last frame lasts its packet duration (0 in MPEG-TS), else the typical frame interval.
    steps = [b - a for a, b in zip(frame_pts, frame_pts[1:])]
    typical_step = median_low(steps) if steps else 0
    last_duration = next(p.duration for p in packets if p.pts == frame_pts[-1]) or typical_step
    end_pts = frame_pts[-1] + last_duration
    end_s = _seconds(end_pts, start, time_base)
    if declared is None:
        declared = end_s
    _check_not_truncated(file, declared, end_s, float(end_pts * time_base), float(typical_step * time_base))

    span = frame_times[-1] - frame_times[0]
    if average_rate:
        avg_fps = float(average_rate)
    else:
        avg_fps = (len(frame_pts) - 1) / span if span > 0 else 0.0
    info = VideoInfo(
        path=file,
        duration_s=declared,
        start_time_s=float(start * time_base),
        width=width,
        height=height,
        rotation=90 * turns if turns < 3 else -90,
        codec=codec_name,
        avg_fps=avg_fps,
        n_packets=len(packets),
        n_frames=len(frame_pts),
        n_keyframes=sum(p.key for p in packets),
        end_s=end_s,
    )
    return _Index(info, time_base, start, packets, frame_pts, frame_times)


def _check_not_truncated(file: str, declared_s: float, end_s: float, end_abs_s: float, step_s: float) -> None:
    """Truncated files demux "normally", just shorter (trap 5): compare with the declared duration.

    Some containers (Matroska) declare the end time rather than the span, so the decodable end is
    measured both from the stream start and from zero and the more lenient one is used.
    """
    slack = max(_TRUNCATION_SLACK_S, 2 * step_s)
    if declared_s - max(end_s, end_abs_s) > slack:
        raise BadFootageError(
            file,
            "duration_s",
            {"declared": round(declared_s, 3), "decodable": round(end_s, 3)},
            _REMEDY_RECOPY,
            problem="truncated: frames stop well before the declared duration",
        )


def probe_video(path: str | Path) -> VideoInfo:
    """Describe a video and check that it is usable; raises BadFootageError otherwise.

    Reads every packet header (cheap) and decodes only the first frame.
    """
    return _index_video(Path(path)).info


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class _Plan:
    picks: list[tuple[float, int]]  # (target, frame rank), ascending target
    runs: list[tuple[int, int]]  # packet index ranges [first, last] to decode, ascending, disjoint


def _pick_rank(index: _Index, target: float) -> int:
    """Rank of the last frame presented at or before `target`; the first frame if none is."""
    return max(bisect_right(index.frame_times, target + TIME_EPS_S) - 1, 0)


def _check_target(index: _Index, target: float) -> None:
    if not math.isfinite(target):
        raise ValueError(f"target {target!r} is not a finite number of seconds")
    if target >= index.info.end_s + TIME_EPS_S:
        raise BadFootageError(
            index.info.path,
            "target_s",
            target,
            f"sample only before the decodable end ({index.info.end_s:.3f} s): "
            "derive targets from probe_video(path).usable_duration_s",
            problem="target lies beyond the decodable end of the video",
        )


def _decode_start(index: _Index, keyframes: list[int], packet_i: int) -> int:
    """Packet index where decoding must start for the frame carried by packet `packet_i`."""
    group = bisect_right(keyframes, packet_i) - 1
    if group < 0:
        return 0  # the stream opens without a keyframe: start at the very beginning
    start = keyframes[group]
    # A frame shown before its own keyframe (leading picture of an open GOP) may reference the
    # previous GOP, so decoding starts one keyframe earlier.
    if index.packets[packet_i].pts < index.packets[start].pts and group > 0:
        start = keyframes[group - 1]
    return start


def _plan(index: _Index, targets: Iterable[float]) -> _Plan:
    ordered = sorted(targets)
    for target in ordered:
        _check_target(index, target)
    picks = [(t, _pick_rank(index, t)) for t in ordered]

    packet_of_pts = {p.pts: i for i, p in enumerate(index.packets) if not p.discard}
    keyframes = [i for i, p in enumerate(index.packets) if p.key]
    spans: set[tuple[int, int]] = set()
    for _, rank in picks:
        carrier = packet_of_pts[index.frame_pts[rank]]
        spans.add((_decode_start(index, keyframes, carrier), carrier))
    runs: list[tuple[int, int]] = []
    for first, last in sorted(spans):
        if runs and first <= runs[-1][1] + 1:  # overlapping or adjacent: keep decoding straight on
            runs[-1] = (runs[-1][0], max(runs[-1][1], last))
        else:
            runs.append((first, last))
    return _Plan(picks, runs)


# --------------------------------------------------------------------------- decoding


def _has_reordering(index: _Index) -> bool:
    """True when decode order differs from presentation order (B-frames)."""
    pts = [p.pts for p in index.packets]
    return any(b < a for a, b in zip(pts, pts[1:]))


def _decode_runs(
    container: InputContainer,
    stream: VideoStream,
    index: _Index,
    runs: list[tuple[int, int]],
    stats: dict[str, int],
    *,
    drain_each_run: bool,
) -> Iterator[VideoFrame]:
    """Decode only the packet ranges in `runs`; every other packet is read but never decoded.

    Every range starts at a keyframe. Without reordering (no B-frames) that keyframe needs nothing
    decoded before it, so the ranges are fed to one decoder straight after each other and it is
    drained once at the end: its frame threads stay busy across ranges instead of idling at every
    drain. With reordering, the decoder is drained after each range, so frames it holds back come
    out (B-frame reordering, frame threads: trap 10), and reset so the next range starts clean (a
    keyframe of an open GOP is not a clean start) — same decoder object either way.
    """
    codec = stream.codec_context
    file = index.info.path
    run = 0
    for i, packet in enumerate(_data_packets(container, stream, file)):
        if run == len(runs):
            break  # everything wanted is decoded; do not read the rest of the file
        if packet.pts != index.packets[i].pts:
            raise BadFootageError(file, "pts", packet.pts, _REMEDY_RECOPY, problem="file changed while it was read")
        first, last = runs[run]
        if i < first:
            continue
        stats["packets_decoded"] += 1
        yield from _decode(codec, packet)
        if i == last:
            run += 1
            if drain_each_run:
                yield from _decode(codec, None)
                codec.flush_buffers()
    if not drain_each_run:
        yield from _decode(codec, None)  # frame threads hold the last frames back (trap 10)


def _decoded_targets(
    path: Path, targets_s: Iterable[float], *, threads: int, stats: dict[str, int] | None
) -> Iterator[tuple[VideoFrame, list[tuple[float, int, float]]]]:
    """Each wanted decoded frame once, with the (target, frame rank, frame time) triples it answers.

    Raises BadFootageError for unusable footage and targets past the decodable end before decoding
    anything, and for wanted frames the decoder never produced once it is done.
    """
    index = _index_video(path)
    plan = _plan(index, targets_s)
    file = index.info.path
    counters = stats if stats is not None else {}
    counters.update(packets_total=len(index.packets), packets_decoded=0, runs=len(plan.runs))

    # Several targets can share a frame (a gap in variable-rate video); it is converted once.
    waiting: dict[int, list[tuple[float, int, float]]] = {}
    for target, rank in plan.picks:
        waiting.setdefault(index.frame_pts[rank], []).append((target, rank, index.frame_times[rank]))

    # First pass: frame threads, spans pipelined when the stream allows it. A corrupt packet can make
    # the final drain stop early (the error ends it) and lose frames still inside the decoder; those
    # are decoded again alone, single-threaded and drained span by span, where an error costs only
    # its own frame.
    passes = [(plan.runs, threads, _has_reordering(index))]
    while passes:
        runs, thread_count, drain_each_run = passes.pop()
        with _open_video(path) as (container, stream):
            codec = stream.codec_context
            codec.thread_type = "FRAME"
            codec.thread_count = thread_count
            for frame in _decode_runs(container, stream, index, runs, counters, drain_each_run=drain_each_run):
                wanted = waiting.pop(frame.pts, None) if frame.pts is not None else None
                if wanted is not None:
                    yield frame, wanted
        if waiting and not (thread_count == 1 and drain_each_run):
            retry = _plan(index, [target for picks in waiting.values() for target, _, _ in picks])
            passes.append((retry.runs, 1, True))

    if waiting:
        missing = sorted(_seconds(pts, index.start_pts, index.time_base) for pts in waiting)
        raise BadFootageError(
            file, "frames", [round(t, 6) for t in missing], _REMEDY_RECOPY, problem="frames could not be decoded"
        )


def iter_target_frames(
    path: str | Path, targets_s: Iterable[float], *, threads: int = 0, stats: dict[str, int] | None = None
) -> Iterator[TargetFrame]:
    """Yield the exact frame for each target, in ascending target order.

    Each target gets the last frame presented at or before it (the first frame if the target
    precedes it). Raises BadFootageError for unusable footage and for targets past the decodable
    end — before decoding anything. `threads` = decoder frame threads (0: FFmpeg picks, about one
    per core; prefer 1 when running one process per core). `stats`, if given, receives packet
    counts (packets_total, packets_decoded, runs) for logging and tests.
    """
    path = Path(path)
    file = str(path)
    for frame, wanted in _decoded_targets(path, targets_s, threads=threads, stats=stats):
        rgb = _to_rgb(frame, file)
        for target, rank, actual in wanted:
            yield TargetFrame(target, actual, rank, rgb)


def reference_frames(path: str | Path, targets: Iterable[float]) -> list[TargetFrame]:
    """Ground truth by brute force: decode every frame in order, pick by decoded timestamps.

    Same decoder and conversion as `iter_target_frames`, but no packet index, no skipping and
    no planning, so the two share none of the logic under test. Slow; for tests and audits.
    """
    path = Path(path)
    file = str(path)
    ordered = sorted(targets)
    picks: list[TargetFrame] = []
    with _open_video(path) as (container, stream):
        time_base = stream.time_base
        codec = stream.codec_context
        start: int | None = stream.start_time
        previous: tuple[VideoFrame, float, int] | None = None
        count = 0

        def settle(frame_time: float | None) -> None:
            """Answer every open target that `previous` is known to be the last frame before."""
            while len(picks) < len(ordered) and (frame_time is None or frame_time > ordered[len(picks)] + TIME_EPS_S):
                assert previous is not None
                chosen, chosen_time, chosen_index = previous
                picks.append(TargetFrame(ordered[len(picks)], chosen_time, chosen_index, _to_rgb(chosen, file)))

        def frames() -> Iterator[VideoFrame]:
            for packet in _data_packets(container, stream, file):
                yield from _decode(codec, packet)
            yield from _decode(codec, None)

        for frame in frames():
            if frame.pts is None:
                continue
            if start is None:
                start = frame.pts
            frame_time = _seconds(frame.pts, start, time_base)
            if previous is None:
                previous = (frame, frame_time, count)  # targets before the first frame get it
            settle(frame_time)
            previous = (frame, frame_time, count)
            count += 1
        if previous is not None:
            settle(None)
    return picks


# --------------------------------------------------------------------------- motion


def _motion_samples(
    container: InputContainer, stream: VideoStream, every_s: float, keyframes_only: bool
) -> list[tuple[float, float]]:
    codec = stream.codec_context
    if keyframes_only:
        codec.skip_frame = "NONKEY"  # keyframes decode on their own: ~10 % of the bytes
    start = stream.start_time
    time_base = stream.time_base
    samples: list[tuple[float, float]] = []
    previous: tuple[float, np.ndarray] | None = None
    file = container.name

    def frames() -> Iterator[VideoFrame]:
        for packet in _data_packets(container, stream, file):
            yield from _decode(codec, packet)
        yield from _decode(codec, None)

    for frame in frames():
        if frame.pts is None:
            continue
        if start is None:
            start = frame.pts
        t = _seconds(frame.pts, start, time_base)
        if previous is not None and t < previous[0] + every_s - TIME_EPS_S:
            continue
        height = max(1, round(_MOTION_WIDTH * frame.height / frame.width))
        thumb = frame.reformat(width=_MOTION_WIDTH, height=height, format="gray").to_ndarray().astype(np.float32)
        if previous is not None:
            samples.append((t, float(np.mean(np.abs(thumb - previous[1])))))
        previous = (t, thumb)
    return samples


def motion_energy(path: str | Path, every_s: float = 1.0) -> list[tuple[float, float]]:
    """Cheap motion score over time: [(t, mean |luma difference| with the previous sample)].

    Decodes keyframes only, thumbnails them to 64 px wide grayscale and takes at most one sample
    per `every_s`; so the resolution is the keyframe spacing when that is longer than `every_s`.
    Good enough to choose a busy window; not exact. Falls back to decoding every frame when the
    video has too few keyframes to compare.
    """
    if not (math.isfinite(every_s) and every_s > 0):
        raise ValueError(f"every_s must be a positive number of seconds, got {every_s!r}")
    path = Path(path)
    with _open_video(path) as (container, stream):
        samples = _motion_samples(container, stream, every_s, keyframes_only=True)
    if len(samples) < 2:
        with _open_video(path) as (container, stream):
            samples = _motion_samples(container, stream, every_s, keyframes_only=False)
    return samples


# --------------------------------------------------------------------------- JPEG output


def _encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    ok, buffer = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV could not encode the frame as JPEG")
    return buffer.tobytes()


def _write_atomic(target: Path, data: bytes) -> None:
    """Readers see either no file or the whole file: write a temp name, then rename over."""
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(temp, "wb") as handle:
            handle.write(data)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _frame_names(targets: list[float], name: Callable[[float], str]) -> dict[float, str]:
    names = {t: name(t) for t in targets}
    for t, jpeg_name in names.items():
        if not jpeg_name or Path(jpeg_name).name != jpeg_name:
            raise ValueError(f"frame name {jpeg_name!r} for target {t} must be a plain file name")
    if len(set(names.values())) != len(names):
        raise ValueError("two targets map to the same frame name; space the targets further apart")
    return names


def _write_frame(
    frame: VideoFrame,
    wanted: list[tuple[float, int, float]],
    names: dict[float, str],
    out_dir: Path,
    quality: int,
    file: str,
    written: list[Path],
) -> list[tuple[float, int, float, str, str, int, int]]:
    """Convert, encode and write one decoded frame under the name of every target it answers."""
    rgb = _to_rgb(frame, file)
    jpeg = _encode_jpeg(rgb, quality)
    digest = sha256_bytes(jpeg)
    height, width = rgb.shape[:2]
    rows = []
    for target, rank, actual in wanted:
        target_path = out_dir / names[target]
        _write_atomic(target_path, jpeg)
        written.append(target_path)
        rows.append((target, rank, actual, names[target], digest, width, height))
    return rows


def extract_frames(
    path: str | Path,
    targets_s: Iterable[float],
    out_dir: str | Path,
    *,
    video_id: str,
    jpeg_quality: int = 95,
    name: Callable[[float], str] = default_frame_name,
    threads: int = 0,
) -> list[FrameRecord]:
    """Write one JPEG per distinct target into `out_dir`; return their records by ascending target.

    All or nothing: on any error the JPEGs this call wrote are removed. The source is only read.
    Colour conversion, JPEG encoding and writing run on one helper thread, overlapping decoding
    (PyAV, OpenCV and hashlib release the GIL); at most `_OUTPUT_QUEUE` decoded frames wait for it.
    """
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be within 1..100, got {jpeg_quality}")
    path, out_dir = Path(path), Path(out_dir)
    targets = sorted(set(targets_s))
    names = _frame_names(targets, name)
    _check_file(path)
    out_dir.mkdir(parents=True, exist_ok=True)
    file = str(path)

    rows: list[tuple[float, int, float, str, str, int, int]] = []
    written: list[Path] = []
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="frames-out")
    try:
        video_hash = pool.submit(sha256_file, path)  # hashed while the packets are indexed
        pending: deque[Future] = deque()
        with closing(_decoded_targets(path, targets, threads=threads, stats=None)) as decoded:
            for frame, wanted in decoded:  # closing: an error here closes the container at once
                pending.append(pool.submit(_write_frame, frame, wanted, names, out_dir, jpeg_quality, file, written))
                while len(pending) > _OUTPUT_QUEUE:
                    rows.extend(pending.popleft().result())
        while pending:
            rows.extend(pending.popleft().result())
        video_sha256 = video_hash.result()
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # nothing may be written after the clean-up
        for done in written:
            done.unlink(missing_ok=True)
        raise
    pool.shutdown(wait=True)
    records = [
        FrameRecord(
            video_id=video_id,
            video_sha256=video_sha256,
            target_s=target,
            actual_s=actual,
            frame_index=rank,
            width=width,
            height=height,
            jpeg_name=jpeg_name,
            jpeg_sha256=digest,
        )
        for target, rank, actual, jpeg_name, digest, width, height in rows
    ]
    records.sort(key=lambda r: r.target_s)
    return records
