"""Stage A (measure the off-the-shelf detector), Stage B (fine-tune if the gate says so), evaluation."""

import functools
import json
import tempfile
from pathlib import Path

import dagster as dg
import pandas as pd
import pydantic

from assets.common import RecipeConfig, md_table
from assets.footage import stage_a_sample
from assets.labels import annotations, dataset_classes, yolo_dataset
from assets.plots import confidence_histogram, confusion_figure, paired_plot, recall_by_operation, worst_frames
from assets.store_io import labelled_set, materialize_dataset, read_parquet, read_split, write_parquet
from assets.views import gap_views, speed_views, split_views, training_views
from pipeline import keys
from pipeline.classes import PERSON, name_detections, of_class, per_class_metrics
from pipeline.coco_map import average_precision, precision_recall_at
from pipeline.confusion import confusion_matrix
from pipeline.detection_metrics import breakdown, cluster_bootstrap, per_frame, summary
from pipeline.detector import detect_persons
from pipeline.errors import PipelineInputError
from pipeline.gate import GateThresholds, check_gate_setting, decide_fine_tuning
from pipeline.train_runs import archive_run
from resources.inference import inference_settings
from pipeline.hashing import sha256_bytes, sha256_file
from pipeline.model_record import OFF_SHELF, ModelRecord
from pipeline.paired import paired_difference
from pipeline.weights import UNTRAINED_WARNING, accept_weights, check_weights, fetch_weights, publish_weights
from resources.base_weights import BaseWeights
from resources.storage import ArtifactStore
from resources.trainer import Trainer

MODEL_VERSION = "v0"
MODEL_KEYS = keys.version_keys(MODEL_VERSION)
MODEL_NAME = MODEL_KEYS.name
MODEL_KEY = MODEL_KEYS.weights


def detect(store: ArtifactStore, weights: str, frames: pd.DataFrame, imgsz: int,
           classes: list[str] | None = None) -> tuple[pd.DataFrame, dict]:
    """Person boxes on the frames (read from the store ahead of inference) and the pass's record:
    ms per image and, under "backend", which backend/provider produced them with its parity proof.
    With `classes` (the model's own class list), every class's boxes, named (class_name)."""
    items = [(key, functools.partial(store.read_bytes, key)) for key in frames["frame_key"]]
    if classes is None:
        return detect_persons(weights, items, imgsz=imgsz, **inference_settings().kwargs())
    preds, speed = detect_persons(weights, items, imgsz=imgsz, person_class=None, **inference_settings().kwargs())
    return name_detections(preds, classes, str(weights)), speed


class StageAConfig(dg.Config):
    min_recall: float = 0.95
    min_median_conf: float = 0.55
    inconclusive_action: str = "fine_tune"  # what an inconclusive (CI straddles a threshold) result does
    gate_rule: str = "ci"  # "ci": three-way on the clustered CIs; "point": the plan's point-estimate rule
    iou_threshold: float = 0.5
    fp_conf: float = 0.25
    imgsz: int = 640
    n_boot: int = 2000
    seed: int = 0
    include_test_split: bool = False  # also score the labelled test split (needs dataset_split)

    @pydantic.field_validator("inconclusive_action")
    @classmethod
    def _known_action(cls, value: str) -> str:
        return check_gate_setting("inconclusive_action", value)

    @pydantic.field_validator("gate_rule")
    @classmethod
    def _known_rule(cls, value: str) -> str:
        return check_gate_setting("rule", value)


