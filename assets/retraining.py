"""Stage C: the monthly cycle from hard examples to a promoted (or refused) model, and the way back.

    hard_examples -> hard_example_labels -> candidate_model -> candidate_comparison -> shadow_report
                  -> production_model (the promotion gate) -> production_pointer (show / rollback)

`hard_example_labels` waits for the month's CVAT export: until it has been imported it produces no
output (so the rest of the run is skipped) and says what it is waiting for. The
`hard_example_labels_sensor` resumes the month once the import has happened. All versions, files
and reports carry the candidate's version (v0.1, v0.2, ...); see docs/retraining.md.
"""

import json
import tempfile
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pandas as pd

from assets.buffer import buffer_footage
from assets.candidate_engine import candidate_onnx, deploy_candidate_to_shadow, deploy_production_engine, with_engine
from assets.common import RecipeConfig, config_from, extract_to_store, md_table, to_settings, write_package
from assets.labels import ANNOTATIONS_KEY, IMAGES_KEY, read_classes
from assets.models import detect
from orchestration.partitions import monthly_partitions
from assets.plots import confusion_figure
from assets.shadow_replay import ShadowRunConfig, replay_shadow_run, thin
from assets.store_io import (load_frame_manifests, read_json, read_parquet, read_primary_labels, read_split,
                             write_json, write_parquet)
from pipeline import keys, registry
from pipeline.coco_map import average_precision
from pipeline.confusion import confusion_matrix
from pipeline.detection_metrics import per_frame, summary
from pipeline.errors import BadFootageError
from pipeline.explanations import explain
from pipeline.frames import probe_video
from pipeline.hard_examples import HardExampleSampling, attach_clips, clip_table, sample
from pipeline.train_runs import archive_run
from pipeline.hashing import sha256_bytes, sha256_file
from pipeline.labels import primary_labels
from pipeline.paired import paired_difference
from pipeline.retraining import (LABEL_TABLE_COLUMNS, all_hard_labels, candidate_split, candidate_weights,
                                 comparison_frames, hard_label_keys, held_out_buffer_frames, month_candidate,
                                 month_parent, task_name)
from pipeline.quarantine import quarantine_bad_footage
from pipeline.promotion import SUBSET_NAMES, PromotionThresholds, decide_promotion
from pipeline.shadow import SIMULATED_FILE, check_simulation_allowed, load_logs, \
    shadow_report as make_shadow_report, shadow_words, simulated_warning
from resources.shadow_policy import ShadowPolicy
from pipeline.split import split_csv
from pipeline.model_record import ModelRecord
from pipeline.versioning import (HELD_OUT, TRAIN, assign_hard_examples, candidate_identity, check_training_set,
                                 dataset_name, model_name)
from pipeline.weights import publish_weights
from pipeline.yolo_dataset import dataset_yaml, write_yolo_dataset
from resources.engine import EngineBuilder
from resources.storage import ArtifactStore
from resources.trainer import Trainer

RETRAINING_PREFIX = keys.RETRAINING_PREFIX


def _month(context) -> str:
    return context.partition_key[:7]


def labels_key(month: str) -> str:
    return keys.month_keys(month).hard_labels


def candidate_pointer_key(month: str) -> str:
    return keys.month_keys(month).candidate_pointer


def _run_id(context) -> str:
    """The run that started this work (a retry of a crashed run keeps its root's id)."""
    return context.run.root_run_id or context.run_id


# --------------------------------------------------------------------------- hard_examples


class HardExamplesConfig(config_from(HardExampleSampling)):
    """How many flagged frames to sample, with which seed and spacing (pipeline.hard_examples)."""


