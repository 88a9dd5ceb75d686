"""Annotated video preview: a chosen model (selected, a month's candidate, production) over a
stretch of a chosen video, as a browser-playable MP4 with a contact sheet, under previews/."""

import json
import tempfile
from pathlib import Path

import dagster as dg
import pandas as pd

from assets.plots import image_md
from assets.store_io import read_selected, read_video_manifest, write_parquet
from pipeline import keys, registry
from pipeline.detector import load_model
from pipeline.errors import PipelineInputError
from pipeline.explanations import explain
from pipeline.hashing import sha256_file
from pipeline.preview import render_preview, ultralytics_detector
from pipeline.retraining import candidate_weights, month_candidate
from pipeline.weights import check_weights, fetch_weights
from resources.storage import ArtifactStore

MODELS = ("selected", "candidate", "production")


class PreviewConfig(dg.Config):
    video_id: str = ""  # "" = the first post-install video in the manifest (else the first video)
    model: str = "selected"  # selected | candidate | production
    month: str = ""  # the candidate's month (YYYY-MM-DD partition key), for model: candidate
    start_s: float = 0.0
    length_s: float = 10.0
    fps: float = 5.0
    conf: float = 0.25
    imgsz: int = 0  # 0 = the model's own image size


def _choose_video(store: ArtifactStore, video_id: str) -> pd.Series:
    manifest = read_video_manifest(store)
    if not video_id:
        post = manifest[manifest["post_install"]]
        return (post if len(post) else manifest).iloc[0]
    if video_id not in set(manifest["video_id"]):
        raise PipelineInputError(keys.VIDEO_MANIFEST, "video_id", video_id,
                                 f"set video_id to one of {sorted(manifest['video_id'])[:8]} (or leave it empty)",
                                 problem="no such video")
    return manifest.set_index("video_id", drop=False).loc[video_id]


def _model_weights(store: ArtifactStore, config: PreviewConfig, folder: Path) -> tuple[str, Path, int]:
    """(label, checked local weights, image size) of the chosen model."""
    if config.model == "selected":
        selected = read_selected(store)
        if selected.get("key"):
            path = fetch_weights(store, selected["key"], folder / Path(selected["key"]).name,
                                 expected_sha256=selected["sha256"], recorded_by=keys.SELECTED_MODEL)
        else:
            path = Path(selected["path"])
            check_weights(store, path, recorded_by=keys.SELECTED_MODEL, expected_sha256=selected["sha256"])
        return selected["model"], path, int(selected.get("imgsz") or 640)
    if config.model == "production":
        entry = registry.production(store)
        if entry is None:
            raise registry.RegistryError(registry.PRODUCTION_KEY, "production", None, "run training_job first",
                                         problem="no production model")
        return str(entry["version"]), registry.fetch_entry_weights(store, entry, folder), int(entry.get("imgsz") or 640)
    if config.model == "candidate":
        if not config.month or not store.exists(keys.month_keys(config.month).candidate_pointer):
            raise PipelineInputError("preview config", "month", config.month,
                                     "name a month whose candidate_model has run (its partition key, e.g. 2026-07-01)",
                                     problem="no candidate for this month")
        card = month_candidate(store, config.month)
        return card["version"], candidate_weights(store, card, folder / "candidate.pt"), int(card["imgsz"])
    raise PipelineInputError("preview config", "model", config.model, f"use one of {list(MODELS)}",
                             problem="unknown model")


@dg.asset(deps=["selected_model"], group_name="models", kinds={"video"})
def video_preview(context: dg.AssetExecutionContext, config: PreviewConfig, store: ArtifactStore) -> dg.MaterializeResult:
    """The chosen model run over a stretch of a chosen video: boxes, confidences and the frame time
    drawn, written as an H.264 MP4 (plays in a browser) with a contact sheet and the detections."""
    video = _choose_video(store, config.video_id)
    with tempfile.TemporaryDirectory(prefix="lbzf-preview-") as tmp:
        label, weights, own_imgsz = _model_weights(store, config, Path(tmp))
        detector = ultralytics_detector(load_model(weights), imgsz=config.imgsz or own_imgsz, conf=config.conf)
        target = Path(tmp) / "preview.mp4"
        with store.local_copy(video["key"]) as local:
            table, sheet, info = render_preview(Path(local), detector, target, start_s=config.start_s,
                                                length_s=config.length_s, fps=config.fps)
        prefix = keys.preview_prefix(video["video_id"], label)
        store.upload_file(target, prefix + "preview.mp4")
        digest = sha256_file(target)
    store.write_bytes(prefix + "contact_sheet.jpg", sheet)
    detections_sha = write_parquet(store, prefix + "detections.parquet", table)
    summary = {**info, "video_id": video["video_id"], "video_key": video["key"], "model": label,
               "model_role": config.model, "conf": config.conf, "video_sha256": digest,
               "detections_sha256": detections_sha}
    store.write_bytes(prefix + "preview.json", json.dumps(summary, indent=2, default=float).encode())
    context.log.info(f"preview of {video['video_id']} with {label}: {info['frames']} frames")
    return dg.MaterializeResult(metadata={
        "contact_sheet": image_md(sheet, "contact sheet", explain("preview"), store.uri(prefix + "contact_sheet.jpg"),
                                  mime="image/jpeg"),
        "video": dg.MetadataValue.url(store.uri(prefix + "preview.mp4")),
        "video_sha256": digest, "frames": info["frames"], "fps": config.fps, "span_s": f"{info['start_s']:.2f} to "
        f"{info['end_s']:.2f}", "detections": info["detections"], "model": label, "model_role": config.model,
        "video_id": str(video["video_id"]), "detections_uri": store.uri(prefix + "detections.parquet"),
    })