@dg.asset(deps=[stage_a_sample, annotations], group_name="models", kinds={"pytorch"})
def stage_a_baseline(context: dg.AssetExecutionContext, config: StageAConfig, store: ArtifactStore,
                     base_weights: BaseWeights) -> dg.MaterializeResult:
    """Off-the-shelf detector on the Stage A sample's own labels (the plan's first labelling wave; no
    split needed): per-frame recall at IoU 0.5, best-box confidence, false positives, clustered CIs
    and the gate decision. With include_test_split, the labelled test split is scored too."""
    stage_a = set(read_parquet(store, keys.STAGE_A_MANIFEST)["frame_key"])
    if config.include_test_split:
        if not store.exists(keys.split_key(MODEL_VERSION)):
            raise PipelineInputError(keys.split_key(MODEL_VERSION), "include_test_split", True,
                                     "materialize dataset_split first (it needs the Stage B labels), or run Stage A "
                                     "on the Stage A sample alone (include_test_split: false)", problem="no split yet")
        split = read_split(store)
        stage_a |= set(split.loc[split["split"] == "test", "frame_key"])
    frames, gt = labelled_set(store, stage_a)
    if frames.empty:
        raise PipelineInputError(keys.STAGE_A_MANIFEST, "frame_key", f"{len(stage_a)} Stage A frames, 0 labelled",
                                 "label the Stage A task package (annotations/packages/stage_a.zip) in CVAT and drop "
                                 f"its export under {keys.INCOMING_ANNOTATIONS}<task>/<annotator>/, then materialize "
                                 "annotations", problem="no labelled Stage A frames")
    with tempfile.TemporaryDirectory(prefix="lbzf-weights-") as cache:
        weights = base_weights.resolve(store, Path(cache))
        if weights.sha256:
            accept_weights(store, weights.sha256, source=weights.source, producer="stage_a_baseline")
        preds, speed = detect(store, weights.path, frames, config.imgsz)
    table = per_frame(frames, gt, preds, iou_threshold=config.iou_threshold, fp_conf=config.fp_conf)
    point = summary(table)
    ci = cluster_bootstrap(table, "video_id", n_boot=config.n_boot, seed=config.seed)
    decision = decide_fine_tuning(point["recall"], ci["recall_ci"], point["median_best_conf"], ci["median_best_conf_ci"],
                      point["n_frames_with_person"],
                      GateThresholds(config.min_recall, config.min_median_conf, config.inconclusive_action,
                                     config.gate_rule))
    cm = confusion_matrix(gt, preds, conf=config.fp_conf, iou_threshold=config.iou_threshold)
    report = {"weights": weights.to_metadata(), "summary": point, "ci": ci, "gate": decision.to_metadata(),
              "confusion_matrix": cm,
              "speed_ms_per_image": speed, "iou_threshold": config.iou_threshold, "fp_conf": config.fp_conf}
    if weights.untrained:
        report["warning"] = UNTRAINED_WARNING
        context.log.warning(f"STAGE A: {UNTRAINED_WARNING}. {weights.note}")
    report_bytes = json.dumps(report, indent=2, default=float).encode()
    store.write_bytes(keys.STAGE_A_REPORT, report_bytes)
    write_parquet(store, keys.STAGE_A_PER_FRAME, table)
    write_parquet(store, keys.STAGE_A_PREDICTIONS, preds)
    by_op = breakdown(table, "operation")
    return dg.MaterializeResult(metadata={
        "WARNING": UNTRAINED_WARNING if weights.untrained else "none: official/allow-listed weights",
        "gate_outcome": decision.outcome, "fine_tune": decision.fine_tune, "gate_reasons": "\n".join(decision.reasons),
        "extra_frames_needed": decision.extra_frames_needed, "recall": point["recall"], "recall_ci95": ci["recall_ci"],
        "median_best_conf": point["median_best_conf"], "median_best_conf_ci95": ci["median_best_conf_ci"],
        "false_positives": point["false_positives"], "n_frames": point["n_frames"], "n_videos": ci["n_clusters"],
        "inference_backend": dg.MetadataValue.json(speed.get("backend", {})),
        "bootstrap_seed": config.seed, "weights": weights.path, "weights_sha256": weights.sha256 or "untrained",
        "official_coco_weights": weights.official_coco, "by_operation": md_table(by_op),
        "by_camera": md_table(breakdown(table, "camera")),
        "confidence_histogram": confidence_histogram(table), "recall_by_operation": recall_by_operation(table),
        "worst_frames": worst_frames(store, table, gt, preds), "confusion_matrix": confusion_figure(cm),
        "report_sha256": sha256_bytes(report_bytes), "report_uri": store.uri(keys.STAGE_A_REPORT),
    })


class StageBConfig(RecipeConfig):
    force: bool = False  # train even when the gate says the off-the-shelf model suffices


