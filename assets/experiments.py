"""Experiments beside the main line: several training profiles in one job (failures isolated, one
step each) and the flip ablation the plan asserts without testing."""
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pandas as pd

from assets.common import md_table
from assets.labels import yolo_dataset
from assets.models import detect
from assets.store_io import labelled_set, materialize_dataset, read_split
from assets.views import training_views
from pipeline import keys
from pipeline.coco_map import average_precision
from pipeline.detection_metrics import per_frame, summary
from pipeline.paired import paired_difference
from pipeline.profiles import PROFILES, Profile
from pipeline.training import TrainingRecipe, TrainResult
from pipeline.weights import publish_weights
from resources.base_weights import BaseWeights
from resources.storage import ArtifactStore
from resources.trainer import Trainer


class ProfileRunConfig(dg.Config):
    """Overrides applied on top of the profile's recipe (e.g. fewer epochs for a smoke run)."""

    overrides: dict = {}


def _train(context, store: ArtifactStore, trainer: Trainer, base_weights: BaseWeights, model: str,
           recipe: TrainingRecipe, name: str, work: Path) -> TrainResult:
    data_yaml = materialize_dataset(store, work / "dataset")
    weights = base_weights.resolve(store, work / "weights", model=model)
    if weights.untrained:
        context.log.warning(f"{name}: {weights.note}")
    return trainer.fit(recipe, data_yaml, weights.path, work / "runs" / name,
                       on_epoch=lambda row: context.log.info(f"{name} epoch {row}"), context=context)


def _evaluate(store: ArtifactStore, weights: Path, frames: pd.DataFrame, gt: pd.DataFrame, imgsz: int):
    preds, speed = detect(store, str(weights), frames, imgsz)
    return per_frame(frames, gt, preds), average_precision(gt, preds), speed


def build_profile_asset(name: str, profile: Profile) -> dg.AssetsDefinition:
    @dg.asset(name=f"profile_{name}", deps=[yolo_dataset], group_name="experiments", kinds={"pytorch"},
              pool="gpu", description=f"Training profile '{name}' ({profile.model}): {profile.note}")
    def _asset(context: dg.AssetExecutionContext, config: ProfileRunConfig, store: ArtifactStore, trainer: Trainer,
               base_weights: BaseWeights) -> dg.MaterializeResult:
        recipe = TrainingRecipe(**{**profile.recipe.__dict__, **dict(config.overrides)})
        with tempfile.TemporaryDirectory(prefix=f"lbzf-profile-{name}-") as tmp:
            result = _train(context, store, trainer, base_weights, profile.model, recipe, name, Path(tmp))
            key = keys.profile_weights_key(name)
            publish_weights(store, result.best, key, producer=f"profile_{name}", run_id=context.run_id)
            split = read_split(store)
            frames, gt = labelled_set(store, set(split.loc[split["split"] == "val", "frame_key"]))
            table, ap, speed = _evaluate(store, result.best, frames, gt, recipe.imgsz)
        return dg.MaterializeResult(metadata={
            "model": profile.model, "recipe": dg.MetadataValue.json(recipe.train_args()), "sha256": result.best_sha256,
            "uri": store.uri(key), "epochs_run": result.epochs_run, "val_map50": ap["ap50"],
            "val_map50_95": ap["ap50_95"], "val_frame_recall": summary(table)["recall"],
            "speed_ms_per_image": dg.MetadataValue.json(speed),
            **training_views(store, keys.profile_figure_key(name, "training_curves"), result.curves, f"profile {name}")})

    return _asset


profile_assets = [build_profile_asset(name, profile) for name, profile in PROFILES.items()]



class FlipAblationConfig(dg.Config):
    epochs: int = 50
    imgsz: int = 640
    seed: int = 0
    flip_on: float = 0.5
    n_boot: int = 2000
    extra: dict = {}


@dg.asset(deps=[yolo_dataset], group_name="experiments", kinds={"pytorch"}, pool="gpu")
def flip_ablation(context: dg.AssetExecutionContext, config: FlipAblationConfig, store: ArtifactStore,
                  trainer: Trainer, base_weights: BaseWeights) -> dg.MaterializeResult:
    """The plan turns horizontal flip off without testing it: train flip-off and flip-on with the
    same seed and recipe, and report the paired difference on the same test frames, by video."""
    base = TrainingRecipe(imgsz=config.imgsz, epochs=config.epochs, seed=config.seed, extra=dict(config.extra))
    split = read_split(store)
    frames, gt = labelled_set(store, set(split.loc[split["split"] == "test", "frame_key"]))
    results, tables = {}, {}
    with tempfile.TemporaryDirectory(prefix="lbzf-flip-") as tmp:
        for arm, fliplr in (("flip_off", 0.0), ("flip_on", config.flip_on)):
            trained = _train(context, store, trainer, base_weights, "yolov8n", replace(base, fliplr=fliplr), arm,
                             Path(tmp) / arm)
            table, ap, _ = _evaluate(store, trained.best, frames, gt, config.imgsz)
            tables[arm] = table
            results[arm] = {"fliplr": fliplr, "sha256": trained.best_sha256, "map50": ap["ap50"],
                            "map50_95": ap["ap50_95"], **summary(table)}
    overall = paired_difference(tables["flip_off"], tables["flip_on"], n_boot=config.n_boot, seed=config.seed)
    by_op = paired_difference(tables["flip_off"], tables["flip_on"], by="operation", n_boot=config.n_boot,
                              seed=config.seed)
    report = {"arms": results, "paired_flip_on_minus_off": overall.to_dict("records")[0],
              "per_operation": by_op.to_dict("records"), "seed": config.seed}
    data = json.dumps(report, indent=2, default=float).encode()
    store.write_bytes(keys.FLIP_ABLATION_REPORT, data)
    return dg.MaterializeResult(metadata={"arms": md_table(pd.DataFrame(results).T.reset_index().round(4)),
                                          "paired_difference": md_table(overall.round(4)),
                                          "by_operation": md_table(by_op.round(4)),
                                          "report_uri": store.uri(keys.FLIP_ABLATION_REPORT)})