@dg.asset(partitions_def=monthly_partitions, deps=[buffer_footage], group_name="retraining", kinds={"cvat"})
def hard_examples(context: dg.AssetExecutionContext, config: HardExamplesConfig,
                  store: ArtifactStore) -> dg.MaterializeResult:
    """200 frames of the month that production flagged red/yellow, extracted exactly and packaged
    as a CVAT task; the sample and its seed are recorded."""
    window = context.partition_time_window
    days = pd.date_range(window.start.date(), window.end.date(), freq="D", inclusive="left").strftime("%Y-%m-%d")
    logs = [read_parquet(store, keys.quality_log_key(d)) for d in days if store.exists(keys.quality_log_key(d))]
    month = context.partition_key[:7]
    if not logs:
        context.log.warning(f"no quality logs for {month}")
        return dg.MaterializeResult(metadata={"month": month, "taken": 0, "note": "no quality logs for the month"})
    clips = clip_table([i.key for i in store.list_keys(keys.BUFFER_PREFIX)
                        if any(f"/{d}/" in i.key for d in days)])
    durations, bad = [], []
    for key in clips["key"]:
        try:  # one unreadable clip is quarantined and left out; it does not hold up the month
            with quarantine_bad_footage(store, key), store.local_copy(key) as local:
                durations.append(probe_video(local).usable_duration_s)
        except BadFootageError as exc:
            bad.append(key)
            durations.append(float("nan"))
            context.log.warning(f"left out of {context.partition_key[:7]}'s hard examples: {exc}")
    clips = clips.assign(duration_s=durations)
    clips = clips[~clips["key"].isin(bad)]
    flags = attach_clips(pd.concat(logs, ignore_index=True), clips)
    chosen, info = sample(flags, to_settings(HardExampleSampling, config))
    where = keys.month_keys(month)
    tables = []
    for clip, rows in chosen.groupby("clip_key"):
        camera, day, name = keys.buffer_clip_parts(clip)
        tables.append(extract_to_store(store, clip, rows["offset_s"].tolist(), source="hard",
                                       video_id=f"{camera}_{day}_{name.rsplit('.', 1)[0]}",
                                       frame_prefix=keys.hard_frames_prefix(month, camera, day, name.rsplit('.', 1)[0])))
    frames = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    if len(frames):
        write_parquet(store, keys.hard_frames_manifest_key(month), frames)
    write_parquet(store, where.hard_examples, chosen)
    package = write_package(store, frames["frame_key"].tolist() if len(frames) else [], task_name(month),
                            where.task_package)
    store.write_bytes(where.sample, json.dumps({**info, "month": month}, indent=2).encode())
    per_camera_day = chosen.groupby(["camera", "day"]).size().rename("frames").reset_index() if len(chosen) else \
        pd.DataFrame()
    return dg.MaterializeResult(metadata={
        "month": month, **{k: v for k, v in info.items()}, "frames_extracted": len(frames),
        "quarantined_clips": len(bad), "quarantined": "\n".join(bad) or "none",
        "package_sha256": package.get("zip_sha256", ""), "package_uri": store.uri(where.task_package),
        "per_camera_day": md_table(per_camera_day)})


# --------------------------------------------------------------------------- hard_example_labels


class HardLabelsConfig(dg.Config):
    min_labelled_fraction: float = 0.95  # of the frames sent to CVAT
    holdout_fraction: float = 0.2  # camera-days held out for evaluation (a stable hash of camera and day)
    seed: int = 0


def _waiting(context, month: str, message: str, **extra) -> None:
    context.log.warning(message)
    context.log_event(dg.AssetObservation(asset_key=context.asset_key, partition=context.partition_key,
                                          metadata={"status": "waiting", "waiting_for": message, "month": month,
                                                    "task": task_name(month), **extra}))


@dg.asset(partitions_def=monthly_partitions, deps=[hard_examples, "annotations"], group_name="retraining",
          kinds={"cvat", "parquet"}, output_required=False)