@dg.multi_asset(
    outs={
        "stage_b_model": dg.AssetOut(is_required=False, group_name="models", kinds={"pytorch"},
                                     description=f"{MODEL_NAME}.pt: fine-tuned with the plan's recipe, only when "
                                                 "the gate (or config) asks for it."),
        "selected_model": dg.AssetOut(group_name="models", kinds={"pytorch"},
                                      description="The model that goes forward to export: fine-tuned if Stage B ran, "
                                                  "else the off-the-shelf weights."),
    },
    deps=[stage_a_baseline, yolo_dataset],
    can_subset=False,
    pool="gpu",
)
def stage_b(context: dg.AssetExecutionContext, config: StageBConfig, store: ArtifactStore, trainer: Trainer,
            base_weights: BaseWeights):
    report = json.loads(store.read_bytes(keys.STAGE_A_REPORT))
    gate_says = bool(report["gate"]["fine_tune"])
    model_key = MODEL_KEY
    if gate_says or config.force:
        why = "gate: " + report["gate"]["outcome"] if gate_says else "forced by config (gate: " + \
            report["gate"]["outcome"] + ")"
        _lock_split(store, context.run_id)
        work = Path(tempfile.mkdtemp(prefix="lbzf-train-"))
        run_dir = trainer.run_dir(MODEL_NAME)  # stable per model version: a re-run resumes
        data_yaml = materialize_dataset(store, work / "dataset")
        with tempfile.TemporaryDirectory(prefix="lbzf-weights-") as cache:
            weights = base_weights.resolve(store, Path(cache))
            result = trainer.fit(config.recipe(), data_yaml, weights.path, run_dir,
                                 on_epoch=lambda row: context.log.info(f"epoch {row}"), context=context, store=store)
        publish_weights(store, result.best, model_key, producer="stage_b", run_id=context.run_id)
        curves = pd.DataFrame(result.curves)
        write_parquet(store, MODEL_KEYS.train_curves, curves)
        archived = archive_run(store, result.best.parent.parent, MODEL_KEYS.train_run)
        yield dg.MaterializeResult(asset_key="stage_b_model", metadata={
            "why": why, "sha256": result.best_sha256, "uri": store.uri(model_key), "epochs_run": result.epochs_run,
            "fitness": f"{config.recipe().fitness} (picks best.pt, drives early stopping)",
            "train_run": MODEL_KEYS.train_run, "train_run_results": store.uri(MODEL_KEYS.train_run + "results.csv"),
            "train_run_files": len(archived),
            "resumed": result.resumed, "recipe": dg.MetadataValue.json(config.recipe().train_args()),
            "base_weights": weights.path, "base_untrained": weights.untrained,
            "curves": md_table(curves.round(4)), "final": dg.MetadataValue.json(result.final_metrics),
            **training_views(store, MODEL_KEYS.figure("training_curves"), result.curves, MODEL_NAME)})
        selected = ModelRecord(version=MODEL_VERSION, model=MODEL_NAME, weights_key=model_key,
                               weights_sha256=result.best_sha256, imgsz=config.imgsz, why=why).to_selected()
    else:
        weights_meta = report["weights"]
        selected = ModelRecord(version=OFF_SHELF, model=OFF_SHELF, weights_key=weights_meta.get("key"),
                               weights_path=weights_meta["path"],
                               weights_sha256=weights_meta["sha256"], imgsz=config.imgsz,
                               why="gate: " + report["gate"]["outcome"]).to_selected()
        context.log.info("Stage B skipped: the gate says the off-the-shelf detector suffices")
    data = json.dumps(selected, indent=2).encode()
    store.write_bytes(keys.SELECTED_MODEL, data)
    yield dg.MaterializeResult(asset_key="selected_model", metadata={**{k: v for k, v in selected.items() if v},
                                                                      "pointer_sha256": sha256_bytes(data)})


def _lock_split(store: ArtifactStore, run_id: str) -> None:
    """From here on the split is frozen: dataset_split refuses to rewrite it (pipeline/split_revisions.py)."""
    lock_key = keys.dataset_keys(MODEL_VERSION).split_lock
    if store.exists(lock_key):
        return
    from datetime import datetime, timezone

    store.write_bytes(lock_key, json.dumps({
        "split_sha256": sha256_bytes(store.read_bytes(keys.split_key(MODEL_VERSION))), "model": MODEL_NAME,
        "run_id": run_id,
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}, indent=2).encode())


