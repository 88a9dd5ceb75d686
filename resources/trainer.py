"""Where training runs. In-process here (tests, demo, a GPU workstation); the production deployment
sends it to a GPU worker (see docs/deployment.md)."""
from __future__ import annotations

from pathlib import Path

import dagster as dg

from pipeline.training import EpochLogger, TrainingRecipe, TrainResult, train


class Trainer(dg.ConfigurableResource):
    """Runs a training recipe on a dataset yaml and returns the trained weights."""

    def fit(self, recipe: TrainingRecipe, data_yaml: Path, base_weights: str, run_dir: Path,
            on_epoch: EpochLogger | None = None) -> TrainResult:
        raise NotImplementedError


class InProcessTrainer(Trainer):
    """Ultralytics in this process, on whatever device is present (GPU 0 if any, else CPU)."""

    device: str = ""

    def fit(self, recipe: TrainingRecipe, data_yaml: Path, base_weights: str, run_dir: Path,
            on_epoch: EpochLogger | None = None) -> TrainResult:
        if self.device and not recipe.device:
            recipe = TrainingRecipe(**{**recipe.__dict__, "device": self.device})
        return train(recipe, data_yaml, base_weights, run_dir, on_epoch)
