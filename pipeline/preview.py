"""Annotated video preview: a detector run over a stretch of real video, written as an H.264 MP4
that plays in a browser (yuv420p, moov atom first), with each detection's box and confidence and
the frame's time drawn, plus a contact sheet and the detections as a table.

Frames are the exact frames at `start_s + k / fps` (pipeline.frames.iter_target_frames); the
detector is any callable from a list of BGR images to per-image (boxes, confidences, class names),
so the same code previews a PyTorch model, an ONNX file or a device engine's output.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import PipelineInputError
from pipeline.frames import iter_target_frames, probe_video

BOX_BGR = (0, 0, 255)  # red: what the model found
TEXT_BGR = (255, 255, 255)
COLUMNS = ["frame", "target_s", "actual_s", "x1", "y1", "x2", "y2", "conf", "class_name"]
Detections = list[tuple[np.ndarray, np.ndarray, list[str]]]
Detector = Callable[[list[np.ndarray]], Detections]


def preview_targets(duration_s: float, *, start_s: float, length_s: float, fps: float) -> list[float]:
    """Times of the preview's frames; errors name the field and the usable range."""
    if fps <= 0 or fps > 60:
        raise PipelineInputError("preview config", "fps", fps, "use a frame rate between 0 and 60",
                                 problem="frame rate out of range")
    if not 0 <= start_s < duration_s:
        raise PipelineInputError("preview config", "start_s", start_s,
                                 f"start inside the video (0 to {duration_s:.2f} s)", problem="start outside the video")
    end = min(duration_s, start_s + length_s)
    count = max(1, int(np.floor((end - start_s) * fps + 1e-9)))
    return [round(start_s + k / fps, 6) for k in range(count)]


def draw(image: np.ndarray, boxes: np.ndarray, confs: np.ndarray, names: list[str], time_s: float) -> np.ndarray:
    """Boxes with '<class> <conf>' and the frame time, on a copy of the BGR image."""
    import cv2

    out = image.copy()
    for (x1, y1, x2, y2), conf, name in zip(np.asarray(boxes, float).reshape(-1, 4), confs, names):
        p1, p2 = (int(round(x1)), int(round(y1))), (int(round(x2)), int(round(y2)))
        cv2.rectangle(out, p1, p2, BOX_BGR, 2)
        label = f"{name} {conf:.2f}"
        (w, h), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        top = max(p1[1] - h - 4, 0)
        cv2.rectangle(out, (p1[0], top), (p1[0] + w + 4, top + h + 4), BOX_BGR, -1)
        cv2.putText(out, label, (p1[0] + 2, top + h + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.45, TEXT_BGR, 1, cv2.LINE_AA)
    stamp = f"t = {time_s:7.2f} s"
    cv2.rectangle(out, (0, out.shape[0] - 22), (130, out.shape[0]), (0, 0, 0), -1)
    cv2.putText(out, stamp, (4, out.shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.5, TEXT_BGR, 1, cv2.LINE_AA)
    return out


class H264Writer:
    """Browser-playable MP4: libx264, yuv420p, even dimensions, +faststart. Writes to a temporary
    name and renames on close, so a failed preview leaves no half-written file."""

    def __init__(self, target: Path, fps: float, width: int, height: int, crf: int = 23):
        import av

        self.target = Path(target)
        self.tmp = self.target.with_name(f".{self.target.name}.{os.getpid()}.tmp.mp4")
        self.width, self.height = width - width % 2, height - height % 2
        self.container = av.open(str(self.tmp), mode="w", format="mp4", options={"movflags": "+faststart"})
        self.stream = self.container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        self.stream.width, self.stream.height, self.stream.pix_fmt = self.width, self.height, "yuv420p"
        self.stream.options = {"crf": str(crf), "preset": "veryfast"}
        self.frames = 0

    def write(self, bgr: np.ndarray) -> None:
        import av

        rgb = np.ascontiguousarray(bgr[: self.height, : self.width, ::-1])
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
            self.container.mux(packet)
        self.frames += 1

    def close(self, ok: bool = True) -> None:
        try:
            if ok:
                for packet in self.stream.encode():
                    self.container.mux(packet)
        finally:
            self.container.close()
        if ok:
            self.tmp.replace(self.target)
        else:
            self.tmp.unlink(missing_ok=True)


def render_preview(video: Path, detector: Detector, target: Path, *, start_s: float = 0.0, length_s: float = 10.0,
                   fps: float = 5.0, batch: int = 8, sheet_frames: int = 12) -> tuple[pd.DataFrame, bytes, dict]:
    """Write the annotated MP4 to `target`; return the detections table, a JPEG contact sheet and
    a summary (frames, fps, size, span)."""
    import cv2

    info = probe_video(video)
    targets = preview_targets(info.usable_duration_s, start_s=start_s, length_s=length_s, fps=fps)
    picks = set(np.linspace(0, len(targets) - 1, min(sheet_frames, len(targets))).round().astype(int).tolist())
    rows, thumbs, writer, index = [], [], None, 0
    try:
        pending: list = []

        def flush() -> None:
            nonlocal writer, index
            images = [np.ascontiguousarray(f.rgb[:, :, ::-1]) for f in pending]
            for frame, image, (boxes, confs, names) in zip(pending, images, detector(images)):
                for box, conf, name in zip(np.asarray(boxes, float).reshape(-1, 4), confs, names):
                    rows.append([index, frame.target_s, frame.actual_s, *map(float, box), float(conf), name])
                annotated = draw(image, boxes, confs, names, frame.actual_s)
                if writer is None:
                    writer = H264Writer(target, fps, annotated.shape[1], annotated.shape[0])
                writer.write(annotated)
                if index in picks:
                    scale = 240 / annotated.shape[1]
                    thumbs.append(cv2.resize(annotated, (240, int(annotated.shape[0] * scale)),
                                             interpolation=cv2.INTER_AREA))
                index += 1
            pending.clear()

        for frame in iter_target_frames(video, targets, threads=1):
            pending.append(frame)
            if len(pending) == batch:
                flush()
        flush()
    except BaseException:
        if writer is not None:
            writer.close(ok=False)
        raise
    writer.close()
    table = pd.DataFrame(rows, columns=COLUMNS)
    return table, contact_sheet(thumbs), {"frames": writer.frames, "fps": fps, "width": writer.width,
                                          "height": writer.height, "start_s": targets[0], "end_s": targets[-1],
                                          "detections": len(table)}


def contact_sheet(tiles: list[np.ndarray], columns: int = 4, quality: int = 85) -> bytes:
    """Tiles (BGR images) laid out in rows of `columns`, padded to one height, as JPEG bytes."""
    import cv2

    height = max(t.shape[0] for t in tiles)
    tiles = [cv2.copyMakeBorder(t, 0, height - t.shape[0], 0, 0, cv2.BORDER_CONSTANT) for t in tiles]
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    sheet = np.vstack([np.hstack(tiles[i:i + columns]) for i in range(0, len(tiles), columns)])
    ok, jpeg = cv2.imencode(".jpg", sheet, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return jpeg.tobytes()


def ultralytics_detector(model, *, imgsz: int, conf: float, device: str = "cpu") -> Detector:
    """An Ultralytics model (.pt or .onnx) as a preview detector: every class it knows, named."""
    def run(images: list[np.ndarray]) -> Detections:
        out = []
        for result in model.predict(images, imgsz=imgsz, conf=conf, device=device, verbose=False):
            names = [result.names[int(c)] for c in result.boxes.cls.tolist()]
            out.append((result.boxes.xyxy.cpu().numpy(), result.boxes.conf.cpu().numpy(), names))
        return out

    return run