def hard_example_labels(context: dg.AssetExecutionContext, config: HardLabelsConfig, store: ArtifactStore):
    """The month's hard examples with their imported CVAT labels, each assigned to train or held out
    by camera-day. Waits (no output: the rest of the cycle is skipped) until the export of task
    hard_examples_<YYYY-MM> has been imported."""
    month = _month(context)
    task = task_name(month)
    manifest_key = keys.hard_frames_manifest_key(month)
    if not store.exists(manifest_key):
        _waiting(context, month, f"nothing to label for {month}: hard_examples sent no frames (see its metadata)")
        return
    sent = read_parquet(store, manifest_key)
    images = read_parquet(store, IMAGES_KEY) if store.exists(IMAGES_KEY) else pd.DataFrame(columns=["task"])
    imported = images[images["task"] == task] if len(images) else images
    if imported.empty:
        landed = [i.key for i in store.list_keys(f"{keys.INCOMING_ANNOTATIONS}{task}/")]
        if landed:
            _waiting(context, month, f"waiting for labels of task {task}: the export {landed[-1]} has landed but is "
                                     "not imported yet (the annotation_exports_sensor requests annotations_job; then "
                                     "hard_example_labels_sensor resumes this month)", exports=len(landed))
        else:
            _waiting(context, month, f"waiting for labels of task {task}: {len(sent)} frames were sent "
                                     f"({store.uri(keys.month_keys(month).task_package)}); the CVAT "
                                     f"export is expected at {keys.INCOMING_ANNOTATIONS}{task}/<annotator>/",
                     frames_sent=len(sent))
        return
    chosen, boxes = primary_labels(imported, read_parquet(store, ANNOTATIONS_KEY))
    labelled = chosen[chosen["frame_key"].isin(set(sent["frame_key"]))]
    fraction = len(labelled) / max(len(sent), 1)
    if fraction < config.min_labelled_fraction:
        _waiting(context, month, f"waiting for labels of task {task}: {len(labelled)} of {len(sent)} frames labelled "
                                 f"({fraction:.0%} < {config.min_labelled_fraction:.0%}); finish the task in CVAT and "
                                 "export it again", labelled=len(labelled), frames_sent=len(sent))
        return
    counts = boxes[boxes["class_name"] == "person"].groupby("frame_key").size()
    frames = labelled[["frame_key", "width", "height", "annotator"]].merge(
        sent[["frame_key", "video_id"]].drop_duplicates("frame_key"), on="frame_key")
    table = assign_hard_examples(frames, read_split(store), holdout_fraction=config.holdout_fraction, seed=config.seed)
    table["n_boxes"] = table["frame_key"].map(counts).fillna(0).astype(int)
    table["month"] = month
    table = table[LABEL_TABLE_COLUMNS].sort_values("frame_key").reset_index(drop=True)
    digest = write_parquet(store, labels_key(month), table)
    per_group = table.groupby(["camera", "day", "split", "reason"]).agg(frames=("frame_key", "size"),
                                                                        persons=("n_boxes", "sum")).reset_index()
    yield dg.MaterializeResult(metadata={
        "status": "labelled", "month": month, "task": task, "frames_sent": len(sent), "frames_labelled": len(table),
        "train": int((table["split"] == TRAIN).sum()), "held_out": int((table["split"] == HELD_OUT).sum()),
        "persons": int(table["n_boxes"].sum()), "negatives": int((table["n_boxes"] == 0).sum()),
        "per_camera_day": md_table(per_group), "sha256": digest, "uri": store.uri(labels_key(month))})


# --------------------------------------------------------------------------- candidate_model


class CandidateConfig(RecipeConfig):
    """The production recipe (the plan's, by default)."""


def _hard_labels(store: ArtifactStore, up_to_month: str) -> pd.DataFrame:
    """Every month's labelled hard examples up to and including `up_to_month`."""
    found = hard_label_keys((i.key for i in store.list_keys(RETRAINING_PREFIX)), up_to_month)
    return all_hard_labels([read_parquet(store, key) for key in found])


@dg.asset(partitions_def=monthly_partitions, deps=[hard_example_labels], group_name="retraining",
          kinds={"pytorch"}, pool="gpu")
