"""Where training runs. In-process here (tests, demo, a GPU workstation); the production deployment
sends it to a GPU worker (see docs/deployment.md).

Every trainer keeps its runs under one folder, `runs_dir` (LBZF_TRAIN_DIR), one sub-folder per run
(`run_dir(name)`), so a re-run of the same run resumes. Given the store, `fit` also keeps the run
folder there while it trains (`pipeline.train_runs`), so the run resumes on another machine too.
"""
from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import dagster as dg
from dagster._core.errors import DagsterPipesExecutionError  # not re-exported at the top level in 1.13

from pipeline.training import EpochLogger, TrainingRecipe, TrainResult, train
from resources.storage import ArtifactStore

DEFAULT_RUNS_DIR = Path(tempfile.gettempdir()) / "lbzf-train-runs"


class Trainer(dg.ConfigurableResource):
    """Runs a training recipe on a dataset yaml and returns the trained weights."""

    runs_dir: str = ""  # "" = <temp dir>/lbzf-train-runs

    def run_dir(self, name: str) -> Path:
        """The local folder of run `name`: stable across re-runs, so an interrupted run resumes."""
        return Path(self.runs_dir or DEFAULT_RUNS_DIR).expanduser() / name

    def fit(self, recipe: TrainingRecipe, data_yaml: Path, base_weights: str, run_dir: Path,
            on_epoch: EpochLogger | None = None, context: dg.AssetExecutionContext | None = None,
            store: ArtifactStore | None = None) -> TrainResult:
        """Train in `run_dir`; with `store`, keep the run there too (under the folder's name)."""
        raise NotImplementedError


class InProcessTrainer(Trainer):
    """Ultralytics in this process, on whatever device is present (GPU 0 if any, else CPU)."""

    device: str = ""

    def fit(self, recipe: TrainingRecipe, data_yaml: Path, base_weights: str, run_dir: Path,
            on_epoch: EpochLogger | None = None, context: dg.AssetExecutionContext | None = None,
            store: ArtifactStore | None = None) -> TrainResult:
        if self.device and not recipe.device:
            recipe = TrainingRecipe(**{**recipe.__dict__, "device": self.device})
        return train(recipe, data_yaml, base_weights, run_dir, on_epoch, store=store)


class PipesSubprocessTrainer(Trainer):
    """Ultralytics in a child process through Dagster Pipes: per-epoch logs stream into the run, and
    a crash in training fails the step cleanly instead of taking the run worker with it."""

    device: str = ""
    python: str = sys.executable

    def fit(self, recipe: TrainingRecipe, data_yaml: Path, base_weights: str, run_dir: Path,
            on_epoch: EpochLogger | None = None, context: dg.AssetExecutionContext | None = None,
            store: ArtifactStore | None = None) -> TrainResult:
        if context is None:
            raise ValueError("PipesSubprocessTrainer needs the asset's execution context")
        if self.device and not recipe.device:
            recipe = TrainingRecipe(**{**recipe.__dict__, "device": self.device})
        from resources.train_worker import ERROR_FILE, store_extras

        repo = Path(__file__).resolve().parents[1]
        error_file = Path(run_dir) / ERROR_FILE
        error_file.unlink(missing_ok=True)
        extras = {"recipe": asdict(recipe), "data_yaml": str(data_yaml), "base_weights": str(base_weights),
                  "run_dir": str(run_dir)}
        if store is not None:
            extras["store"] = store_extras(store)
        try:
            invocation = dg.PipesSubprocessClient(cwd=str(repo)).run(
                context=context, command=[self.python, "-m", "resources.train_worker"], extras=extras)
        except DagsterPipesExecutionError as exc:
            reason = json.loads(error_file.read_text()) if error_file.exists() else {"type": "crash",
                                                                                     "message": str(exc)}
            raise RuntimeError(f"training process failed ({reason['type']}): {reason['message']}. Remedy: fix the "
                               f"recipe or data and re-run; an interrupted run resumes from {run_dir}") from exc
        messages = invocation.get_custom_messages()
        if not messages:
            raise RuntimeError("the training process ended without reporting a result")
        payload = dict(messages[-1])
        payload["best"], payload["last"] = Path(payload["best"]), Path(payload["last"])
        return TrainResult(**payload)
