"""Stage A (measure the off-the-shelf detector), Stage B (fine-tune if the gate says so), evaluation."""

import functools
import json
import tempfile
from pathlib import Path

import dagster as dg
import pandas as pd

from assets.common import RecipeConfig, md_table, read_parquet, write_parquet
from assets.footage import read_video_manifest, stage_a_sample
from assets.labels import ANNOTATIONS_KEY, IMAGES_KEY, primary_labels, read_split, split_key, yolo_dataset
from assets.plots import confidence_histogram, paired_plot, recall_by_operation, worst_frames
from pipeline import keys
from pipeline.coco_map import average_precision, precision_recall_at
from pipeline.detection_metrics import breakdown, cluster_bootstrap, per_frame, summary
from pipeline.deployments import inference_settings
from pipeline.detector import detect_persons
from pipeline.gate import GateThresholds, decide
from pipeline.hashing import sha256_bytes, sha256_file
from pipeline.paired import paired_difference
from pipeline.weights import UNTRAINED_WARNING, accept_weights, check_weights, fetch_weights, publish_weights
from pipeline.yolo_dataset import localize_yaml
from resources.base_weights import BaseWeights
from resources.storage import ArtifactStore
from resources.trainer import Trainer

STAGE_A_PREFIX = "reports/stage_a/"
MODEL_VERSION = "v0"
MODEL_NAME = f"yolov8n_lbzf_{MODEL_VERSION}"
MODEL_KEY = f"{keys.model_prefix(MODEL_NAME)}{MODEL_NAME}.pt"


