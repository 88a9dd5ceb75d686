"""Training as a separate process, spoken to through Dagster Pipes.

Started by `PipesSubprocessTrainer` (or, in production, inside a GPU pod): reads the recipe from the
Pipes extras, streams one log line per epoch back to the Dagster run, and reports the result as a
custom message. A crash here (out of memory, a CUDA fault) fails this process, not the run worker.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from dagster_pipes import open_dagster_pipes

from pipeline.training import TrainingRecipe, train

ERROR_FILE = "training_error.json"


def main() -> None:
    with open_dagster_pipes() as pipes:
        extras = pipes.extras
        recipe = TrainingRecipe(**extras["recipe"])
        run_dir = Path(extras["run_dir"])
        try:
            result = train(recipe, Path(extras["data_yaml"]), extras["base_weights"], run_dir,
                           on_epoch=lambda row: pipes.log.info("epoch " + json.dumps(row)))
        except Exception as exc:  # leave the reason where the parent can read it, then fail this process
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / ERROR_FILE).write_text(json.dumps({"type": type(exc).__name__, "message": str(exc)}))
            raise
        payload = asdict(result)
        payload["best"], payload["last"] = str(result.best), str(result.last)
        pipes.report_custom_message(payload)


if __name__ == "__main__":
    main()
