"""Labels and split: CVAT exports in, annotator agreement, leak-free split, YOLO dataset out."""

import json
import tempfile
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pandas as pd

from assets.common import md_table
from assets.footage import plant_photo_frames, stage_a_sample, video_frames, video_manifest
from assets.store_io import load_frame_manifests, read_parquet, read_split, read_video_manifest, write_parquet
from pipeline import keys
from pipeline.agreement import box_agreement
from pipeline.classes import DEFAULT_CLASSES, check_classes
from pipeline.cvat import LabelMapping, read_export
from pipeline.errors import AnnotationError, PipelineInputError
from pipeline.hashing import sha256_bytes
from pipeline.labels import export_manifest, labelled_frames, overlap_frames, primary_labels, task_video
from pipeline.near_duplicates import cross_split_pairs, hash_frames
from pipeline.split_revisions import check_not_frozen, compare_splits, next_record
from pipeline.split import (DEPLOYMENT_TEST, SPLITS, SplitConfig, assign_splits, check_unique_sources, frame_splits,
                            leaks, ratio_report, split_csv)
from pipeline.yolo_dataset import dataset_yaml, files_under, write_yolo_dataset
from resources.storage import ArtifactStore

cvat_exports = dg.AssetSpec("cvat_exports", group_name="sources", kinds={"cvat"},
                            description="CVAT exports (COCO 1.0 zip/json, CVAT XML) under "
                                        "annotations/incoming/<task>/<annotator>/. Never modified.")

ANNOTATIONS_KEY = keys.ANNOTATIONS
IMAGES_KEY = keys.ANNOTATION_IMAGES
DATA_VERSION = "v0"


class AnnotationsConfig(dg.Config):
    label_mapping: dict[str, str] = {n: "person" for n in ("person", "people", "kid", "pedestrian", "player", "worker")}
    # the detector's output classes, person first (class id 0); e.g. ["person", "no_helmet"] with
    # label_mapping {"no helmet": "no_helmet", ...}. Recorded with the annotations: the dataset, training,
    # evaluation and export read it from there.
    classes: list[str] = list(DEFAULT_CLASSES)
    ignore_labels: list[str] = []
    clip_tolerance_px: float = 2.0


def _export_parts(key: str) -> tuple[str, str]:
    parts = key[len(keys.INCOMING_ANNOTATIONS):].split("/")
    if len(parts) != 3:
        raise AnnotationError(key, "key", key, "place exports at annotations/incoming/<task>/<annotator>/<file>",
                              problem="export not in the <task>/<annotator>/ layout")
    return parts[0], parts[1]


def _export_error(exc: PipelineInputError, key: str, local: str, uri: str) -> PipelineInputError:
    """The same error, naming the export by its storage key (not the local copy it was read from)."""
    where = exc.file.replace(local, key) if local in exc.file else f"{key} ({exc.file})"
    remedy = (f"{exc.remedy}. Then replace {key} ({uri}) with the corrected export or remove it: every export "
              f"under {keys.INCOMING_ANNOTATIONS} is imported on each run")
    return type(exc)(where, exc.field, exc.value, remedy, problem=exc.problem)


@dg.asset(deps=[cvat_exports, video_frames, stage_a_sample, plant_photo_frames], group_name="labels",
          kinds={"pandas", "parquet"})
