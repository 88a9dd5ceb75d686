"""Training: the recipe trains a real (tiny) model on real labelled images, resumes after an
interruption, and runs in a separate process through Dagster Pipes where a failing profile fails its step
only. A real crash (SIGKILL of the worker process mid-run, then resume) is
tests/reliability/test_model_faults.py::test_interrupted_training_resumes_from_last_checkpoint."""
import json
import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml

from pipeline.training import TrainingRecipe, train
from resources.trainer import InProcessTrainer, PipesSubprocessTrainer

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
TINY = dict(imgsz=64, batch=4, workers=0, seed=0, device="cpu", extra={"close_mosaic": 0, "warmup_epochs": 0})


@pytest.fixture
def coco8(tmp_path):
    source = FIXTURES / "coco8_yolo"
    if not source.exists():
        pytest.skip(f"real fixtures not found at {source} (shared/ is absent)")
    root = tmp_path / "coco8"
    shutil.copytree(source, root)  # Ultralytics writes label caches beside the labels: never in shared/
    names = yaml.safe_load((source / "coco8.yaml").read_text())["names"]
    data = tmp_path / "coco8.yaml"
    data.write_text(yaml.safe_dump({"path": str(root), "train": "images/train", "val": "images/val", "names": names}))
    return data


def test_recipe_defaults_are_the_plans():
    args = TrainingRecipe().train_args()
    assert (args["imgsz"], args["epochs"], args["batch"], args["optimizer"], args["lr0"]) == (640, 50, 32, "SGD", 0.01)
    assert args["cos_lr"] is True and args["patience"] == 10 and args["fliplr"] == 0.0 and args["mixup"] == 0.0
    other = TrainingRecipe(imgsz=800, epochs=20, extra={"model_note": "yolov8s"}).train_args()
    assert other["imgsz"] == 800 and other["epochs"] == 20 and other["model_note"] == "yolov8s"


def test_train_writes_weights_curves_and_epoch_logs(coco8, tmp_path):
    rows = []
    result = InProcessTrainer().fit(TrainingRecipe(epochs=1, **TINY), coco8, "yolov8n.yaml", tmp_path / "run",
                                    on_epoch=rows.append)
    assert result.best.exists() and len(result.best_sha256) == 64
    assert result.epochs_run == 1 and not result.resumed
    assert rows and rows[0]["epoch"] == 1 and any(k.startswith("train/") for k in rows[0])
    assert "metrics/mAP50(B)" in result.final_metrics


class Interrupt(Exception):
    pass


def test_interrupted_training_resumes_from_its_last_checkpoint(coco8, tmp_path):
    run_dir = tmp_path / "run"
    recipe = TrainingRecipe(epochs=2, **TINY)

    def stop_after_first_epoch(row):
        raise Interrupt(f"simulated crash after epoch {row['epoch']}")

    with pytest.raises(Interrupt):
        train(recipe, coco8, "yolov8n.yaml", run_dir, on_epoch=stop_after_first_epoch)
    assert (run_dir / "weights" / "last.pt").exists() and not (run_dir / "finished").exists()

    result = train(recipe, coco8, "yolov8n.yaml", run_dir)
    assert result.resumed is True
    assert result.epochs_run == 2  # epoch 1 was not repeated: results.csv holds exactly two epochs
    assert (run_dir / "finished").exists()


