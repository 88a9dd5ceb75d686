"""Training profiles: the plan's recipe and the seeds' other recipes, as data.

Each profile is a model architecture plus a `TrainingRecipe`; adding one is a dictionary entry.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.training import TrainingRecipe


@dataclass(frozen=True)
class Profile:
    model: str  # architecture name: yolov8n, yolov8s, yolo11n, ...
    recipe: TrainingRecipe = field(default_factory=TrainingRecipe)
    note: str = ""


PROFILES: dict[str, Profile] = {
    "plan_yolov8n_640": Profile("yolov8n", TrainingRecipe(), "training plan, Stage B recipe"),
    "yolov8s_800": Profile("yolov8s", TrainingRecipe(imgsz=800, epochs=20, optimizer="auto", cos_lr=False,
                                                     patience=100, fliplr=0.5),
                           "earlier PoC write-up: YOLOv8s at 800 for 20 epochs, Ultralytics defaults otherwise"),
    "yolo11n_adamw": Profile("yolo11n", TrainingRecipe(imgsz=640, epochs=100, batch=16, optimizer="AdamW",
                                                       lr0=0.001, cos_lr=False, patience=20, fliplr=0.5),
                             "earlier write-up: YOLO11n, AdamW, patience 20"),
}