def annotations(context: dg.AssetExecutionContext, config: AnnotationsConfig, store: ArtifactStore) -> dg.MaterializeResult:
    """Every CVAT export, validated and matched to our own frames, in one table.

    Image exports (COCO 1.0, CVAT for images) match by the image names of the task package. "CVAT for video
    1.1" exports match by frame number within one of our videos: filed under
    annotations/incoming/video-<video_id>/<annotator>/, or else the export's <source> is the video's file
    name; every task frame must be one we extracted (task start frame and step lined up with ours)."""
    classes = check_classes(config.classes)
    mapping = LabelMapping(mapping=dict(config.label_mapping), classes=classes, ignore=set(config.ignore_labels))
    videos = read_video_manifest(store) if store.exists(keys.VIDEO_MANIFEST) else None
    manifest = export_manifest(load_frame_manifests(store), videos)
    boxes, images, per_export = [], [], []
    exports = sorted((i for i in store.list_keys(keys.INCOMING_ANNOTATIONS)
                      if i.key.endswith((".zip", ".json", ".xml"))), key=lambda i: (i.last_modified, i.key))
    for info in exports:
        task, annotator = _export_parts(info.key)
        with store.local_copy(info.key) as local:
            try:
                result = read_export(Path(local), annotator=annotator, task=task, mapping=mapping,
                                     frame_manifest=manifest, clip_tolerance_px=config.clip_tolerance_px,
                                     video=task_video(task))
            except PipelineInputError as exc:
                raise _export_error(exc, info.key, str(local), store.uri(info.key)) from exc
        result.table["export_file"] = info.key
        result.images["export_file"] = info.key
        result.images["annotator"] = annotator
        result.images["task"] = task
        boxes.append(result.table)
        images.append(result.images)
        per_export.append({"export": info.key, "task": task, "annotator": annotator,
                           **{k: v for k, v in result.counts.items() if not isinstance(v, dict)}})
    box_table = pd.concat(boxes, ignore_index=True) if boxes else pd.DataFrame()
    image_table = pd.concat(images, ignore_index=True) if images else pd.DataFrame()
    if len(image_table):  # a later export of the same frames by the same annotator supersedes an earlier one
        image_table = image_table.drop_duplicates(["frame_key", "annotator"], keep="last")
        latest = set(zip(image_table["frame_key"], image_table["annotator"], image_table["export_file"]))
        keep = [t in latest for t in zip(box_table["frame_key"], box_table["annotator"], box_table["export_file"])]
        box_table = box_table[keep].reset_index(drop=True)
    box_sha = write_parquet(store, ANNOTATIONS_KEY, box_table)
    write_parquet(store, IMAGES_KEY, image_table)
    store.write_bytes(keys.ANNOTATION_CLASSES, json.dumps({"classes": classes}, indent=2).encode())
    per_class = box_table.groupby("class_name").size().reindex(classes, fill_value=0) if len(box_table) else \
        pd.Series(0, index=classes)
    per_annotator = image_table.groupby("annotator").size().rename("frames").reset_index() if len(image_table) else \
        pd.DataFrame()
    return dg.MaterializeResult(metadata={
        "exports": len(exports), "boxes": len(box_table), "labelled_frames": int(image_table["frame_key"].nunique())
        if len(image_table) else 0, "per_export": md_table(pd.DataFrame(per_export)),
        "per_annotator": md_table(per_annotator), "sha256": box_sha, "uri": store.uri(ANNOTATIONS_KEY),
        "classes": ", ".join(classes), "boxes_per_class": md_table(per_class.rename("boxes").rename_axis("class")
                                                                    .reset_index()),
    })


def read_classes(store: ArtifactStore) -> list[str]:
    """The output class list the annotations were mapped to (a store labelled before it was
    recorded: person alone)."""
    if not store.exists(keys.ANNOTATION_CLASSES):
        return list(DEFAULT_CLASSES)
    return check_classes(json.loads(store.read_bytes(keys.ANNOTATION_CLASSES))["classes"], keys.ANNOTATION_CLASSES)


def dataset_classes(store: ArtifactStore, version: str) -> list[str]:
    """The classes the model of dataset `version` was trained on (its stored yaml's names, by id)."""
    import yaml

    key = keys.dataset_keys(version).yaml
    if not store.exists(key):
        raise PipelineInputError(key, "names", None, f"materialize the dataset of {version} (yolo_dataset, or the "
                                 "month's candidate_model) first", problem="no dataset yaml for this model")
    names = yaml.safe_load(store.read_bytes(key))["names"]
    return [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)


class AgreementConfig(dg.Config):
    min_kappa: float = 0.85
    min_overlap_frames: int = 20
    iou_threshold: float = 0.5
    grid: int = 16


@dg.asset_check(asset=annotations, blocking=True, description="Cohen's kappa on the overlap subset >= min_kappa")
def annotator_agreement(context: dg.AssetCheckExecutionContext, config: AgreementConfig,
                        store: ArtifactStore) -> dg.AssetCheckResult:
    images, boxes = read_parquet(store, IMAGES_KEY), read_parquet(store, ANNOTATIONS_KEY)
    a, b, shared = overlap_frames(images) if len(images) else ("", "", [])
    if len(shared) < config.min_overlap_frames:
        return dg.AssetCheckResult(passed=False, metadata={
            "overlap_frames": len(shared), "remedy": f"have a second annotator label at least "
                                                     f"{config.min_overlap_frames} frames of the same task"})
    sizes = {r.frame_key: (float(r.width), float(r.height)) for r in images.drop_duplicates("frame_key").itertuples()}
    result = box_agreement(boxes[boxes["annotator"] == a], boxes[boxes["annotator"] == b], shared, sizes=sizes,
                           iou_threshold=config.iou_threshold, grid=config.grid)
    return dg.AssetCheckResult(passed=bool(result.kappa >= config.min_kappa), metadata={
        **result.to_metadata(), "annotator_a": a, "annotator_b": b, "min_kappa": config.min_kappa,
        "disagreements": md_table(result.disagreements, 30)})


class SplitAssetConfig(dg.Config):
    train: float = 0.70
    val: float = 0.15
    test: float = 0.15
    seed: int = 0
    by_camera_day: bool = True
    ratio_tolerance: float = 0.10


