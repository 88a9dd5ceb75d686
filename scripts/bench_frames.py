"""Benchmark: exact frame extraction (`pipeline.frames.extract_frames`) against its floor, a full decode and
the exact ffmpeg CLI, on 1080p H.264 clips with camera-like noise. One command, nothing timed in the tests:

    .venv/bin/python scripts/bench_frames.py [--quick] [--demo-root DIR] [--keep DIR] [--skip-ffmpeg] [--json F]

What it does, in one process run (peak memory comes from a child process, batches from worker processes):

1. Generates clips with PyAV/libx264 (two processes) into a temp dir, or into `--keep DIR` where later
   runs reuse them:
   `gop2`   1080p30, 180 s, keyframe every 2 s      sampled 1 frame / 2 s  (the operation-video policy)
   `gop8`   1080p30, 180 s, keyframe every 8.33 s   sampled 1 frame / 2 s  (long GOP: near a full decode)
   `camera` 1080p25, 300 s, keyframe every 4 s      sampled 1 frame / 30 s (the buffer-clip policy)
   Frames are a fixed textured scene, a moving block and fresh spatially-correlated noise every frame,
   encoded by x264 (ultrafast with CABAC and deblocking, crf 21, fixed GOP, no B-frames): gop2 7.1 Mbit/s
   with keyframes 12 % of the bytes, camera 4.9 Mbit/s (less noise), like the clips in FRAMES-NOTES.md.
   `--quick` makes them 60 s / 60 s / 120 s.
2. The demo footage: `demo.generate.generate_demo(root, SMALL)` (or `--demo-root` of an existing
   store); its operation videos (480x272, 5 fps, B-frames) at 1 frame / 2 s, times summed over the videos.
3. For every clip, with the same targets:
   ours   `extract_frames` (index pass + decode of the needed GOP spans + RGB + JPEG q95 + sha256 + write)
   floor  decode only the packets the targets need: the spans from the GOP's keyframe to each target's
          packet, one decoder with frame threads kept alive across spans and drained at the end; the plan
          is made before the clock starts and nothing is converted or encoded (a lower bound for any
          extractor built on this decoder)
   full   one sequential decode of every frame (frame threads, no conversion)
   ffmpeg the exact ffmpeg CLI: `-vf select=...` picking the first frame at or after each target (the last
          frame at or before it when targets fall on frames, as here), JPEG out (-q:v 2); skipped with a
          message when `ffmpeg` is not on PATH
   ours and the floor alternate, median of 3 runs each when a run takes under 5 s, else one run.
4. Checks, untimed: every JPEG we wrote is byte-identical to the JPEG of the frame the full decode (every
   packet, no skipping) shows at the target, with the same frame index and time; the floor found exactly
   the wanted frames; ffmpeg wrote one JPEG per target, each closer to the right frame than to the next.
   Exit status 1 if any check fails.
5. Peak memory: `extract_frames` on the `camera` clip in a fresh child process (getrusage ru_maxrss, and
   VmHWM from /proc, which is the child's own).
6. Batches: the same extraction over several videos, sequentially in this process (decoder threads auto)
   vs `pipeline.frames_batch.extract_many(jobs, workers=2)` (two processes, one decoder thread each).

Goals (issue "Footage: exact, fast frame extraction"): ours >= 8x faster than ffmpeg on `gop2`; ours <= 1.2x
the floor on every clip; ours <= 1.1x a full decode on `gop8`; peak RSS < 600 MB on `camera`. Wall-clock
times are printed with the CPU-seconds they took (this process and its children), and the load average.
Figures and their discussion: docs/benchmarks.md, "Frame extraction".
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

from pipeline import frames  # noqa: E402
from pipeline.frames import TIME_EPS_S, extract_frames, probe_video  # noqa: E402
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
    noise: float = 3.0  # sensor-noise strength (sigma before a 1.2 px blur, x2.5)
    crf: int = 21

    @property
    def gop_frames(self) -> int:
        return round(self.gop_s * self.fps)


def clip_specs(quick: bool) -> list[ClipSpec]:
    scale = (60.0 / 180.0) if quick else 1.0
    return [
        ClipSpec("gop2", 180.0 * scale, 30, 2.0, 2.0),
        ClipSpec("gop8", 180.0 * scale, 30, 250 / 30, 2.0),
        ClipSpec("camera", 120.0 if quick else 300.0, 25, 4.0, 30.0, noise=2.0),
    ]


def _scene(seed: int, noise_sigma: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """A fixed textured background (luma, int16) and a bank of 7 noise fields (prime: no short repeats)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    background = 110 + 40 * np.sin(xx / 37.0) * np.cos(yy / 53.0) + 25 * ((xx // 120 + yy // 90) % 2)
    texture = cv2.GaussianBlur(rng.normal(0, 10, (HEIGHT, WIDTH)).astype(np.float32), (0, 0), 0.8)
    background = (background + texture).astype(np.int16)
    noise = [
        np.round(cv2.GaussianBlur(rng.normal(0, noise_sigma, (HEIGHT, WIDTH)).astype(np.float32), (0, 0), 1.2) * 2.5)
        .astype(np.int16)
        for _ in range(7)
    ]
    return background, noise


def write_clip(path: Path, spec: ClipSpec, seed: int = 0) -> Path:
    """Encode `spec` as a constant-rate 1080p H.264 MP4 with PyAV/libx264 (atomic: temp name, then rename).

    Frame i is scene + noise field i % 7 (precomputed as 8-bit luma planes) with a moving, brightening
    block pasted in; chroma is flat grey. x264 ultrafast uses one reference frame, so the 7-frame
    period of the noise cannot be exploited and every frame pays for fresh noise.
    """
    background, noise = _scene(seed, spec.noise)
    lumas = [np.clip(background + n, 0, 255).astype(np.uint8) for n in noise]
    tmp = path.with_name(f".tmp-{path.name}")
    n = round(spec.seconds * spec.fps)
    planes = np.empty((HEIGHT * 3 // 2, WIDTH), np.uint8)
    planes[HEIGHT:] = 128  # grey chroma
    with av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=spec.fps)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        g = str(spec.gop_frames)
        # ultrafast, but with CABAC and the deblocking filter that camera encoders (main/high profile) use
        stream.options = {"preset": "ultrafast", "crf": str(spec.crf), "g": g, "keyint_min": g, "sc_threshold": "0",
                          "bf": "0", "x264-params": "cabac=1:deblock=1"}
        for i in range(n):
            planes[:HEIGHT] = lumas[i % len(lumas)]
            x0, y0 = (7 * i) % (WIDTH - 300), 300 + int(200 * np.sin(i / 40))
            planes[y0:y0 + 300, x0:x0 + 200] = 200 + (i % 20)
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


def full_decode(path: Path, keep: set[int]) -> tuple[list[int], dict[int, av.VideoFrame]]:
    """Decode every frame (frame threads, no conversion); the pts of all frames, and the frames in `keep`
    held (not converted) for the checks afterwards."""
    seen: list[int] = []
    kept: dict[int, av.VideoFrame] = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_type = "FRAME"
        stream.codec_context.thread_count = 0
        for frame in container.decode(stream):
            seen.append(frame.pts)
            if frame.pts in keep:
                kept[frame.pts] = frame
    return seen, kept


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


def _cpu() -> float:
    """CPU seconds of this process (all threads) and its finished children (ffmpeg)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@dataclass
class Timing:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def add(self, wall: float, cpu: float) -> None:
        self.wall.append(wall)
        self.cpu.append(cpu)

    @property
    def s(self) -> float:
        return statistics.median(self.wall) if self.wall else float("nan")

    @property
    def cpu_s(self) -> float:
        return statistics.median(self.cpu) if self.cpu else float("nan")

    def __iadd__(self, other: Timing) -> Timing:  # sums per run index (a set of videos as one case)
        if not self.wall:
            self.wall, self.cpu = list(other.wall), list(other.cpu)
        else:
            n = min(len(self.wall), len(other.wall))
            self.wall = [a + b for a, b in zip(self.wall[:n], other.wall[:n])]
            self.cpu = [a + b for a, b in zip(self.cpu[:n], other.cpu[:n])]
        return self


def run_timed(timing: Timing, fn: Callable[[], object]) -> object:
    cpu, start = _cpu(), time.perf_counter()
    result = fn()
    timing.add(time.perf_counter() - start, _cpu() - cpu)
    return result


# --------------------------------------------------------------------------- one clip


@dataclass
class CaseResult:
    name: str
    what: str
    targets: int
    ours: Timing = field(default_factory=Timing)
    floor: Timing = field(default_factory=Timing)
    full: Timing = field(default_factory=Timing)
    ffmpeg: Timing = field(default_factory=Timing)
    checks: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def _fresh(parent: Path, name: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=parent))
    return path


def measure_video(path: Path, step_s: float, work: Path, result: CaseResult, *, use_ffmpeg: bool,
                  repeats: int | None = None) -> None:
    """Time ours / floor / full / ffmpeg on one video (adding into `result`) and check exactness."""
    info = probe_video(path)
    targets = every_n_seconds(info.usable_duration_s, step_s)
    index = index_packets(path)
    wanted = wanted_pts(index, targets)
    runs = floor_plan(index, wanted)
    ours, floor = Timing(), Timing()

    # ours and the floor alternate, so a busy moment on the machine hits both alike
    records = run_timed(ours, lambda: extract_frames(path, targets, _fresh(work, "ours"), video_id=path.stem))
    found = run_timed(floor, lambda: floor_decode(path, runs, set(wanted)))
    n = repeats if repeats is not None else (REPEATS if max(ours.wall[0], floor.wall[0]) < MAX_SINGLE_RUN_FOR_REPEATS_S
                                             else 1)
    for _ in range(n - 1):
        records = run_timed(ours, lambda: extract_frames(path, targets, _fresh(work, "ours"), video_id=path.stem))
        run_timed(floor, lambda: floor_decode(path, runs, set(wanted)))
    # the full decode also holds the wanted frames (and, for the ffmpeg check, the frame after each of
    # the first ten), decoded by brute force with no skipping: the reference for the checks below
    rank = {p: i for i, p in enumerate(index.frame_pts)}
    later = {p: index.frame_pts[rank[p] + 1] for p in wanted[:10] if rank[p] + 1 < len(index.frame_pts)}
    full = Timing()
    seen, kept = run_timed(full, lambda: full_decode(path, set(wanted) | set(later.values())))
    ff = Timing()
    ff_files: list[Path] = []
    if use_ffmpeg:
        ff_files = run_timed(ff, lambda: ffmpeg_select(path, targets, _fresh(work, "ffmpeg")))

    result.targets += len(targets)
    result.ours += ours
    result.floor += floor
    result.full += full
    if use_ffmpeg:
        result.ffmpeg += ff

    # ---- checks (untimed): every JPEG of ours is byte-identical to the JPEG of the reference frame
    problems = []
    if sorted(seen) != index.frame_pts:
        problems.append(f"full decode gave {len(seen)} frames, the packet index {len(index.frame_pts)}")
    if found != set(wanted):
        problems.append(f"floor missed {len(set(wanted) - found)} wanted frames")
    rgb = {p: frames._to_rgb(frame, str(path)) for p, frame in kept.items()}
    kept.clear()
    if len(records) != len(targets):
        problems.append(f"{len(records)} records for {len(targets)} targets")
    for record, target, pts in zip(records, targets, wanted):
        expected = sha256_bytes(frames._encode_jpeg(rgb[pts], 95)) if pts in rgb else "missing"
        if record.target_s != target or record.frame_index != rank[pts] or \
                record.actual_s != index.frame_times[rank[pts]]:
            problems.append(f"{record.jpeg_name}: frame {record.frame_index}, reference {rank[pts]}")
        elif record.jpeg_sha256 != expected:
            problems.append(f"{record.jpeg_name}: JPEG differs from the reference frame's")
    if use_ffmpeg:
        if len(ff_files) != len(targets):
            problems.append(f"ffmpeg wrote {len(ff_files)} JPEGs for {len(targets)} targets")
        worst, wrong = 0.0, 0
        for pts, jpeg in zip(wanted, ff_files):
            image = cv2.imread(str(jpeg), cv2.IMREAD_COLOR)[..., ::-1].astype(np.int16)
            right = float(np.abs(image - rgb[pts]).mean())
            worst = max(worst, right)
            if pts in later and float(np.abs(image - rgb[later[pts]]).mean()) <= right:
                wrong += 1  # closer to the next frame than to the one it should be
        if wrong:
            problems.append(f"ffmpeg: {wrong} JPEGs closer to the next frame than to the target's")
        result.checks.append(f"{worst:.2f}")
    result.failures += [f"{path.name}: {p}" for p in problems]


def describe(timing: Timing) -> str:
    return f"{timing.s:.2f} s ({timing.cpu_s:.2f} CPU-s)"


# --------------------------------------------------------------------------- memory, batches


MEMORY_CHILD = """
import resource, sys, tempfile
sys.path.insert(0, sys.argv[1])
from pipeline.frames import extract_frames, probe_video
from pipeline.sampling import every_n_seconds
def hwm():  # peak RSS of this process image only (getrusage also keeps the parent's, see below)
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
path, step = sys.argv[2], float(sys.argv[3])
base = hwm()
records = extract_frames(path, every_n_seconds(probe_video(path).usable_duration_s, step), tempfile.mkdtemp(),
                         video_id="m")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, base, hwm(), len(records))
"""


def peak_rss_mb(path: Path, step_s: float) -> dict:
    """Peak RSS (MB) of a fresh process that extracts `path`: getrusage's ru_maxrss, and VmHWM after the
    imports and at the end. Linux keeps ru_maxrss across fork+exec, so it is at least the parent's RSS at
    the moment of the launch; this runs before the parent holds any frames, and VmHWM shows the child's own."""
    out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(REPO), str(path), str(step_s)], check=True,
                         capture_output=True, text=True).stdout.split()
    return {"maxrss_mb": int(out[0]) / 1024, "hwm_after_imports_mb": int(out[1]) / 1024,
            "hwm_mb": int(out[2]) / 1024, "frames": int(out[3]),
            "parent_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def batch(name: str, jobs: list[FrameJob], work: Path) -> dict:
    """The same videos sequentially in this process (decoder threads auto) and with extract_many(workers=2)."""
    seq, par = Timing(), Timing()
    seq_dir = _fresh(work, f"{name}-seq")
    sequential = run_timed(seq, lambda: {
        job.video_id: extract_frames(job.path, job.targets_s, seq_dir / job.video_id, video_id=job.video_id)
        for job in jobs})
    par_dir = _fresh(work, f"{name}-par")
    parallel = run_timed(par, lambda: extract_many(
        [FrameJob(j.video_id, j.path, j.targets_s, par_dir / j.video_id) for j in jobs], workers=2))
    same = parallel.ok and parallel.records == sequential
    return {"name": name, "videos": len(jobs), "frames": sum(len(r) for r in sequential.values()),
            "sequential": seq, "parallel": par, "same": same, "speedup": seq.s / par.s}


# --------------------------------------------------------------------------- main


REPO = Path(__file__).resolve().parents[1]


def versions() -> dict:
    ffmpeg = "absent"
    if shutil.which("ffmpeg"):
        ffmpeg = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.split("\n")[0]
    libs = getattr(av, "library_versions", {})
    return {"python": platform.python_version(), "pyav": av.__version__, "opencv": cv2.__version__,
            "libavcodec": ".".join(map(str, libs.get("libavcodec", ()))), "ffmpeg_cli": ffmpeg,
            "cpu": _cpu_model(), "cores": os.cpu_count()}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _generate(args: tuple[str, ClipSpec]) -> str:
    path, spec = args
    write_clip(Path(path), spec)
    return path


def _demo(root: str) -> str:
    from demo.generate import SMALL, generate_demo

    generate_demo(Path(root), SMALL)
    return root


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b and b == b else "n/a"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter clips (60 s / 60 s / 120 s)")
    parser.add_argument("--demo-root", type=Path, help="an existing demo store (default: generate the SMALL demo)")
    parser.add_argument("--keep", type=Path, help="keep the generated clips here and reuse them on later runs")
    parser.add_argument("--skip-ffmpeg", action="store_true", help="leave the ffmpeg CLI column out")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()

    started = time.perf_counter()
    use_ffmpeg = not args.skip_ffmpeg and shutil.which("ffmpeg") is not None
    if not use_ffmpeg:
        print("ffmpeg CLI: " + ("skipped (--skip-ffmpeg)" if args.skip_ffmpeg else
                                "not found on PATH; the ffmpeg column is left out (apt-get install ffmpeg)"))
    temp = tempfile.TemporaryDirectory(prefix="bench-frames-")
    work = Path(temp.name)
    clip_dir = args.keep or work / "clips"
    clip_dir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    print(json.dumps(versions()))
    print(f"load average before: {load_before[0]:.2f} (1 min)")

    # ---- inputs: the clips and the demo footage, made in two processes (x264 and numpy, two cores)
    specs = clip_specs(args.quick)
    paths = {s.name: clip_dir / f"{s.name}_{s.seconds:g}s_{s.fps}fps_g{s.gop_frames}_n{s.noise:g}_crf{s.crf}.mp4"
             for s in specs}
    todo = [(str(paths[s.name]), s) for s in specs if not paths[s.name].exists()]
    demo_root = args.demo_root
    t0 = time.perf_counter()
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(_generate, job) for job in todo]
        demo_future = None
        if demo_root is None:
            demo_root = work / "demo"
            demo_future = pool.submit(_demo, str(demo_root))
        for future in futures + ([demo_future] if demo_future else []):
            future.result()
    print(f"inputs ready in {time.perf_counter() - t0:.0f} s ({len(todo)} clips generated)")
    demo_videos = sorted((demo_root / "raw" / "videos").glob("*.mp4"))
    if not demo_videos:
        raise SystemExit(f"no demo videos under {demo_root}/raw/videos")

    # ---- peak memory first, while this process holds no frames (see peak_rss_mb)
    memory = peak_rss_mb(paths["camera"], 30.0)
    print(f"peak RSS extracting camera ({memory['frames']} frames): ru_maxrss {memory['maxrss_mb']:.0f} MB, "
          f"VmHWM {memory['hwm_mb']:.0f} MB (after imports {memory['hwm_after_imports_mb']:.0f} MB; launcher's peak "
          f"{memory['parent_rss_mb']:.0f} MB)", flush=True)

    # ---- per clip
    results: list[CaseResult] = []
    descriptions = {}
    for spec in specs:
        path = paths[spec.name]
        d = describe_clip(path)
        descriptions[spec.name] = d
        what = (f"1080p{spec.fps}, {d['duration_s']:.0f} s, GOP {spec.gop_s:.2f} s, {d['mbit_s']:.1f} Mbit/s, "
                f"keyframes {100 * d['key_share']:.0f} % of bytes; 1 frame / {spec.step_s:g} s")
        result = CaseResult(spec.name, what, 0)
        t0 = time.perf_counter()
        measure_video(path, spec.step_s, work, result, use_ffmpeg=use_ffmpeg)
        results.append(result)
        print(f"{spec.name}: ours {describe(result.ours)}, floor {describe(result.floor)}, "
              f"full {describe(result.full)}, ffmpeg {describe(result.ffmpeg) if use_ffmpeg else 'skipped'} "
              f"[{time.perf_counter() - t0:.0f} s]", flush=True)
    demo = CaseResult("demo", f"demo footage: {len(demo_videos)} operation videos (480x272, 5 fps, 24 s, "
                              "GOP 2 s, B-frames); 1 frame / 2 s; times summed over the videos", 0)
    for path in demo_videos:
        measure_video(path, 2.0, work, demo, use_ffmpeg=use_ffmpeg, repeats=3)
    results.append(demo)
    print(f"demo: ours {describe(demo.ours)}, floor {describe(demo.floor)}, full {describe(demo.full)}, "
          f"ffmpeg {describe(demo.ffmpeg) if use_ffmpeg else 'skipped'}", flush=True)

    # ---- batches: sequential in this process vs extract_many(workers=2)
    gop2, camera = paths["gop2"], paths["camera"]
    big_jobs = [FrameJob(f"gop2_{i}", gop2, every_n_seconds(probe_video(gop2).usable_duration_s, 2.0), Path(f"g{i}"))
                for i in range(2)] + \
               [FrameJob(f"camera_{i}", camera, every_n_seconds(probe_video(camera).usable_duration_s, 30.0),
                         Path(f"c{i}")) for i in range(2)]
    demo_jobs = [FrameJob(p.stem, p, every_n_seconds(probe_video(p).usable_duration_s, 2.0), Path(p.stem))
                 for p in demo_videos]
    batches = [batch("1080p: gop2 x2 + camera x2", big_jobs, work),
               batch(f"demo: {len(demo_jobs)} videos", demo_jobs, work)]
    for b in batches:
        print(f"batch {b['name']}: sequential {b['sequential'].s:.2f} s, extract_many(workers=2) "
              f"{b['parallel'].s:.2f} s ({b['speedup']:.2f}x), same records: {b['same']}", flush=True)

    # ---- report
    load_after = os.getloadavg()
    print()
    print("| clip | targets | ours | floor | full decode | ffmpeg CLI | ours / floor | ffmpeg / ours | ours / full |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        ff = describe(r.ffmpeg) if use_ffmpeg else "skipped"
        print(f"| {r.name}: {r.what} | {r.targets} | {describe(r.ours)} | {describe(r.floor)} | {describe(r.full)} "
              f"| {ff} | {ratio(r.ours.s, r.floor.s)} | {ratio(r.ffmpeg.s, r.ours.s) if use_ffmpeg else 'n/a'} "
              f"| {ratio(r.ours.s, r.full.s)} |")
    print()
    by = {r.name: r for r in results}
    goals = [
        ("ours >= 8x faster than ffmpeg CLI on gop2", use_ffmpeg and by["gop2"].ffmpeg.s / by["gop2"].ours.s >= 8,
         ratio(by["gop2"].ffmpeg.s, by["gop2"].ours.s) if use_ffmpeg else "skipped"),
        *[(f"ours <= 1.2x floor on {r.name}", r.ours.s <= 1.2 * r.floor.s, ratio(r.ours.s, r.floor.s))
          for r in results],
        ("ours <= 1.1x full decode on gop8", by["gop8"].ours.s <= 1.1 * by["gop8"].full.s,
         ratio(by["gop8"].ours.s, by["gop8"].full.s)),
        ("peak RSS < 600 MB on camera", memory["maxrss_mb"] < 600,
         f"{memory['maxrss_mb']:.0f} MB (ru_maxrss), {memory['hwm_mb']:.0f} MB (VmHWM)"),
    ]
    for text, ok, value in goals:
        print(f"{'SKIP' if value == 'skipped' else 'MET ' if ok else 'MISS'} {text}: {value}")
    failures = [f for r in results for f in r.failures] + [f"batch {b['name']}: records differ" for b in batches
                                                           if not b["same"]]
    checks = [c for r in results for c in r.checks]
    print(f"exactness: {'all frames exact' if not failures else 'FAILED'} "
          f"({sum(r.targets for r in results)} targets checked against the reference decode)")
    for failure in failures:
        print(f"  {failure}")
    if checks:
        print(f"  ffmpeg JPEGs vs the reference frames: worst mean |difference| {max(map(float, checks)):.2f} "
              "(0..255), none closer to the next frame")
    print(f"load average after: {load_after[0]:.2f}; total {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({
            "versions": versions(), "load": [load_before[0], load_after[0]],
            "clips": {r.name: {"what": r.what, "targets": r.targets, "ours": r.ours.__dict__,
                               "floor": r.floor.__dict__, "full": r.full.__dict__, "ffmpeg": r.ffmpeg.__dict__}
                      for r in results},
            "descriptions": descriptions, "memory": memory,
            "batches": [{**b, "sequential": b["sequential"].__dict__, "parallel": b["parallel"].__dict__}
                        for b in batches],
            "goals": [{"goal": t, "met": bool(ok), "value": v} for t, ok, v in goals], "failures": failures,
        }, indent=2))
    temp.cleanup()
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
