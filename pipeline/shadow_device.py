"""The device side of shadow mode: run the production and the candidate model on the camera's
frames, one frame at a time as the Jetson does, and write the logs `pipeline.shadow` reads.

    python -m pipeline.shadow_device --production prod.engine --production-onnx prod.onnx \\
        --production-version v0 --candidate cand.engine --candidate-onnx cand.onnx \\
        --candidate-version v0.1 --camera cam1 (--frames DIR | --video FILE [--start ISO]) --out LOGDIR

Each model runs from its TensorRT engine when TensorRT and a GPU are present, otherwise from its
ONNX through ONNX Runtime (the reason is printed and kept in the run manifest). Letterbox, NMS
and box scaling are the pipeline's (`pipeline.inference`), so the device and the pipeline cannot
disagree on what a detection is.

Every row is stamped with the frame's real capture time: from the frame's file name
(`...20260802T060512.250Z.jpg`), else its modification time (what the capture service wrote), or,
for a video, `--start` (or the time in the video's name) plus the frame's presentation time.
Rows carry `source: device` (the simulation writes `source: simulated`). The logs are one JSON-lines
file per run, written under a temporary name and renamed, with a `<file>.manifest` (JSON: models, backends, fallbacks)
beside it, a name the log reader does not pick up.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineInputError
from pipeline.inference.backends import BackendUnavailable, OnnxRuntimeBackend, TensorRTBackend
from pipeline.inference.choose import Detector
from pipeline.inference.prefetch import Source, prefetch

DEVICE, SIMULATED = "device", "simulated"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_STAMP = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})[T_-]?(\d{2})[:-]?(\d{2})[:-]?(\d{2})(\.\d+)?")


@dataclass
class Frame:
    key: str
    camera: str
    timestamp: datetime  # capture time, UTC
    source: Source | np.ndarray

    def __str__(self) -> str:  # how errors name the frame
        return self.key


def stamp_from_name(name: str) -> datetime | None:
    """The UTC capture time written in a file name (`20260802T060512.250Z`, `2026-08-02T06-05-12`), or None."""
    match = _STAMP.search(Path(name).stem)
    if not match:
        return None
    y, mo, d, h, mi, s, frac = match.groups()
    try:
        base = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=timezone.utc)
    except ValueError:
        return None
    return base + timedelta(seconds=float(frac)) if frac else base


def frames_from_dir(folder: Path, camera: str) -> list[Frame]:
    """Images of a folder in capture order, each stamped from its name or, failing that, its mtime."""
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise PipelineInputError(str(folder), "frames", [], f"put the camera's frames ({', '.join(IMAGE_SUFFIXES)}) "
                                 "in the folder", problem="no frames")
    frames = [Frame(p.name, camera, stamp_from_name(p.name) or
                    datetime.fromtimestamp(p.stat().st_mtime, tz=timezone.utc), p) for p in paths]
    return sorted(frames, key=lambda f: (f.timestamp, f.key))


def frames_from_video(video: Path, camera: str, *, start: datetime | None, every_s: float) -> Iterator[Frame]:
    """One frame every `every_s` seconds of the video, stamped start + presentation time."""
    import av

    start = start or stamp_from_name(Path(video).name)
    if start is None:
        raise PipelineInputError(str(video), "--start", None, "give --start (the capture time of the video's first "
                                 "frame, ISO 8601 with a zone) or put it in the file name (cam1_20260802T060000Z.mp4)",
                                 problem="capture time unknown")
    next_t = 0.0
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            t = float(frame.time or 0.0)
            if t + 1e-6 < next_t:
                continue
            next_t = t + every_s
            yield Frame(f"{Path(video).stem}@{t:.3f}s", camera, start + timedelta(seconds=t),
                        frame.to_ndarray(format="bgr24"))


def open_device_model(engine: Path | None, onnx: Path | None, *, device: str, imgsz: int, conf: float,
                      iou: float) -> tuple[Detector, dict]:
    """The engine through TensorRT, else the ONNX through ONNX Runtime; what was tried and why."""
    tried = []
    for kind, path in (("tensorrt", engine), ("onnxruntime", onnx)):
        if path is None:
            continue
        try:
            backend = TensorRTBackend(path, device=device) if kind == "tensorrt" else OnnxRuntimeBackend(path, device)
        except BackendUnavailable as exc:
            print(f"shadow_device: {exc}", file=sys.stderr)
            tried.append({"backend": kind, "outcome": "unavailable", "reason": exc.reason})
            continue
        record = {**backend.describe(), "tried": tried, "fell_back": bool(tried)}
        return Detector(backend, imgsz, conf, iou, [0], record=record), record
    raise PipelineInputError(str(engine or onnx), "model", tried, "give an engine this device's TensorRT can load, "
                             "or the model's ONNX (--*-onnx) with onnxruntime installed", problem="no model could load")


def shadow_rows(models: dict[str, Detector], frames: Iterable[Frame], *, source: str) -> list[dict]:
    """Every frame through every model, one frame at a time; latency = letterbox + network + NMS of
    that frame on this machine. Frames are read and decoded ahead on a background thread."""
    rows = []
    for chunk in prefetch(((f, f.source) for f in frames), lambda decoded: decoded, batch=1, depth=4):
        (frame, image), = chunk
        for version, detector in models.items():
            started = time.perf_counter()
            batch, = detector.letterbox([(frame.key, image)])
            det = detector.detect(batch)[0]
            latency = (time.perf_counter() - started) * 1000.0
            rows.append({"timestamp": frame.timestamp, "camera": frame.camera, "model_version": version,
                         "boxes": [[float(v) for v in b[:4]] for b in det], "confidences": [float(b[4]) for b in det],
                         "latency_ms": round(latency, 3), "frame_key": frame.key, "source": source})
    return rows


def write_jsonl(rows: list[dict], out_dir: Path, name: str, manifest: dict) -> Path:
    """Logs as JSON lines (ISO 8601 UTC timestamps), atomically, plus the run manifest beside them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / name
    tmp = out_dir / f".{name}.{os.getpid()}.partial"
    with open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps({**row, "timestamp": row["timestamp"].isoformat()}) + "\n")
    os.replace(tmp, target)
    (out_dir / f"{name}.manifest").write_text(json.dumps(manifest, indent=2, default=str))
    return target