@dg.asset(deps=[annotations, video_manifest], group_name="labels", kinds={"csv"})
def dataset_split(context: dg.AssetExecutionContext, config: SplitAssetConfig, store: ArtifactStore) -> dg.MaterializeResult:
    """70/15/15 by video (and camera-day), never by frame; post-install recordings held out."""
    settings = SplitConfig((config.train, config.val, config.test), config.seed, config.by_camera_day,
                           config.ratio_tolerance)
    videos = read_video_manifest(store)[["video_id", "operation", "camera", "recorded_day", "post_install"]]
    frames = labelled_frames(load_frame_manifests(store), read_parquet(store, IMAGES_KEY))
    check_unique_sources(frames, keys.VIDEO_MANIFEST)
    # Every unit comes from the sources (the manifest, every plant photo), not from what is labelled so
    # far: a second labelling wave adds frames to the split without moving any earlier frame.
    labelled_photos = frames.loc[frames["source"] == "photos", ["video_id"]]
    all_photos = read_parquet(store, keys.PHOTOS_MANIFEST)[["video_id"]] if store.exists(keys.PHOTOS_MANIFEST) \
        else labelled_photos
    photos = pd.concat([all_photos, labelled_photos]).astype(str).drop_duplicates().sort_values("video_id")
    units = pd.concat([videos, photos.assign(operation="plant photo", camera="photo",
                                             recorded_day=photos["video_id"], post_install=False)], ignore_index=True)
    assignment = assign_splits(units, settings)
    table = frame_splits(frames, assignment)
    data, digest = split_csv(table)
    revision = _store_split_revision(context, store, data, digest)
    write_parquet(store, keys.dataset_keys(DATA_VERSION).split_assignment, assignment)
    store.write_bytes(keys.dataset_keys(DATA_VERSION).split_config, json.dumps(asdict(settings)).encode())
    per_split = table.groupby("split").agg(frames=("frame_key", "size"), videos=("video_id", "nunique"),
                                           operations=("operation", "nunique")).reset_index()
    return dg.MaterializeResult(metadata={
        "data_version": DATA_VERSION, "split_sha256": digest, "uri": store.uri(keys.split_key(DATA_VERSION)), "frames": len(table),
        "groups": int(assignment["group"].nunique()), "per_split": md_table(per_split),
        "ratios": md_table(ratio_report(assignment, settings)), "seed": config.seed,
        "deployment_test_frames": int((table["split"] == DEPLOYMENT_TEST).sum()),
        "revision": revision["revision"], "revision_why": revision["why"],
        "frozen_by": revision.get("frozen_by") or "none yet: re-made openly while labels arrive",
    })


