"""Stage B fine-tuning with Ultralytics: the plan's recipe as data, resumable, observable.

Every field of `TrainingRecipe` maps to an Ultralytics train argument, so the seeds' other recipes
(YOLOv8s at 800 for 20 epochs, YOLO11n with AdamW and patience 20) are configurations, not code.
"""
from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline.errors import PipelineInputError
from pipeline.hashing import sha256_file
from pipeline.offline import ultralytics_yolo
from pipeline.train_runs import CHECKPOINT_PIN, clear_run, restore_run, save_run

__all__ = ["CHECKPOINT_PIN", "TrainResult", "TrainingRecipe", "read_curves", "train"]


@dataclass(frozen=True)
class TrainingRecipe:
    """The plan's recipe (training plan, Stage B). Horizontal flip off, mixup off."""

    imgsz: int = 640
    epochs: int = 50
    batch: int = 32
    optimizer: str = "SGD"
    lr0: float = 0.01
    cos_lr: bool = True
    patience: int = 10
    fliplr: float = 0.0
    mixup: float = 0.0
    seed: int = 0
    fitness: str = "map50"  # what picks best.pt and drives early stopping: the plan's mAP@0.5 on val
    plots: bool = True  # Ultralytics' own plots in the run folder (kept in the store as train_run_<version>)
    device: str = ""  # "" = whatever is present (GPU 0 if any, else CPU)
    workers: int = 0
    extra: dict = field(default_factory=dict)  # any other Ultralytics train argument

    def __post_init__(self) -> None:
        if self.fitness not in FITNESS:
            raise PipelineInputError("training recipe", "fitness", self.fitness,
                                     f"use one of {', '.join(FITNESS)} (the plan: map50)", problem="unknown fitness")

    def train_args(self) -> dict:
        args = {k: v for k, v in asdict(self).items() if k not in {"extra", "device", "fitness"}}
        if self.device:
            args["device"] = self.device
        args.update(self.extra)
        return args


# The validation metric that chooses the best epoch (best.pt) and that early stopping watches.
# "ultralytics" keeps Ultralytics' own blend (0.1 mAP@0.5 + 0.9 mAP@0.5:0.95).
FITNESS = {"map50": "metrics/mAP50(B)", "map50_95": "metrics/mAP50-95(B)", "ultralytics": None}


def fitness_trainer(fitness: str):
    """A DetectionTrainer whose fitness is the recipe's metric (None: Ultralytics' default trainer)."""
    column = FITNESS[fitness]
    if column is None:
        return None
    from ultralytics.models.yolo.detect import DetectionTrainer

    class PlanFitnessTrainer(DetectionTrainer):
        def validate(self):
            metrics = self.validator(self)
            if metrics is None:
                return None, None
            metrics.pop("fitness", None)
            score = float(metrics[column])
            if self.best_fitness is None or self.best_fitness < score:
                self.best_fitness = score
            return metrics, score

    PlanFitnessTrainer.__name__ = f"PlanFitnessTrainer_{fitness}"
    return PlanFitnessTrainer


@dataclass
class TrainResult:
    best: Path
    last: Path
    best_sha256: str
    epochs_run: int
    resumed: bool
    curves: list[dict]
    final_metrics: dict


EpochLogger = Callable[[dict], None]


def _epoch_row(trainer) -> dict:
    row = {"epoch": int(trainer.epoch) + 1}
    losses = trainer.label_loss_items(trainer.tloss, prefix="train") if trainer.tloss is not None else {}
    row.update({k: round(float(v), 5) for k, v in losses.items()})
    row.update({k: round(float(v), 5) for k, v in (trainer.metrics or {}).items()})
    return row


def read_curves(run_dir: Path) -> list[dict]:
    """Per-epoch rows of Ultralytics' results.csv (losses, precision, recall, mAP)."""
    results = run_dir / "results.csv"
    if not results.exists():
        return []
    with results.open() as handle:
        return [{k.strip(): float(v) for k, v in row.items() if v not in (None, "")} for row in csv.DictReader(handle)]


def train(recipe: TrainingRecipe, data_yaml: Path | str, base_weights: Path | str, run_dir: Path,
          on_epoch: EpochLogger | None = None, store=None) -> TrainResult:
    """Train (or resume) in `run_dir`. A run that was interrupted continues from its last checkpoint.

    With a `store`, the run folder is also kept there (`pipeline.train_runs`, under the folder's name):
    restored first when the local folder has no checkpoint (the machine that trained it is gone),
    saved at every checkpoint, removed when training finishes.
    """
    YOLO = ultralytics_yolo()
    run_dir = Path(run_dir).resolve()
    last = run_dir / "weights" / "last.pt"
    best = run_dir / "weights" / "best.pt"
    if store is not None and not (run_dir / "finished").exists():
        restore_run(store, run_dir, run_dir.name)
    resumed = last.exists() and not (run_dir / "finished").exists()
    if resumed:
        _check_checkpoint(last)
    model = YOLO(str(last) if resumed else str(base_weights))
    if on_epoch is not None:
        model.add_callback("on_fit_epoch_end", lambda trainer: on_epoch(_epoch_row(trainer)))

    def saved(trainer) -> None:
        _pin_checkpoint(Path(trainer.last))
        if store is not None:
            save_run(store, run_dir, run_dir.name)

    model.add_callback("on_model_save", saved)
    trainer = {"trainer": cls} if (cls := fitness_trainer(recipe.fitness)) else {}
    if resumed:  # the dataset and folder of this machine, not the ones recorded in the checkpoint
        model.train(resume=True, data=str(Path(data_yaml).resolve()), save_dir=str(run_dir), **trainer)
    else:
        model.train(data=str(Path(data_yaml).resolve()), project=str(run_dir.parent), name=run_dir.name,
                    exist_ok=True, val=True, verbose=False, **trainer, **recipe.train_args())
    (run_dir / "finished").write_text("ok\n")
    if store is not None:
        clear_run(store, run_dir.name)
    curves = read_curves(run_dir)
    final = best if best.exists() else last
    return TrainResult(final, last, sha256_file(final), len(curves), resumed, curves, curves[-1] if curves else {})


def _pin_checkpoint(last: Path) -> None:
    """Record the sha256 of the checkpoint Ultralytics just saved (temp file, then rename)."""
    if last.exists():
        pin = last.parent / CHECKPOINT_PIN
        tmp = pin.with_name(pin.name + ".tmp")
        tmp.write_text(sha256_file(last) + "\n")
        tmp.replace(pin)


def _check_checkpoint(last: Path) -> None:
    """A checkpoint is a pickle: resume from it only if it is the one this pipeline saved."""
    pin = last.parent / CHECKPOINT_PIN
    digest = sha256_file(last)
    recorded = pin.read_text().strip() if pin.exists() else None
    if recorded != digest:
        raise PipelineInputError(str(last), "sha256", digest,
                                 f"the checkpoint is not the one this pipeline saved ({pin.name}: "
                                 f"{recorded or 'missing'}); it is not loaded. Delete {last.parent.parent} to train "
                                 "from the start", problem="unrecorded training checkpoint")