def labelled_set(store: ArtifactStore, frame_keys: set[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Frames (with video, operation, camera) and their main-annotator person boxes."""
    chosen, boxes = primary_labels(read_parquet(store, IMAGES_KEY), read_parquet(store, ANNOTATIONS_KEY))
    if frame_keys is not None:
        chosen = chosen[chosen["frame_key"].isin(frame_keys)]
    frames = chosen[["frame_key"]].merge(_frame_context(store), on="frame_key", how="left")
    return frames, boxes[boxes["frame_key"].isin(set(frames["frame_key"])) & (boxes["class_name"] == "person")]


def _frame_context(store: ArtifactStore) -> pd.DataFrame:
    from assets.common import load_frame_manifests

    frames = load_frame_manifests(store)[["frame_key", "video_id"]].drop_duplicates("frame_key")
    videos = read_video_manifest(store)[["video_id", "operation", "camera"]]
    table = frames.merge(videos, on="video_id", how="left")
    return table.fillna({"operation": "plant photo", "camera": "photo"})


def detect(store: ArtifactStore, weights: str, frames: pd.DataFrame, imgsz: int) -> tuple[pd.DataFrame, dict]:
    """Person boxes on the frames (read from the store ahead of inference) and the pass's record:
    ms per image and, under "backend", which backend/provider produced them with its parity proof."""
    items = [(key, functools.partial(store.read_bytes, key)) for key in frames["frame_key"]]
    return detect_persons(weights, items, imgsz=imgsz, **inference_settings().kwargs())


class StageAConfig(dg.Config):
    min_recall: float = 0.95
    min_median_conf: float = 0.55
    inconclusive_action: str = "fine_tune"
    iou_threshold: float = 0.5
    fp_conf: float = 0.25
    imgsz: int = 640
    n_boot: int = 2000
    seed: int = 0
    include_test_split: bool = True


@dg.asset(deps=[stage_a_sample, yolo_dataset], group_name="models", kinds={"pytorch"})
def stage_a_baseline(context: dg.AssetExecutionContext, config: StageAConfig, store: ArtifactStore,
                     base_weights: BaseWeights) -> dg.MaterializeResult:
    """Off-the-shelf detector on the labelled Stage A sample (+ labelled test frames): per-frame recall
    at IoU 0.5, best-box confidence, false positives, clustered CIs and the gate decision."""
    stage_a = set(read_parquet(store, "frames/stage_a/manifest.parquet")["frame_key"])
    if config.include_test_split:
        split = read_split(store)
        stage_a |= set(split.loc[split["split"] == "test", "frame_key"])
    frames, gt = labelled_set(store, stage_a)
    with tempfile.TemporaryDirectory(prefix="lbzf-weights-") as cache:
        weights = base_weights.resolve(store, Path(cache))
        if weights.sha256:
            accept_weights(store, weights.sha256, source=weights.source, producer="stage_a_baseline")
        preds, speed = detect(store, weights.path, frames, config.imgsz)
    table = per_frame(frames, gt, preds, iou_threshold=config.iou_threshold, fp_conf=config.fp_conf)
    point = summary(table)
    ci = cluster_bootstrap(table, "video_id", n_boot=config.n_boot, seed=config.seed)
    decision = decide(point["recall"], ci["recall_ci"], point["median_best_conf"], ci["median_best_conf_ci"],
                      point["n_frames_with_person"],
                      GateThresholds(config.min_recall, config.min_median_conf, config.inconclusive_action))
    report = {"weights": weights.to_metadata(), "summary": point, "ci": ci, "gate": decision.to_metadata(),
              "speed_ms_per_image": speed, "iou_threshold": config.iou_threshold, "fp_conf": config.fp_conf}
    if weights.untrained:
        report["warning"] = UNTRAINED_WARNING
        context.log.warning(f"STAGE A: {UNTRAINED_WARNING}. {weights.note}")
    report_bytes = json.dumps(report, indent=2, default=float).encode()
    store.write_bytes(f"{STAGE_A_PREFIX}stage_a_report.json", report_bytes)
    write_parquet(store, f"{STAGE_A_PREFIX}per_frame.parquet", table)
    write_parquet(store, f"{STAGE_A_PREFIX}predictions.parquet", preds)
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
        "worst_frames": worst_frames(store, table, gt, preds),
        "report_sha256": sha256_bytes(report_bytes), "report_uri": store.uri(f"{STAGE_A_PREFIX}stage_a_report.json"),
    })


class StageBConfig(RecipeConfig):
    force: bool = False  # train even when the gate says the off-the-shelf model suffices


def _materialize_dataset(store: ArtifactStore, local_root: Path) -> Path:
    """Copy the stored dataset to a fresh local folder and write a yaml with its absolute path."""
    prefix = keys.dataset_prefix(MODEL_VERSION)
    yaml_key = f"{prefix}lbzf_person_{MODEL_VERSION}.yaml"
    for sub in ("images/", "labels/"):
        for info in store.list_keys(prefix + sub):
            store.download_file(info.key, local_root / info.key[len(prefix):])
    local_yaml = local_root / Path(yaml_key).name
    local_yaml.write_text(localize_yaml(store.read_bytes(yaml_key).decode(), local_root))
    return local_yaml


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
    report = json.loads(store.read_bytes(f"{STAGE_A_PREFIX}stage_a_report.json"))
    gate_says = bool(report["gate"]["fine_tune"])
    model_key = MODEL_KEY
    if gate_says or config.force:
        why = "gate: " + report["gate"]["outcome"] if gate_says else "forced by config (gate: " + \
            report["gate"]["outcome"] + ")"
        work = Path(tempfile.mkdtemp(prefix="lbzf-train-"))
        run_dir = _run_dir()
        data_yaml = _materialize_dataset(store, work / "dataset")
        with tempfile.TemporaryDirectory(prefix="lbzf-weights-") as cache:
            weights = base_weights.resolve(store, Path(cache))
            result = trainer.fit(config.recipe(), data_yaml, weights.path, run_dir,
                                 on_epoch=lambda row: context.log.info(f"epoch {row}"), context=context)
        publish_weights(store, result.best, model_key, producer="stage_b", run_id=context.run_id)
        curves = pd.DataFrame(result.curves)
        write_parquet(store, f"{keys.model_prefix(MODEL_NAME)}train_curves.parquet", curves)
        yield dg.MaterializeResult(asset_key="stage_b_model", metadata={
            "why": why, "sha256": result.best_sha256, "uri": store.uri(model_key), "epochs_run": result.epochs_run,
            "resumed": result.resumed, "recipe": dg.MetadataValue.json(config.recipe().train_args()),
            "base_weights": weights.path, "base_untrained": weights.untrained,
            "curves": md_table(curves.round(4)), "final": dg.MetadataValue.json(result.final_metrics)})
        selected = {"model": MODEL_NAME, "key": model_key, "sha256": result.best_sha256, "why": why,
                    "version": MODEL_VERSION, "imgsz": config.imgsz}
    else:
        weights_meta = report["weights"]
        selected = {"model": "off-shelf", "key": None, "path": weights_meta["path"], "sha256": weights_meta["sha256"],
                    "why": "gate: " + report["gate"]["outcome"], "version": "off-shelf", "imgsz": config.imgsz}
        context.log.info("Stage B skipped: the gate says the off-the-shelf detector suffices")
    data = json.dumps(selected, indent=2).encode()
    store.write_bytes("models/selected_model.json", data)
    yield dg.MaterializeResult(asset_key="selected_model", metadata={**{k: v for k, v in selected.items() if v},
                                                                      "pointer_sha256": sha256_bytes(data)})


def _run_dir() -> Path:
    """A stable local training folder per model version, so a re-run resumes an interrupted run."""
    import os

    root = Path(os.environ.get("LBZF_TRAIN_DIR", Path(tempfile.gettempdir()) / "lbzf-train-runs"))
    return root / MODEL_NAME


class EvaluationConfig(dg.Config):
    imgsz: int = 640
    iou_threshold: float = 0.5
    fp_conf: float = 0.25
    n_boot: int = 2000
    seed: int = 0
    conf_sweep: list[float] = [0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7]


@dg.asset(deps=["stage_b_model"], group_name="models", kinds={"json"})
def evaluation(context: dg.AssetExecutionContext, config: EvaluationConfig, store: ArtifactStore) -> dg.MaterializeResult:
    """eval_v0.json: P, R, mAP@0.5, mAP@0.5:0.95 and per-frame measures per split, with a paired
    comparison against the off-the-shelf detector on the same frames."""
    split = read_split(store)
    model_key = MODEL_KEY
    base = json.loads(store.read_bytes(f"{STAGE_A_PREFIX}stage_a_report.json"))["weights"]
    comparison = None
    with tempfile.TemporaryDirectory(prefix="lbzf-eval-") as tmp:
        weights = fetch_weights(store, model_key, Path(tmp) / Path(model_key).name)
        result, tables = {"model": MODEL_NAME, "model_sha256": sha256_file(weights),
                          "split_sha256": sha256_bytes(store.read_bytes(split_key())),
                          "baseline_weights": base, "splits": {}}, []
        for name in ("val", "test", "deployment_test"):
            frames, gt = labelled_set(store, set(split.loc[split["split"] == name, "frame_key"]))
            if frames.empty:
                continue
            preds, speed = detect(store, str(weights), frames, config.imgsz)
            base_preds = _baseline_predictions(store, base, frames, config.imgsz)
            table = per_frame(frames, gt, preds, iou_threshold=config.iou_threshold, fp_conf=config.fp_conf)
            ap = average_precision(gt, preds)
            pr = precision_recall_at(gt, preds, config.fp_conf)
            sweep = [precision_recall_at(gt, preds, c) for c in config.conf_sweep]
            entry = {"n_frames": len(frames), "n_videos": int(frames["video_id"].nunique()),
                     "precision": pr["precision"], "recall": pr["recall"], "map50": ap["ap50"],
                     "map50_95": ap["ap50_95"], "per_frame": summary(table),
                     "ci": cluster_bootstrap(table, n_boot=config.n_boot, seed=config.seed),
                     "per_operation": breakdown(table, "operation").to_dict("records"),
                     "per_class": {"person": {"map50": ap["ap50"], "map50_95": ap["ap50_95"]}},
                     "conf_sweep": sweep, "operating_point": _operating_point(sweep), "speed_ms_per_image": speed}
            if base_preds is not None:
                base_table = per_frame(frames, gt, base_preds, iou_threshold=config.iou_threshold,
                                       fp_conf=config.fp_conf)
                overall = paired_difference(base_table, table, n_boot=config.n_boot, seed=config.seed)
                by_op = paired_difference(base_table, table, by="operation", n_boot=config.n_boot, seed=config.seed)
                entry["baseline"] = {"per_frame": summary(base_table), "map50": average_precision(gt, base_preds)["ap50"],
                                     "untrained": bool(base["untrained"])}
                entry["paired_vs_baseline"] = {"overall": overall.to_dict("records")[0],
                                               "per_operation": by_op.to_dict("records")}
                if name == "test":
                    comparison = by_op
            else:
                entry["baseline"] = {"note": "no baseline predictions for these frames"}
            result["splits"][name] = entry
            tables.append({"split": name, "frames": len(frames), "P": pr["precision"], "R": pr["recall"],
                           "mAP50": ap["ap50"], "mAP50-95": ap["ap50_95"], "frame_recall": entry["per_frame"]["recall"]})
    data = json.dumps(result, indent=2, default=float).encode()
    key = f"{keys.model_prefix(MODEL_NAME)}eval_{MODEL_VERSION}.json"
    store.write_bytes(key, data)
    metadata = {"uri": store.uri(key), "sha256": sha256_bytes(data), "per_split": md_table(pd.DataFrame(tables).round(4))}
    if comparison is not None:
        metadata["test_vs_baseline_by_operation"] = md_table(comparison.round(4))
        metadata["test_recall_difference_by_operation"] = paired_plot(comparison)
        if base["untrained"]:
            metadata["baseline_WARNING"] = UNTRAINED_WARNING
    return dg.MaterializeResult(metadata=metadata)


def _baseline_predictions(store: ArtifactStore, base: dict, frames: pd.DataFrame, imgsz: int) -> pd.DataFrame | None:
    """The off-the-shelf model's predictions on these frames: reuse Stage A's when it scored them
    (the same model, the same frames), else run the base weights if there are any."""
    stored = read_parquet(store, f"{STAGE_A_PREFIX}predictions.parquet")
    scored = set(read_parquet(store, f"{STAGE_A_PREFIX}per_frame.parquet")["frame_key"])
    if set(frames["frame_key"]) <= scored:
        return stored[stored["frame_key"].isin(set(frames["frame_key"]))]
    if base["untrained"]:
        return None
    check_weights(store, Path(base["path"]), recorded_by="Stage A (reports/stage_a/stage_a_report.json)",
                  expected_sha256=base["sha256"])
    return detect(store, base["path"], frames, imgsz)[0]


def _operating_point(sweep: list[dict]) -> dict:
    """The confidence threshold with the best F1 on this split."""
    def f1(row: dict) -> float:
        p, r = row["precision"], row["recall"]
        return 0.0 if not (p == p and r == r) or p + r == 0 else 2 * p * r / (p + r)

    best = max(sweep, key=f1)
    return {**best, "f1": f1(best)}