def _store_split_revision(context, store: ArtifactStore, data: bytes, digest: str) -> dict:
    """Write the split as a new revision when it changed (labels arrive in waves), keep the earlier
    revision, and record why; refuse to rewrite a split a model was trained from."""
    dataset = keys.dataset_keys(DATA_VERSION)
    key = dataset.split
    current = store.read_bytes(key) if store.exists(key) else None
    record_key, lock_key = dataset.split_record, dataset.split_lock
    record = json.loads(store.read_bytes(record_key)) if store.exists(record_key) else None
    lock = json.loads(store.read_bytes(lock_key)) if store.exists(lock_key) else None
    change = compare_splits(current, data)
    current_sha = sha256_bytes(current) if current is not None else None
    check_not_frozen(lock, current_sha, digest, change, store.uri(key))
    frozen = {"frozen_by": f"{lock.get('model')} (run {lock.get('run_id')})"} if lock else {}
    if current_sha == digest and record is not None:
        return {**record["revisions"][-1], "why": f"unchanged since revision {len(record['revisions'])}", **frozen}
    revision_key = dataset.split_revision(len((record or {}).get("revisions", [])) + 1, digest)
    store.write_if_absent_or_same(revision_key, data)
    record = next_record(record, sha256=digest, change=change, run_id=context.run_id, revision_key=revision_key,
                         at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    store.write_bytes(key, data)
    store.write_bytes(record_key, json.dumps(record, indent=2).encode())
    latest = record["revisions"][-1]
    if latest["revision"] > 1:
        context.log.warning(f"dataset split {DATA_VERSION} re-made (revision {latest['revision']}): {latest['why']}")
    return {**latest, **frozen}


@dg.asset_check(asset=dataset_split, blocking=True, description="No video or camera-day in two splits")
def split_has_no_leaks(store: ArtifactStore) -> dg.AssetCheckResult:
    table = read_split(store)
    found = pd.concat([leaks(table, ("video_id",)), leaks(table, ("camera", "recorded_day")),
                       leaks(table, ("group",))], ignore_index=True)
    return dg.AssetCheckResult(passed=len(found) == 0, metadata={"leaking_groups": len(found),
                                                                 "leaks": md_table(found)})


@dg.asset_check(asset=dataset_split, blocking=True, description="Group shares within tolerance of 70/15/15")
def split_ratios_within_tolerance(store: ArtifactStore) -> dg.AssetCheckResult:
    where = keys.dataset_keys(DATA_VERSION)
    assignment = read_parquet(store, where.split_assignment)
    settings = json.loads(store.read_bytes(where.split_config))
    report = ratio_report(assignment, SplitConfig(tuple(settings["ratios"]), settings["seed"],
                                                  settings["by_camera_day"], settings["ratio_tolerance"]))
    return dg.AssetCheckResult(passed=bool(report["within_tolerance"].all()), metadata={"ratios": md_table(report)})


class NearDuplicateConfig(dg.Config):
    max_distance: int = 6  # Hamming distance (bits of 64) at or below which two frames count as near-duplicates
    max_rows: int = 50     # pairs listed in the metadata table (the count is always complete)


@dg.asset_check(asset=dataset_split, blocking=False,
                description="No near-duplicate frames (perceptual hash within max_distance bits) in two splits")
def near_duplicates_across_splits(context: dg.AssetCheckExecutionContext, config: NearDuplicateConfig,
                                  store: ArtifactStore) -> dg.AssetCheckResult:
    table = read_split(store)
    hashes = hash_frames(table["frame_key"], store.read_bytes)
    pairs = cross_split_pairs(table["frame_key"], table["split"], hashes, config.max_distance,
                              split_order=(*SPLITS, DEPLOYMENT_TEST))
    by_splits = pairs.groupby(["split_a", "split_b"]).size().rename("pairs").reset_index() if len(pairs) else \
        pd.DataFrame(columns=["split_a", "split_b", "pairs"])
    return dg.AssetCheckResult(
        passed=len(pairs) == 0, severity=dg.AssetCheckSeverity.WARN,
        metadata={"near_duplicate_pairs": len(pairs), "frames_hashed": len(table),
                  "max_distance": config.max_distance, "by_splits": md_table(by_splits),
                  "pairs": md_table(pairs, config.max_rows),
                  "remedy": "look at the pairs: the same scene in two splits inflates val/test figures; drop one "
                            "frame of each pair, or put their videos in one split (same camera-day)"})


@dg.asset(deps=[dataset_split], group_name="labels", kinds={"yolo"})
def yolo_dataset(context: dg.AssetExecutionContext, store: ArtifactStore) -> dg.MaterializeResult:
    """images/ + labels/ per split and lbzf_person_v0.yaml (every class the annotations were mapped
    to, by class id), versioned with the split hash."""
    split = read_split(store)
    classes = read_classes(store)
    split_sha = sha256_bytes(store.read_bytes(keys.split_key(DATA_VERSION)))
    chosen, boxes = primary_labels(read_parquet(store, IMAGES_KEY), read_parquet(store, ANNOTATIONS_KEY))
    frames = split.merge(chosen[["frame_key", "width", "height"]], on="frame_key", how="inner")
    prefix = keys.dataset_keys(DATA_VERSION).folder
    with tempfile.TemporaryDirectory(prefix="lbzf-dataset-") as tmp:
        root = Path(tmp)
        local = []
        for key in frames["frame_key"]:
            path = root / "_src" / keys.package_file_name(key)
            store.download_file(key, path)
            local.append(str(path))
        out = root / "dataset"
        counts = write_yolo_dataset(out, frames.assign(local_path=local), boxes, classes, version=DATA_VERSION,
                                    split_sha256=split_sha)
        written = set()
        for path in files_under(out):
            written.add(prefix + path.relative_to(out).as_posix())
            store.upload_file(path, prefix + path.relative_to(out).as_posix())
    stale = [i.key for sub in ("images/", "labels/") for i in store.list_keys(prefix + sub) if i.key not in written]
    for key in stale:  # a frame of an earlier split revision that is no longer in this one
        store.delete(key)
    text = dataset_yaml(prefix.rstrip("/"), classes, version=DATA_VERSION, split_sha256=split_sha,
                        splits=sorted(counts))
    yaml_key = keys.dataset_keys(DATA_VERSION).yaml
    store.write_bytes(yaml_key, text.encode())
    rows = [{"split": k, **v} for k, v in sorted(counts.items())]
    return dg.MaterializeResult(metadata={
        "yaml_uri": store.uri(yaml_key), "yaml_sha256": sha256_bytes(text.encode()), "split_sha256": split_sha,
        "per_split": md_table(pd.DataFrame(rows)), "images": int(sum(c["images"] for c in counts.values())),
        "stale_files_removed": len(stale), "classes": ", ".join(classes),
    })