def candidate_model(context: dg.AssetExecutionContext, config: CandidateConfig, store: ArtifactStore,
                    trainer: Trainer) -> dg.MaterializeResult:
    """The month's candidate (v0.1, v0.2, ...): fine-tuned from the production weights on the previous
    training set plus every labelled hard example so far. The frozen test split and the deployment
    test set are never trained on (checked here, the run fails if they are)."""
    month = _month(context)
    production = month_parent(store, month)
    if production is None:
        raise registry.RegistryError(registry.PRODUCTION_KEY, "production", None,
                                     "run training_job first: Stage B selects the first production model",
                                     problem="no production model")
    base = read_split(store)
    hard = _hard_labels(store, month)
    table = candidate_split(base, hard)
    train = table[table["split"] == TRAIN]
    val = table[table["split"] == "val"]
    check_training_set(train, base, version=f"for {month}", role="training")
    check_training_set(val, base, version=f"for {month}", role="validation")
    split_bytes, split_sha = split_csv(table)
    recipe = config.recipe()
    chosen, boxes = read_primary_labels(store)
    rows = pd.concat([train, val]).merge(chosen[["frame_key", "width", "height"]], on="frame_key", how="inner")
    missing = sorted(set(train["frame_key"]) - set(rows["frame_key"]))
    if missing:
        raise registry.RegistryError(f"candidate for {month}", "frame_key", missing[:3],
                                     "re-import the annotations (annotations_job)",
                                     problem=f"{len(missing)} training frames have no labels")
    with tempfile.TemporaryDirectory(prefix="lbzf-candidate-") as tmp:
        parent = registry.fetch_entry_weights(store, production, Path(tmp))
        parent_sha = sha256_file(parent)
        classes = read_classes(store)  # every class the labels were mapped to, person first
        identity = candidate_identity(month=month, parent_sha256=parent_sha, split_sha256=split_sha,
                                      recipe=recipe.train_args(), classes=classes)
        version, reused_version = registry.reserve_version(store, identity=identity, month=month)
        name = model_name(version)
        store.write_if_absent_or_same(keys.split_key(version), split_bytes)
        card_key = keys.version_keys(version).model_card
        trained = False
        if store.exists(card_key) and read_json(store, card_key)["identity"] == identity and \
                store.exists(keys.weights_key(version)):
            card = read_json(store, card_key)
            context.log.info(f"{version} was already trained from these inputs: reusing it")
        else:
            root = Path(tmp) / "dataset"
            local = []
            for key in rows["frame_key"]:
                local.append(Path(tmp) / "src" / keys.package_file_name(key))
                store.download_file(key, local[-1])
            class_boxes = boxes[boxes["frame_key"].isin(set(rows["frame_key"])) & boxes["class_name"].isin(classes)]
            counts = write_yolo_dataset(root, rows.assign(local_path=[str(p) for p in local]), class_boxes,
                                        classes, version=version, split_sha256=split_sha)
            data_yaml = root / f"{dataset_name(version)}.yaml"
            data_yaml.write_text(dataset_yaml(str(root.resolve()), classes, version=version,
                                              split_sha256=split_sha, splits=sorted(counts)))
            store.write_bytes(keys.dataset_keys(version).yaml,
                              dataset_yaml(keys.dataset_keys(version).folder.rstrip("/"), classes, version=version,
                                           split_sha256=split_sha, splits=sorted(counts)).encode())
            write_parquet(store, keys.dataset_keys(version).labels, class_boxes)
            # one folder per candidate identity: a re-run of the same candidate resumes, another one never does
            result = trainer.fit(recipe, data_yaml, str(parent), trainer.run_dir(f"{name}-{identity[:12]}"),
                                 on_epoch=lambda row: context.log.info(f"{version} epoch {row}"), context=context,
                                 store=store)
            archive_run(store, result.best.parent.parent, keys.version_keys(version).train_run)
            publish_weights(store, result.best, keys.weights_key(version), producer="candidate_model",
                            run_id=context.run_id)
            now = datetime.now(timezone.utc).isoformat(timespec="seconds")
            card = {**ModelRecord(version=version, model=name, weights_key=keys.weights_key(version),
                                  weights_sha256=result.best_sha256, imgsz=recipe.imgsz,
                                  model_created_at=now).entry_fields(),
                    "month": month, "identity": identity,
                    "parent_version": production.get("version"), "parent_weights_sha256": parent_sha,
                    "dataset_version": version, "split_key": keys.split_key(version), "split_sha256": split_sha,
                    "recipe": recipe.train_args(), "trained_at": now,
                    "run_id": context.run_id, "epochs_run": result.epochs_run, "resumed": result.resumed,
                    "final_metrics": result.final_metrics, "dataset_counts": counts,
                    "train_frames": {"v0": int((~train["frame_key"].str.startswith(keys.HARD_FRAMES_PREFIX)).sum()),
                                     "hard_examples": int(train["frame_key"].str.startswith(keys.HARD_FRAMES_PREFIX).sum())},
                    "hard_example_months": sorted(hard["month"].unique().tolist()) if len(hard) else []}
            write_json(store, card_key, card)
            write_parquet(store, keys.version_keys(version).train_curves, pd.DataFrame(result.curves))
            trained = True
        onnx = candidate_onnx(store, card, Path(tmp), rows["frame_key"].head(8).tolist())
    write_json(store, candidate_pointer_key(month), {"version": version, "identity": identity})
    per_split = table.assign(source=table["frame_key"].str.startswith(keys.HARD_FRAMES_PREFIX).map(
        {True: "hard examples", False: "v0"})).groupby(["split", "source"]).size().rename("frames").reset_index()
    return dg.MaterializeResult(metadata={
        "version": version, "model": name, "parent_version": str(card["parent_version"]),
        "trained": trained, "reused_version": reused_version, "weights_sha256": card["weights_sha256"],
        "uri": store.uri(keys.weights_key(version)), "dataset_version": dataset_name(version), "split_sha256": split_sha,
        "split_uri": store.uri(keys.split_key(version)), "per_split": md_table(per_split),
        "hard_examples_trained": int(card["train_frames"]["hard_examples"]),
        "onnx_uri": store.uri(keys.version_keys(version).onnx), "onnx_parity": dg.MetadataValue.json(onnx["parity"]),
        "recipe": dg.MetadataValue.json(card["recipe"]), "protected_splits": "test, deployment_test: never trained on "
        "(checked)", "final": dg.MetadataValue.json(card.get("final_metrics") or {}),
        **_training_views(store, version)})


