"""Benchmark: exact frame extraction (`pipeline.frames.extract_frames`) against its floor, a full decode and
the exact ffmpeg CLI, on 1080p H.264 clips with camera-like noise. One command, nothing timed in the tests:

    .venv/bin/python scripts/bench_frames.py [--quick] [--demo-root DIR] [--keep DIR] [--skip-ffmpeg]

What it does, all in one process run (the peak-memory figure comes from a child process):

1. Generates clips with PyAV/libx264 into a temp dir (or `--keep DIR`, reused when present):
   `gop2`   1080p30, 180 s, keyframe every 2 s          sampled 1 frame / 2 s  (the operation-video policy)
   `gop8`   1080p30, 180 s, keyframe every 8.33 s       sampled 1 frame / 2 s  (long GOP: near a full decode)
   `camera` 1080p25, 300 s, keyframe every 4 s          sampled 1 frame / 30 s (the buffer-clip policy)
   Frames are a fixed textured scene, a moving block and fresh spatially-correlated noise every frame,
   encoded by x264 (ultrafast, crf 23, fixed GOP, no B-frames): about 6-7 Mbit/s, keyframes ~14 % of the
   bytes at a 2 s GOP, like the cameras measured in docs/FRAMES-NOTES.md.
   `--quick` makes them 60 s / 60 s / 120 s.
2. The demo footage (`pipeline.demo.generate.generate_demo(root, SMALL)` unless `--demo-root` points at an
   existing store): its 24 operation videos, each at 1 frame / 2 s, summed.
3. For every clip, with the same targets:
   ours   `extract_frames` (index pass + decode of the needed GOP spans + RGB + JPEG q95 + sha256 + write)
   floor  decode only the packets the targets need: the spans from the GOP's keyframe to each target's
          packet, one decoder with frame threads kept alive across spans, drained at the end; the plan is
          made before the clock starts and nothing is converted or encoded (a lower bound for any
          extractor built on this decoder)
   full   one sequential decode of every frame (frame threads, no conversion)
   ffmpeg the exact ffmpeg CLI: `-vf select=...` picking the first frame at or after each target
          (the last frame at or before it when targets fall on frames, as here), JPEG out (-q:v 2)
   Each timing is the median of 3 runs when a run takes under 5 s, else one run.
4. Checks, untimed: every JPEG we wrote is byte-identical to the JPEG of the frame that a brute-force full
   decode (`pipeline.frames.reference_frames`) picks for the target, with the same frame index and time;
   the floor found exactly the wanted frames; ffmpeg wrote one JPEG per target, each close to the right
   frame (mean |difference| printed).
5. Peak memory: `extract_frames` on the `camera` clip in a child process, `resource.getrusage` max RSS.
6. Batches: the same extraction over several videos, sequentially in this process (decoder threads = auto)
   vs `pipeline.frames_batch.extract_many(jobs, workers=2)` (two processes, one decoder thread each).

Goals (issue "Footage: exact, fast frame extraction"): ours >= 8x faster than ffmpeg on `gop2`; ours <= 1.2x
the floor on every clip; ours <= 1.1x a full decode on `gop8`; peak RSS < 600 MB on `camera`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

from pipeline import frames  # noqa: E402
from pipeline.frames import TIME_EPS_S, extract_frames, probe_video, reference_frames  # noqa: E402
from pipeline.frames_batch import FrameJob, extract_many  # noqa: E402
from pipeline.hashing import sha256_bytes  # noqa: E402
from pipeline.sampling import every_n_seconds  # noqa: E402

WIDTH, HEIGHT = 1920, 1080
MAX_SINGLE_RUN_FOR_REPEATS_S = 5.0
REPEATS = 3


# --------------------------------------------------------------------------- clips


@dataclass(frozen=True)
class ClipSpec:
    name: str
    seconds: float
    fps: int
    gop_s: float
    step_s: float  # sampling policy: 1 frame / step_s

    @property
    def gop_frames(self) -> int:
        return round(self.gop_s * self.fps)


def clip_specs(quick: bool) -> list[ClipSpec]:
    scale = (60.0 / 180.0) if quick else 1.0
    return [
        ClipSpec("gop2", 180.0 * scale, 30, 2.0, 2.0),
        ClipSpec("gop8", 180.0 * scale, 30, 250 / 30, 2.0),
        ClipSpec("camera", 120.0 if quick else 300.0, 25, 4.0, 30.0),
    ]


def _scene(seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """A fixed textured background (luma, int16) and a bank of 7 noise fields (prime: no short repeats)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    background = 110 + 40 * np.sin(xx / 37.0) * np.cos(yy / 53.0) + 25 * ((xx // 120 + yy // 90) % 2)
    texture = cv2.GaussianBlur(rng.normal(0, 10, (HEIGHT, WIDTH)).astype(np.float32), (0, 0), 0.8)
    background = (background + texture).astype(np.int16)
    noise = [
        np.round(cv2.GaussianBlur(rng.normal(0, 3, (HEIGHT, WIDTH)).astype(np.float32), (0, 0), 1.2) * 2.5)
        .astype(np.int16)
        for _ in range(7)
    ]
    return background, noise


def write_clip(path: Path, spec: ClipSpec, seed: int = 0) -> Path:
    """Encode `spec` as a constant-rate 1080p H.264 MP4 with PyAV/libx264 (atomic: temp name, then rename)."""
    background, noise = _scene(seed)
    tmp = path.with_name(f".tmp-{path.name}")
    n = round(spec.seconds * spec.fps)
    planes = np.empty((HEIGHT * 3 // 2, WIDTH), np.uint8)
    planes[HEIGHT:] = 128  # grey chroma
    luma = np.empty((HEIGHT, WIDTH), np.int16)
    with av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=spec.fps)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        g = str(spec.gop_frames)
        # ultrafast, but with CABAC and the deblocking filter that camera encoders (main/high profile) use
        stream.options = {"preset": "ultrafast", "crf": "21", "g": g, "keyint_min": g, "sc_threshold": "0", "bf": "0",
                          "x264-params": "cabac=1:deblock=1"}
        for i in range(n):
            np.add(background, noise[i % len(noise)], out=luma)
            x0, y0 = (7 * i) % (WIDTH - 300), 300 + int(200 * np.sin(i / 40))
            luma[y0:y0 + 300, x0:x0 + 200] = 200 + (i % 20)
            np.clip(luma, 0, 255, out=luma)
            planes[:HEIGHT] = luma
            frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    os.replace(tmp, path)
    return path


def describe_clip(path: Path) -> dict:
    size = path.stat().st_size
    key_bytes = total = 0
    with av.open(str(path)) as container:
        for packet in container.demux(video=0):
            if packet.size:
                total += packet.size
                key_bytes += packet.size if packet.is_keyframe else 0
    info = probe_video(path)
    return {"mb": size / 1e6, "mbit_s": size * 8 / info.duration_s / 1e6, "key_share": key_bytes / total,
            "duration_s": info.usable_duration_s, "frames": info.n_frames, "keyframes": info.n_keyframes}


# --------------------------------------------------------------------------- the floor


@dataclass
class PacketIndex:
    pts: list[int]  # decode order
    key: list[bool]
    frame_pts: list[int]  # presentation order
    frame_times: list[float]


def index_packets(path: Path) -> PacketIndex:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pts, key = [], []
        for packet in container.demux(stream):
            if packet.size:
                pts.append(packet.pts)
                key.append(packet.is_keyframe)
        start = stream.start_time if stream.start_time is not None else min(pts)
        time_base = stream.time_base
    frame_pts = sorted(pts)
    return PacketIndex(pts, key, frame_pts, [float((p - start) * time_base) for p in frame_pts])


def wanted_pts(index: PacketIndex, targets: list[float]) -> list[int]:
    """pts of the last frame presented at or before each target (the extraction contract)."""
    return [index.frame_pts[max(bisect_right(index.frame_times, t + TIME_EPS_S) - 1, 0)] for t in targets]


def floor_plan(index: PacketIndex, wanted: list[int]) -> list[tuple[int, int]]:
    """Packet ranges (decode order) from the keyframe before each wanted frame's packet to that packet."""
    carrier = {p: i for i, p in enumerate(index.pts)}
    keys = [i for i, k in enumerate(index.key) if k]
    spans = set()
    for p in wanted:
        i = carrier[p]
        g = bisect_right(keys, i) - 1
        start = keys[g] if g >= 0 else 0
        if g > 0 and index.pts[i] < index.pts[start]:  # a leading picture of an open GOP
            start = keys[g - 1]
        spans.add((start, i))
    runs: list[tuple[int, int]] = []
    for first, last in sorted(spans):
        if runs and first <= runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], max(runs[-1][1], last))
        else:
            runs.append((first, last))
    return runs


def floor_decode(path: Path, runs: list[tuple[int, int]], wanted: set[int]) -> set[int]:
    """Decode only the packets in `runs` (no conversion, no JPEG); return the wanted pts that came out."""
    found: set[int] = set()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        codec = stream.codec_context
        codec.thread_type = "FRAME"
        codec.thread_count = 0
        r = 0
        i = -1
        for packet in container.demux(stream):
            if not packet.size:
                continue
            i += 1
            if i < runs[r][0]:
                continue
            for frame in codec.decode(packet):
                if frame.pts in wanted:
                    found.add(frame.pts)
            if i == runs[r][1]:
                r += 1
                if r == len(runs):
                    break
        for frame in codec.decode(None):
            if frame.pts in wanted:
                found.add(frame.pts)
    return found


def full_decode(path: Path) -> int:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_type = "FRAME"
        stream.codec_context.thread_count = 0
        return sum(1 for _ in container.decode(stream))


# --------------------------------------------------------------------------- ffmpeg


def ffmpeg_select(path: Path, targets: list[float], out_dir: Path) -> list[Path]:
    """The exact ffmpeg CLI: the first frame at or after each target, as JPEG (one process)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # select a frame when the next unanswered target is due: t >= target k, counting by the last selected
    # frame's target. Targets are 1 / step from 0, so "due" is floor(t/step) > floor(prev_selected_t/step).
    step = targets[1] - targets[0] if len(targets) > 1 else 1e9
    expr = f"isnan(prev_selected_t)+gt(floor((t+{TIME_EPS_S})/{step}),floor((prev_selected_t+{TIME_EPS_S})/{step}))"
    command = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:v:0", "-vf", f"select='{expr}'",
               "-fps_mode", "passthrough", "-frames:v", str(len(targets)), "-q:v", "2", str(out_dir / "%06d.jpg")]
    subprocess.run(command, check=True)
    return sorted(out_dir.glob("*.jpg"))


# --------------------------------------------------------------------------- timing


def timed(fn: Callable[[], object], repeats: int = REPEATS) -> tuple[float, object]:
    """Median wall time of `fn` (3 runs when one is short, else 1) and the last result."""
    times = []
    start = time.perf_counter()
    result = fn()
    times.append(time.perf_counter() - start)
    if times[0] < MAX_SINGLE_RUN_FOR_REPEATS_S:
        for _ in range(repeats - 1):
            start = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - start)
    return statistics.median(times), result


@dataclass
class ClipResult:
    name: str
    description: dict
    targets: int
    ours_s: float = 0.0
    floor_s: float = 0.0
    full_s: float = 0.0
    ffmpeg_s: float | None = None
    checks: dict = field(default_factory=dict)