class EvaluationConfig(dg.Config):
    imgsz: int = 640
    iou_threshold: float = 0.5
    fp_conf: float = 0.25
    n_boot: int = 2000
    seed: int = 0
    conf_sweep: list[float] = [0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7]
    speed_images: int = 16  # test frames timed per stage, PyTorch and ONNX (0: skip)


@dg.asset(deps=["stage_b_model"], group_name="models", kinds={"json"})
def evaluation(context: dg.AssetExecutionContext, config: EvaluationConfig, store: ArtifactStore) -> dg.MaterializeResult:
    """eval_v0.json: P, R, mAP@0.5, mAP@0.5:0.95 and per-frame measures per split, with a paired
    comparison against the off-the-shelf detector on the same frames."""
    split = read_split(store)
    model_key = MODEL_KEY
    base = json.loads(store.read_bytes(keys.STAGE_A_REPORT))["weights"]
    classes = dataset_classes(store, MODEL_VERSION)  # the model's own output classes, person first
    comparison, views, view_meta = None, {}, {}
    with tempfile.TemporaryDirectory(prefix="lbzf-eval-") as tmp:
        weights = fetch_weights(store, model_key, Path(tmp) / Path(model_key).name)
        class_rows: list[dict] = []
        result, tables = {"model": MODEL_NAME, "model_sha256": sha256_file(weights),
                          "split_sha256": sha256_bytes(store.read_bytes(keys.BASE_SPLIT)),
                          "baseline_weights": base, "classes": classes, "splits": {}}, []
        for name in ("val", "test", "deployment_test"):
            frames, gt_all = labelled_set(store, set(split.loc[split["split"] == name, "frame_key"]), classes)
            if frames.empty:
                continue
            preds_all, speed = detect(store, str(weights), frames, config.imgsz, classes)
            # the headline measures, the per-frame table and the comparisons are person's (the gate's class);
            # per_class and the confusion matrix cover every class
            gt, preds = of_class(gt_all, PERSON), of_class(preds_all, PERSON)
            base_preds, base_frames = _baseline_predictions(store, base, frames, config.imgsz)
            table = per_frame(frames, gt, preds, iou_threshold=config.iou_threshold, fp_conf=config.fp_conf)
            ap = average_precision(gt, preds)
            pr = precision_recall_at(gt, preds, config.fp_conf)
            sweep = [precision_recall_at(gt, preds, c) for c in config.conf_sweep]
            entry = {"n_frames": len(frames), "n_videos": int(frames["video_id"].nunique()),
                     "precision": pr["precision"], "recall": pr["recall"], "map50": ap["ap50"],
                     "map50_95": ap["ap50_95"], "per_frame": summary(table),
                     "ci": cluster_bootstrap(table, n_boot=config.n_boot, seed=config.seed),
                     "per_operation": breakdown(table, "operation").to_dict("records"),
                     "per_class": per_class_metrics(gt_all, preds_all, classes, config.fp_conf),
                     "conf_sweep": sweep, "operating_point": _operating_point(sweep), "speed_ms_per_image": speed}
            extra, meta, flags = split_views(store, MODEL_KEYS, name, gt_all, preds_all, sweep=sweep,
                                             point=entry["operating_point"], conf=config.fp_conf,
                                             iou_threshold=config.iou_threshold, classes=classes)
            entry.update(extra)
            view_meta.update(meta)
            views[name] = (table, flags)
            if base_preds is not None:
                covered = set(base_frames["frame_key"])
                base_gt = gt[gt["frame_key"].isin(covered)]
                base_table = per_frame(base_frames, base_gt, base_preds, iou_threshold=config.iou_threshold,
                                       fp_conf=config.fp_conf)
                ours = table[table["frame_key"].isin(covered)]
                overall = paired_difference(base_table, ours, n_boot=config.n_boot, seed=config.seed)
                by_op = paired_difference(base_table, ours, by="operation", n_boot=config.n_boot, seed=config.seed)
                entry["baseline"] = {"per_frame": summary(base_table),
                                     "map50": average_precision(base_gt, base_preds)["ap50"],
                                     "untrained": bool(base["untrained"]), "frames_compared": len(covered),
                                     "frames_in_split": len(frames)}
                entry["paired_vs_baseline"] = {"overall": overall.to_dict("records")[0],
                                               "per_operation": by_op.to_dict("records")}
                if name == "test":
                    comparison = by_op
            else:
                entry["baseline"] = {"note": "no baseline predictions for these frames"}
            result["splits"][name] = entry
            if config.speed_images and name == "test":
                result["speed_per_stage"], meta = speed_views(
                    store, weights, frames["frame_key"].tolist()[:config.speed_images], imgsz=config.imgsz, folder=tmp)
                result["speed_per_stage"]["split"] = name
                view_meta.update(meta)
            tables.append({"split": name, "frames": len(frames), "P": pr["precision"], "R": pr["recall"],
                           "mAP50": ap["ap50"], "mAP50-95": ap["ap50_95"], "frame_recall": entry["per_frame"]["recall"]})
            class_rows.extend({"split": name, "class": c, **m} for c, m in entry["per_class"].items())
    if "test" in views and "deployment_test" in views:
        result["domain_shift"], meta = gap_views(views["test"], views["deployment_test"], n_boot=config.n_boot,
                                                 seed=config.seed)
        view_meta.update(meta)
    data = json.dumps(result, indent=2, default=float).encode()
    key = MODEL_KEYS.report("eval")
    store.write_bytes(key, data)
    metadata = {"uri": store.uri(key), "sha256": sha256_bytes(data), "per_split": md_table(pd.DataFrame(tables).round(4)),
                "classes": ", ".join(classes), "per_class": md_table(pd.DataFrame(class_rows).round(4))}
    if comparison is not None:
        metadata["test_vs_baseline_by_operation"] = md_table(comparison.round(4))
        metadata["test_recall_difference_by_operation"] = paired_plot(comparison)
        if base["untrained"]:
            metadata["baseline_WARNING"] = UNTRAINED_WARNING
    return dg.MaterializeResult(metadata={**metadata, **view_meta})


