"""Footage: the operation-video manifest, exact frames per video, plant photos, the Stage A sample."""

import dagster as dg
import pandas as pd

from assets.common import FRAME_COLUMNS, extract_to_store, md_table, write_package
from assets.plots import contact_sheet
from assets.store_io import read_video_manifest, write_parquet
from orchestration.partitions import video_partitions
from pipeline import keys
from pipeline.errors import PipelineInputError
from pipeline.frames import probe_video
from pipeline.hashing import sha256_bytes
from pipeline.quarantine import quarantine_bad_footage
from pipeline.sampling import every_n_seconds
from pipeline.stage_a_plan import plan_window, select_stage_a_videos
from resources.storage import ArtifactStore

operation_videos = dg.AssetSpec("operation_videos", group_name="sources", kinds={"s3", "video"},
                                description="Operation videos and raw/videos/manifest.csv (video_id, key, operation, "
                                            "camera, recorded_day, post_install). Never modified by the pipeline.")
plant_photos = dg.AssetSpec("plant_photos", group_name="sources", kinds={"image"},
                            description="Plant photos under raw/photos/.")

@dg.asset(deps=[operation_videos], group_name="footage", kinds={"pandas"})
def video_manifest(context: dg.AssetExecutionContext, store: ArtifactStore) -> dg.MaterializeResult:
    """The manifest, validated; registers one `videos` partition per video so frames run per file."""
    table = read_video_manifest(store)
    absent = [k for k in table["key"] if not store.exists(k)]
    if absent:
        raise PipelineInputError(keys.VIDEO_MANIFEST, "key", absent[0], "upload the video or remove its row",
                                 problem=f"{len(absent)} listed video(s) not in storage")
    new = sorted(set(table["video_id"]) - set(context.instance.get_dynamic_partitions(video_partitions.name)))
    if new:
        context.instance.add_dynamic_partitions(video_partitions.name, new)
    counts = table.groupby("operation").size().rename("videos").reset_index()
    return dg.MaterializeResult(metadata={
        "videos": len(table), "post_install_videos": int(table["post_install"].sum()),
        "new_partitions": len(new), "per_operation": md_table(counts),
        "manifest_sha256": sha256_bytes(store.read_bytes(keys.VIDEO_MANIFEST)),
    })


class FramesConfig(dg.Config):
    step_s: float = 2.0  # the plan: 1 frame every 2 s from operation videos


@dg.asset(partitions_def=video_partitions, deps=[video_manifest], group_name="footage", kinds={"video"})
def video_frames(context: dg.AssetExecutionContext, config: FramesConfig, store: ArtifactStore) -> dg.MaterializeResult:
    """Exact frames (1 / 2 s) of one operation video, with timestamps from the stream's pts."""
    video_id = context.partition_key
    row = read_video_manifest(store).set_index("video_id").loc[video_id]
    with quarantine_bad_footage(store, row["key"]), store.local_copy(row["key"]) as local:
        info = probe_video(local)
    table = extract_to_store(store, row["key"], every_n_seconds(info.usable_duration_s, config.step_s), source="ops",
                             video_id=video_id, frame_prefix=keys.frames_prefix("ops", video_id))
    manifest_sha = write_parquet(store, keys.frames_manifest_key("ops", video_id), table)
    sheet = contact_sheet(store, table["frame_key"].tolist())
    return dg.MaterializeResult(metadata={
        "frames": len(table), "duration_s": round(info.usable_duration_s, 3), "video_sha256": table["video_sha256"].iloc[0],
        "first_ts_s": float(table["actual_s"].min()), "last_ts_s": float(table["actual_s"].max()),
        "manifest_sha256": manifest_sha, "manifest_uri": store.uri(keys.frames_manifest_key("ops", video_id)),
        "contact_sheet": sheet,
    })


@dg.asset(deps=[plant_photos], group_name="footage", kinds={"image"})
def plant_photo_frames(store: ArtifactStore) -> dg.MaterializeResult:
    """Plant photos pass through as frames (decoded to check they are images, bytes kept as they are)."""
    import cv2
    import numpy as np

    rows = []
    for info in store.list_keys(keys.PHOTOS_PREFIX):
        data = store.read_bytes(info.key)
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise PipelineInputError(info.key, "bytes", f"{len(data)} bytes", "replace it with a JPEG or PNG photo",
                                     problem="not a decodable image")
        name = info.key.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        key = keys.frame_key("photos", name, 0.0)
        store.write_bytes(key, data)
        digest = sha256_bytes(data)
        rows.append({"frame_key": key, "source": "photos", "video_id": name, "video_sha256": digest, "target_s": 0.0,
                     "actual_s": 0.0, "frame_index": 0, "width": image.shape[1], "height": image.shape[0],
                     "jpeg_sha256": digest})
    table = pd.DataFrame(rows, columns=FRAME_COLUMNS)
    digest = write_parquet(store, keys.PHOTOS_MANIFEST, table)
    return dg.MaterializeResult(metadata={"photos": len(table), "manifest_sha256": digest})


class StageASampleConfig(dg.Config):
    per_category: int = 3
    window_s: float = 60.0
    step_s: float = 5.0
    seed: int = 0


@dg.asset(deps=[video_manifest], group_name="footage", kinds={"video"})
def stage_a_sample(context: dg.AssetExecutionContext, config: StageASampleConfig,
                   store: ArtifactStore) -> dg.MaterializeResult:
    """3 videos per operation, 1 frame / 5 s in the 60 s window where the operator works hardest."""
    chosen = select_stage_a_videos(read_video_manifest(store), config.per_category, config.seed)
    tables, windows = [], []
    for row in chosen.itertuples():
        with quarantine_bad_footage(store, row.key), store.local_copy(row.key) as local:
            choice, targets = plan_window(local, window_s=config.window_s, step_s=config.step_s)
        table = extract_to_store(store, row.key, targets, source="stage_a", video_id=row.video_id,
                                 frame_prefix=keys.frames_prefix("stage_a", row.video_id))
        tables.append(table)
        windows.append({"video_id": row.video_id, "operation": row.operation, "window_start_s": choice.start_s,
                        "window_end_s": choice.end_s, "motion_score": round(choice.score, 4), "frames": len(table)})
    frames = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=FRAME_COLUMNS)
    digest = write_parquet(store, keys.STAGE_A_MANIFEST, frames)
    window_table = pd.DataFrame(windows)
    write_parquet(store, keys.STAGE_A_WINDOWS, window_table)
    package = write_package(store, frames["frame_key"].tolist(), "stage_a", keys.STAGE_A_PACKAGE)
    short = [op for op, n in chosen.groupby("operation").size().items() if n < config.per_category]
    if short:
        context.log.warning(f"operations with fewer than {config.per_category} videos: {short}")
    return dg.MaterializeResult(metadata={
        "videos": len(chosen), "frames": len(frames), "operations": int(chosen["operation"].nunique()),
        "short_operations": ", ".join(short) or "none", "windows": md_table(window_table),
        "manifest_sha256": digest, "seed": config.seed, "cvat_package_uri": store.uri(keys.STAGE_A_PACKAGE),
        "cvat_package_sha256": package.get("zip_sha256", ""),
        "contact_sheet": contact_sheet(store, frames["frame_key"].tolist()),
    })