def _training_views(store: ArtifactStore, version: str) -> dict:
    """The candidate's per-epoch figure, from the curves stored when it was trained."""
    from assets.views import training_views

    key = keys.version_keys(version).train_curves
    curves = read_parquet(store, key) if store.exists(key) else pd.DataFrame()
    return training_views(store, keys.version_keys(version).figure("training_curves"), curves, version)


# --------------------------------------------------------------------------- candidate_comparison


class ComparisonConfig(dg.Config):
    imgsz: int = 0  # 0: each model at the image size it is deployed with
    iou_threshold: float = 0.5
    fp_conf: float = 0.25
    n_boot: int = 2000
    seed: int = 0


@dg.asset(partitions_def=monthly_partitions, deps=[candidate_model], group_name="retraining", kinds={"json"})
def candidate_comparison(context: dg.AssetExecutionContext, config: ComparisonConfig,
                         store: ArtifactStore) -> dg.MaterializeResult:
    """Candidate vs production on the same frames: the frozen test split, the deployment test set and
    the month's labelled hard examples (held out; trained-on ones shown, not gated). Paired bootstrap
    by video of the recall and best-confidence differences (candidate - production)."""
    month = _month(context)
    card = month_candidate(store, month)
    production = month_parent(store, month)
    month_hard = read_parquet(store, labels_key(month)) if store.exists(labels_key(month)) else None
    chosen, boxes = read_primary_labels(store)
    frames, gt = comparison_frames(read_split(store), month_hard, chosen, boxes)
    preds, inference = {}, {}
    with tempfile.TemporaryDirectory(prefix="lbzf-compare-") as tmp:
        prod_weights = registry.fetch_entry_weights(store, production, Path(tmp))
        cand_weights = candidate_weights(store, card, Path(tmp) / "candidate.pt")
        for role, weights, own in (("production", prod_weights, production.get("imgsz") or 640),
                                   ("candidate", cand_weights, card["imgsz"])):
            preds[role], timing = detect(store, str(weights), frames, config.imgsz or int(own))
            inference[role] = timing.get("backend", {})
    subsets, rows, figures = {}, [], {}
    for subset, group in frames.groupby("subset", sort=False):
        context_cols = group[["frame_key", "video_id", "operation", "camera"]]
        subset_gt = gt[gt["frame_key"].isin(set(group["frame_key"]))]
        tables = {role: per_frame(context_cols, subset_gt, p[p["frame_key"].isin(set(group["frame_key"]))],
                                  iou_threshold=config.iou_threshold, fp_conf=config.fp_conf)
                  for role, p in preds.items()}
        if int((tables["production"]["n_gt"] > 0).sum()) == 0:
            continue
        paired = paired_difference(tables["production"], tables["candidate"], n_boot=config.n_boot,
                                   seed=config.seed).to_dict("records")[0]
        ap = {role: average_precision(subset_gt, preds[role][preds[role]["frame_key"].isin(set(group["frame_key"]))])
              for role in preds}
        entry = {**{k: v for k, v in paired.items() if k != "subset"}, "map50_a": ap["production"]["ap50"],
                 "map50_b": ap["candidate"]["ap50"], "gated": subset != "hard_trained",
                 "production": summary(tables["production"]), "candidate": summary(tables["candidate"]),
                 "confusion_matrix": {role: confusion_matrix(subset_gt, p[p["frame_key"].isin(set(group["frame_key"]))],
                                                             conf=config.fp_conf, iou_threshold=config.iou_threshold)
                                      for role, p in preds.items()}}
        if subset == "test":
            figures.update({f"confusion_matrix_test_{role}": confusion_figure(cm, f"{role}, test split")
                            for role, cm in entry["confusion_matrix"].items()})
        subsets[subset] = entry
        ci = entry["recall_diff_ci"]
        rows.append({"subset": SUBSET_NAMES.get(subset, subset), "frames": entry["frames"], "videos": entry["videos"],
                     "recall prod": entry["recall_a"], "recall cand": entry["recall_b"],
                     "Δ recall": entry["recall_diff"], "Δ recall 95% CI": f"[{ci[0]:.3f}, {ci[1]:.3f}]",
                     "median conf prod": entry["median_conf_a"], "median conf cand": entry["median_conf_b"],
                     "Δ median conf": entry["median_conf_diff"], "mAP50 prod": entry["map50_a"],
                     "mAP50 cand": entry["map50_b"], "gated": "yes" if entry["gated"] else "no (trained on)"})
    report = {"month": month, "candidate_version": card["version"], "production_version": production.get("version"),
              "candidate_weights_sha256": card["weights_sha256"], "production_weights_sha256":
              production.get("weights_sha256"), "subsets": subsets, "n_boot": config.n_boot, "seed": config.seed,
              "iou_threshold": config.iou_threshold, "cluster": "video_id", "inference": inference}
    key = keys.version_keys(card["version"]).report("comparison")
    digest = write_json(store, key, report)
    table = pd.DataFrame(rows)
    return dg.MaterializeResult(metadata={
        "candidate": card["version"], "production": str(production.get("version")),
        "comparison": md_table(table.round(3) if len(table) else table),
        "note": "a = production, b = candidate; Δ = candidate - production; CIs resample whole videos "
                "(clips for hard examples); trained-on hard examples are in-sample and not gated",
        "about": explain("comparison"), **figures,
        "uri": store.uri(key), "sha256": digest})