def test_a_run_resumes_on_a_new_pod_from_the_store(coco8, tmp_path):
    """The pod that trained is lost after epoch 1 (its runs folder and dataset folder are gone); a new pod
    with an empty runs folder, the dataset elsewhere and a training process of its own (Pipes) restores
    the run from the store and resumes it: epoch 1 is not repeated. Finished, the run leaves the store."""
    from pipeline import keys
    from resources.storage import LocalArtifactStore

    store = LocalArtifactStore(root=str(tmp_path / "store"))
    recipe = TrainingRecipe(epochs=2, **TINY)
    lost = InProcessTrainer(runs_dir=str(tmp_path / "pod1" / "runs"))

    def crash_after_first_epoch(row):
        raise Interrupt(f"pod lost after epoch {row['epoch']}")

    with pytest.raises(Interrupt):
        lost.fit(recipe, coco8, "yolov8n.yaml", lost.run_dir("lbzf_test_model"), on_epoch=crash_after_first_epoch,
                 store=store)
    first = lost.run_dir("lbzf_test_model")
    manifest = json.loads(store.read_bytes(keys.train_run_prefix("lbzf_test_model") + "manifest.json"))
    assert set(manifest["files"]) == {"weights/last.pt", "results.csv", "args.yaml"}
    assert manifest["files"]["weights/last.pt"]["sha256"] == (first / "weights" / "last.pt.sha256").read_text().strip()
    shutil.rmtree(tmp_path / "pod1")  # the pod and its disk are gone
    dataset = yaml.safe_load(coco8.read_text())
    shutil.move(dataset["path"], tmp_path / "pod2-coco8")  # the new pod materializes the dataset elsewhere
    data = tmp_path / "pod2.yaml"
    data.write_text(yaml.safe_dump({**dataset, "path": str(tmp_path / "pod2-coco8")}))

    fresh = PipesSubprocessTrainer(runs_dir=str(tmp_path / "pod2" / "runs"))

    @dg.asset
    def resumed_model(context: dg.AssetExecutionContext, trainer: PipesSubprocessTrainer) -> dg.MaterializeResult:
        result = trainer.fit(recipe, data, "yolov8n.yaml", trainer.run_dir("lbzf_test_model"), context=context,
                             store=store)
        return dg.MaterializeResult(metadata={"resumed": result.resumed, "epochs": result.epochs_run})

    result = dg.materialize([resumed_model], resources={"trainer": fresh})
    meta = result.asset_materializations_for_node("resumed_model")[0].metadata
    assert meta["resumed"].value is True
    assert meta["epochs"].value == 2  # epoch 1 came from the store: results.csv holds exactly two epochs
    assert (fresh.run_dir("lbzf_test_model") / "finished").exists()
    assert not list(store.list_keys(keys.TRAIN_RUNS_PREFIX))  # finished: nothing left to resume


def _profile_asset(name: str, recipe: TrainingRecipe, data: Path, run_dir: Path):
    @dg.asset(name=name)
    def profile(context: dg.AssetExecutionContext, trainer: PipesSubprocessTrainer) -> dg.MaterializeResult:
        result = trainer.fit(recipe, data, "yolov8n.yaml", run_dir, context=context)
        return dg.MaterializeResult(metadata={"sha256": result.best_sha256, "epochs": result.epochs_run})

    return profile


def test_pipes_training_isolates_a_failing_profile(coco8, tmp_path):
    good = _profile_asset("profile_plan", TrainingRecipe(epochs=1, **TINY), coco8, tmp_path / "good")
    bad = _profile_asset("profile_broken", TrainingRecipe(epochs=1, optimizer="NoSuchOptimizer", **TINY), coco8,
                         tmp_path / "bad")
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([good, bad], resources={"trainer": PipesSubprocessTrainer()}, instance=instance,
                            raise_on_error=False)
    assert not result.success
    assert result.is_node_success("profile_plan") and result.is_node_failed("profile_broken")
    meta = result.asset_materializations_for_node("profile_plan")[0].metadata
    assert meta["epochs"].value == 1 and len(meta["sha256"].value) == 64
    logs = [e.message for e in instance.all_logs(result.run_id) if e.message]
    assert any("epoch {" in m for m in logs), "per-epoch progress should stream through Pipes"
    failure = [e for e in result.all_events if e.is_step_failure and e.step_key == "profile_broken"]
    error = failure[0].event_specific_data.error if failure else None
    assert error is not None and "NoSuchOptimizer" in error.to_string(), error