def _baseline_predictions(store: ArtifactStore, base: dict, frames: pd.DataFrame,
                          imgsz: int) -> tuple[pd.DataFrame | None, pd.DataFrame]:
    """The off-the-shelf model's predictions on these frames and the frames they cover. Stage A's are
    reused where it scored every frame (the same model, the same frames: the Stage A sample's frames
    join the split by their video); otherwise the base weights Stage A used are run again (checked
    against its recorded sha256). Weights that cannot be loaded again (an untrained architecture that
    was not kept) leave the comparison to Stage A's frames, and `frames_compared` says how many."""
    stored = read_parquet(store, keys.STAGE_A_PREDICTIONS)
    scored = set(read_parquet(store, keys.STAGE_A_PER_FRAME)["frame_key"])
    if set(frames["frame_key"]) <= scored:
        return stored[stored["frame_key"].isin(set(frames["frame_key"]))], frames
    with tempfile.TemporaryDirectory(prefix="lbzf-base-") as tmp:
        weights = base_weights_file(store, base, Path(tmp))
        if weights is None:
            covered = frames[frames["frame_key"].isin(scored)]
            return (stored[stored["frame_key"].isin(set(covered["frame_key"]))] if len(covered) else None), covered
        return detect(store, str(weights), frames, imgsz)[0], frames


def base_weights_file(store: ArtifactStore, base: dict, folder: Path) -> Path | None:
    """A checked local copy of the base weights Stage A recorded (its report's `weights`), or None
    when they cannot be loaded again."""
    recorded_by = f"Stage A ({keys.STAGE_A_REPORT})"
    if base.get("key"):
        return fetch_weights(store, base["key"], folder / Path(base["key"]).name, expected_sha256=base["sha256"],
                             recorded_by=recorded_by)
    if base.get("sha256") and Path(base["path"]).is_file():
        check_weights(store, Path(base["path"]), recorded_by=recorded_by, expected_sha256=base["sha256"])
        return Path(base["path"])
    return None


def _operating_point(sweep: list[dict]) -> dict:
    """The confidence threshold with the best F1 on this split."""
    def f1(row: dict) -> float:
        p, r = row["precision"], row["recall"]
        return 0.0 if not (p == p and r == r) or p + r == 0 else 2 * p * r / (p + r)

    best = max(sweep, key=f1)
    return {**best, "f1": f1(best)}
