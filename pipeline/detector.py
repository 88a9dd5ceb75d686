"""Run a YOLO detector over frames and return person boxes as a table."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.offline import ultralytics_yolo

COLUMNS = ["frame_key", "x1", "y1", "x2", "y2", "conf"]


def load_model(weights: str | Path):
    return ultralytics_yolo()(str(weights))


def predict_persons(model, frames: list[tuple[str, Path]], *, imgsz: int = 640, conf: float = 0.001,
                    person_class: int = 0, batch: int = 16, device: str = "cpu") -> tuple[pd.DataFrame, dict]:
    """Person detections for each (frame_key, jpeg path), plus the mean per-stage speed (ms/image)."""
    rows, speeds = [], []
    for start in range(0, len(frames), batch):
        chunk = frames[start:start + batch]
        results = model.predict([str(p) for _, p in chunk], imgsz=imgsz, conf=conf, classes=[person_class],
                                device=device, verbose=False, batch=len(chunk))
        for (key, _), result in zip(chunk, results):
            speeds.append(result.speed)
            boxes = result.boxes
            for xyxy, score in zip(boxes.xyxy.tolist(), boxes.conf.tolist()):
                rows.append([key, *xyxy, score])
    speed = {k: round(sum(s[k] for s in speeds) / len(speeds), 3) for k in speeds[0]} if speeds else {}
    return pd.DataFrame(rows, columns=COLUMNS), speed