# --------------------------------------------------------------------------- shadow_report


class ShadowConfig(ShadowRunConfig):
    exclude_within_s: float = 20.0  # a buffer frame this close to a trained hard example is not held out


@dg.asset(partitions_def=monthly_partitions, deps=[candidate_comparison], group_name="retraining", kinds={"json"})
def shadow_report(context: dg.AssetExecutionContext, config: ShadowConfig, store: ArtifactStore,
                  engine_builder: EngineBuilder, shadow_policy: ShadowPolicy) -> dg.MaterializeResult:
    """The candidate beside production on the same frames: per-camera agreement, detection-rate and
    confidence differences, latency, and the period covered. Reads the logs the Jetson uploads under
    shadow/<version>/logs/; with simulate: true, replays held-out buffer frames through both models
    to write those logs first."""
    month = _month(context)
    card = month_candidate(store, month)
    production = month_parent(store, month)
    version = card["version"]
    prefix = keys.shadow_logs_prefix(version)
    check_simulation_allowed(config.simulate, shadow_policy.allow_simulated, "shadow_report")
    deployment = deploy_candidate_to_shadow(context, store, engine_builder, card)
    files = [i.key for i in store.list_keys(prefix) if i.key.endswith((".parquet", ".jsonl", ".json"))]
    device_files = [k for k in files if not k.endswith(SIMULATED_FILE)]
    simulated = {}
    if config.simulate and device_files:
        context.log.warning(f"{len(device_files)} device log file(s) under {prefix}: not simulating")
    elif config.simulate:
        frames = held_out_buffer_frames(load_frame_manifests(store, keys.BUFFER_FRAMES_PREFIX),
                                        _hard_labels(store, month), load_frame_manifests(store, keys.HARD_FRAMES_PREFIX),
                                        month, config.exclude_within_s)

        def models(folder: Path) -> dict[str, tuple[str, int]]:
            prod_weights = registry.fetch_entry_weights(store, production, folder)
            cand_weights = candidate_weights(store, card, folder / "candidate.pt")
            return {version: (str(cand_weights), int(card["imgsz"])),
                    str(production["version"]): (str(prod_weights), int(production.get("imgsz") or 640))}

        with tempfile.TemporaryDirectory(prefix="lbzf-shadow-") as tmp:
            simulated = replay_shadow_run(store, prefix, thin(frames, config.max_frames), Path(tmp), models,
                                          period_h=config.simulated_period_h, conf=config.conf)
    logs, files, source = load_logs(lambda p: (i.key for i in store.list_keys(p)), store.read_bytes, prefix)
    report = make_shadow_report(logs, candidate=version, production=str(production["version"]), conf=config.conf,
                                iou_threshold=config.iou_threshold) if len(logs) else {
        "candidate_version": version, "production_version": production["version"], "rows_candidate": 0,
        "rows_production": 0, "paired_frames": 0, "period_h": 0.0, "per_camera": [], "overall": None}
    report.update({"logs_prefix": prefix, "log_files": files, "source": source, "deployment": deployment,
                   **simulated})
    key = keys.version_keys(version).report("shadow_report")
    digest = write_json(store, key, report)
    per_camera = pd.DataFrame(report["per_camera"])
    if not files:
        context.log.warning(f"no shadow logs for {version} under {prefix}")
    return dg.MaterializeResult(metadata={
        "candidate": version, "production": str(production["version"]), "source": report["source"],
        "about": explain("shadow"),
        "log_files": len(files), "paired_frames": int(report.get("paired_frames", 0)),
        "period_h": float(report.get("period_h") or 0.0), "period": f"{report.get('period_start')} to "
                                                                  f"{report.get('period_end')}",
        "per_camera": md_table(per_camera.round(3) if len(per_camera) else per_camera),
        "overall": dg.MetadataValue.json(report.get("overall") or {}),
        "shadow_deployment": dg.MetadataValue.json(deployment), "uri": store.uri(key), "sha256": digest,
        **simulated_warning(source)})