def _parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise PipelineInputError("--start", "start", text, "give the zone, e.g. 2026-08-02T06:00:00Z",
                                 problem="capture time without a time zone")
    return value.astimezone(timezone.utc)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m pipeline.shadow_device", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for role in ("production", "candidate"):
        parser.add_argument(f"--{role}", type=Path, default=None, help=f"the {role} model's engine (or its ONNX)")
        parser.add_argument(f"--{role}-onnx", type=Path, default=None, help="its ONNX, used where no TensorRT runs")
        parser.add_argument(f"--{role}-version", required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--frames", type=Path, help="a folder of the camera's frames")
    source.add_argument("--video", type=Path, help="a recorded video of the camera")
    parser.add_argument("--start", default=None, help="capture time of the video's first frame (ISO 8601, zone)")
    parser.add_argument("--every-s", type=float, default=1.0, help="video: one frame every N seconds")
    parser.add_argument("--camera", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--iou", type=float, default=0.7)
    parser.add_argument("--device", default="0", help="GPU index for TensorRT / ONNX Runtime GPU providers, or cpu")
    args = parser.parse_args(argv)

    models, records = {}, {}
    for role in ("production", "candidate"):
        given, onnx = getattr(args, role), getattr(args, f"{role}_onnx")
        engine = given if given is not None and given.suffix != ".onnx" else None
        onnx = onnx or (given if given is not None and given.suffix == ".onnx" else None)
        version = getattr(args, f"{role}_version")
        models[version], records[version] = open_device_model(engine, onnx, device=args.device, imgsz=args.imgsz,
                                                              conf=args.conf, iou=args.iou)
    if len(models) != 2:
        parser.error("production and candidate need different versions")
    frames = frames_from_dir(args.frames, args.camera) if args.frames else \
        frames_from_video(args.video, args.camera, start=_parse_time(args.start) if args.start else None,
                          every_s=args.every_s)
    rows = shadow_rows(models, frames, source=DEVICE)
    if not rows:
        raise PipelineInputError(str(args.frames or args.video), "frames", 0, "check the footage", problem="no frames")
    first = min(r["timestamp"] for r in rows)
    name = f"{args.camera}_{first.strftime('%Y%m%dT%H%M%S')}Z_{args.candidate_version}.jsonl"
    manifest = {"camera": args.camera, "source": DEVICE, "frames": len(rows) // 2, "rows": len(rows),
                "period_start": first.isoformat(), "period_end": max(r["timestamp"] for r in rows).isoformat(),
                "models": records, "conf": args.conf, "iou": args.iou, "imgsz": args.imgsz}
    path = write_jsonl(rows, args.out, name, manifest)
    print(f"shadow_device: {len(rows)} rows ({len(rows) // 2} frames) -> {path}")
    return path


if __name__ == "__main__":
    main()
