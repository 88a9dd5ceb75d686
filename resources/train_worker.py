"""Training as a separate process, spoken to through Dagster Pipes.

Started by `PipesSubprocessTrainer` (or, in production, inside a GPU pod): reads the recipe from the
Pipes extras, streams one log line per epoch back to the Dagster run, and reports the result as a
custom message. A crash here (out of memory, a CUDA fault) fails this process, not the run worker.
When the extras name the store (its class and settings; credentials come from the environment as in
the parent), the run folder is kept there while it trains (`pipeline.train_runs`).
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from dagster_pipes import open_dagster_pipes

from pipeline.training import TrainingRecipe, train
from resources.storage import ArtifactStore, LocalArtifactStore, S3ArtifactStore

ERROR_FILE = "training_error.json"
STORES = {cls.__name__: cls for cls in (LocalArtifactStore, S3ArtifactStore)}


def store_extras(store: ArtifactStore) -> dict:
    """The store as Pipes extras: its class name and settings (no credentials are settings)."""
    kind = type(store).__name__
    if kind not in STORES:
        raise ValueError(f"the training process cannot open a {kind}; use one of {sorted(STORES)}")
    return {"kind": kind, "settings": store.model_dump()}


def open_store(extras: dict | None) -> ArtifactStore | None:
    if not extras:
        return None
    return STORES[extras["kind"]](**extras["settings"])


def main() -> None:
    with open_dagster_pipes() as pipes:
        extras = pipes.extras
        recipe = TrainingRecipe(**extras["recipe"])
        run_dir = Path(extras["run_dir"])
        try:
            result = train(recipe, Path(extras["data_yaml"]), extras["base_weights"], run_dir,
                           on_epoch=lambda row: pipes.log.info("epoch " + json.dumps(row)),
                           store=open_store(extras.get("store")))
        except Exception as exc:  # leave the reason where the parent can read it, then fail this process
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / ERROR_FILE).write_text(json.dumps({"type": type(exc).__name__, "message": str(exc)}))
            raise
        payload = asdict(result)
        payload["best"], payload["last"] = str(result.best), str(result.last)
        pipes.report_custom_message(payload)


if __name__ == "__main__":
    main()