# --------------------------------------------------------------------------- production_model (the gate)


class PromotionConfig(config_from(PromotionThresholds, exclude=("gated_subsets", "allow_simulated_shadow"))):
    """The promotion thresholds from the launchpad (pipeline.promotion's defaults). Whether a simulated
    shadow run may count is the deployment's decision (ShadowPolicy), not the launchpad's."""

    def thresholds(self) -> PromotionThresholds:
        return to_settings(PromotionThresholds, self)


def _checks_table(checks: list[dict]) -> dg.MetadataValue:
    rows = [{"refusal if failed": c["kind"], "subject": c["subject"], "value": str(c["value"]),
             "threshold": str(c["threshold"]), "passed": "yes" if c["passed"] else "NO"} for c in checks]
    return md_table(pd.DataFrame(rows), max_rows=80)


@dg.asset(partitions_def=monthly_partitions, deps=[shadow_report], group_name="retraining", kinds={"json"},
          pool="registry")
def production_model(context: dg.AssetExecutionContext, config: PromotionConfig, store: ArtifactStore,
                     engine_builder: EngineBuilder, shadow_policy: ShadowPolicy) -> dg.MaterializeResult:
    """The promotion gate: the month's candidate becomes production (registry/production.json, and the
    Jetson's production slot) only when the comparison and the shadow run pass and the shadow period
    was long enough. Otherwise production is unchanged and every reason is listed."""
    month = _month(context)
    card = with_engine(store, month_candidate(store, month))
    version = card["version"]
    before = registry.production(store)
    comparison_key = keys.version_keys(version).report("comparison")
    shadow_key = keys.version_keys(version).report("shadow_report")
    comparison = read_json(store, comparison_key) if store.exists(comparison_key) else None
    shadow = read_json(store, shadow_key) if store.exists(shadow_key) else None
    thresholds = replace(config.thresholds(), allow_simulated_shadow=shadow_policy.allow_simulated)
    decision = decide_promotion(comparison, shadow, thresholds, rolled_back_entry=registry.rolled_back(store, version),
                      candidate=version, production=str((before or {}).get("version")))
    deployment, changed = {}, False
    if before and before.get("version") == version and before.get("weights_sha256") == card["weights_sha256"]:
        outcome, why = "already production", f"{version} is already production (since {before.get('at')})"
    elif decision.promote:
        why = (f"monthly cycle {month}: all {len(decision.checks)} checks passed (comparison on frozen test, "
               f"deployment test and held-out hard examples; {shadow_words(shadow)})")
        deployment = deploy_production_engine(context, store, engine_builder, card)
        pointer, changed = registry.promote(store, card, why=why, run_id=_run_id(context))
        outcome = "promoted" if changed else "already production"
    else:
        outcome, why = "refused", "; ".join(decision.reasons)
        context.log.warning(f"{version} not promoted: {why}")
    after = registry.production(store)
    record = {"month": month, "candidate": version, "outcome": outcome, "why": why, "decision": decision.to_dict(),
              "thresholds": thresholds.to_dict(), "production_before": (before or {}).get("version"),
              "production_after": (after or {}).get("version"), "run_id": context.run_id,
              "decided_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "deployment": deployment}
    write_json(store, keys.version_keys(version).report("promotion"), record)
    metadata = {"decision": outcome, "candidate": version, "production_before": str(record["production_before"]),
                "production_after": str(record["production_after"]), "changed": changed,
                "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons) or
                                               "- none: every check passed"),
                "checks": _checks_table(decision.checks), "thresholds": dg.MetadataValue.json(thresholds.to_dict()),
                "current_model_version": registry.current_model_version(store),
                **simulated_warning((shadow or {}).get("source", "none"))}
    if deployment:
        metadata["device_deployment"] = dg.MetadataValue.json(deployment)
    if store.exists(registry.PRODUCTION_KEY):
        metadata["pointer_sha256"] = sha256_bytes(store.read_bytes(registry.PRODUCTION_KEY))
        metadata["pointer_uri"] = store.uri(registry.PRODUCTION_KEY)
    return dg.MaterializeResult(metadata=metadata)


# --------------------------------------------------------------------------- production_pointer (+ rollback)


class PointerConfig(dg.Config):
    action: str = "show"  # "show": record the current pointer; "rollback": make the previous version production
    to_version: str = ""  # rollback target; empty = the version before the current one
    reason: str = ""


def _history_table(store: ArtifactStore) -> dg.MetadataValue:
    rows = [{"#": e.get("sequence"), "action": e.get("action"), "version": e.get("version"), "at": e.get("at"),
             "previous": e.get("previous"), "rolled back": e.get("rolled_back_from") or "",
             "why": (e.get("why") or "")[:120], "run": (e.get("run_id") or "")[:8]} for e in registry.history(store)]
    return md_table(pd.DataFrame(rows))


@dg.asset(deps=[production_model], group_name="retraining", kinds={"json"}, pool="registry")
def production_pointer(context: dg.AssetExecutionContext, config: PointerConfig, store: ArtifactStore,
                       engine_builder: EngineBuilder) -> dg.MaterializeResult:
    """registry/production.json: the production model (version, weights/engine sha256, when, why, run)
    and its history. With action: rollback (rollback_production_job) the previous version becomes
    production again, on the device too; the history keeps everything."""
    if config.action not in ("show", "rollback"):
        raise ValueError(f"unknown action {config.action!r}: use 'show' or 'rollback'")
    deployment = {}
    if config.action == "rollback":
        before = registry.production(store)
        reason = config.reason or "operator rollback"
        pointer, changed = registry.rollback(store, why=reason, run_id=_run_id(context),
                                             to_version=config.to_version or None)
        if changed:
            deployment = deploy_production_engine(context, store, engine_builder, pointer)
        context.log.warning(f"rolled back production from {before.get('version')} to {pointer['version']}: {reason}")
    entry = registry.production(store)
    if entry is None:
        return dg.MaterializeResult(metadata={"status": "no production model yet (run training_job)"})
    fresh = registry.freshness(entry)
    metadata = {"version": str(entry.get("version")), "action": str(entry.get("action")),
                "weights_sha256": str(entry.get("weights_sha256")), "engine_sha256": str(entry.get("engine_sha256")),
                "at": str(entry.get("at")), "why": str(entry.get("why")), "run_id": str(entry.get("run_id")),
                "previous": str(entry.get("previous")), "history": _history_table(store),
                "freshness": fresh["reason"], "pointer": registry.PRODUCTION_KEY if
                store.exists(registry.PRODUCTION_KEY) else "none yet: production is the Stage B selection"}
    if deployment:
        metadata["device_deployment"] = dg.MetadataValue.json(deployment)
    return dg.MaterializeResult(metadata=metadata)


class FreshnessConfig(dg.Config):
    max_age_days: float = registry.MAX_AGE_DAYS


@dg.asset_check(asset=production_pointer, description="The production model is at most 35 days old")
def production_model_fresh(config: FreshnessConfig, store: ArtifactStore) -> dg.AssetCheckResult:
    result = registry.freshness(registry.production(store), max_age_days=config.max_age_days)
    return dg.AssetCheckResult(passed=result["passed"], severity=dg.AssetCheckSeverity.WARN,
                               metadata={k: (v if v is not None else "") for k, v in result.items()})
