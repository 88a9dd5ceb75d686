"""The camera rolling buffer: frames per clip (1 / 30 s) and the monthly hard-example sample."""

import json

import dagster as dg
import pandas as pd

from assets.common import (config_from, extract_to_store, md_table, read_parquet, to_settings, write_package,
                           write_parquet)
from orchestration.partitions import buffer_clip_partitions, monthly_partitions
from pipeline import keys
from pipeline.errors import BadFootageError
from pipeline.frames import probe_video
from pipeline.hard_examples import HardExampleSampling, attach_clips, clip_table, sample
from pipeline.quarantine import quarantine_bad_footage
from pipeline.sampling import buffer_targets
from resources.storage import ArtifactStore

buffer_footage = dg.AssetSpec("buffer_footage", group_name="sources", kinds={"s3", "video"},
                              description="Camera rolling buffer: buffer/<camera>/<YYYY-MM-DD>/<HHMMSS>.mp4 and "
                                          "buffer/quality/<YYYY-MM-DD>.parquet. Never modified by the pipeline.")


def clip_partition_key(key: str) -> str:
    """`buffer/cam1/2026-07-01/080000.mp4` -> `cam1|2026-07-01|080000`."""
    camera, day, name = keys.buffer_clip_parts(key)
    return f"{camera}|{day}|{name.rsplit('.', 1)[0]}"


def clip_key(partition_key: str) -> str:
    camera, day, name = partition_key.split("|")
    return f"{keys.BUFFER_PREFIX}{camera}/{day}/{name}.mp4"


class BufferFramesConfig(dg.Config):
    step_s: float = 30.0  # the plan: 1 frame every 30 s per camera


@dg.asset(partitions_def=buffer_clip_partitions, deps=[buffer_footage], group_name="footage", kinds={"video"})
def buffer_frames(context: dg.AssetExecutionContext, config: BufferFramesConfig,
                  store: ArtifactStore) -> dg.MaterializeResult:
    """Exact frames of one buffer clip, 1 every 30 s."""
    key = clip_key(context.partition_key)
    camera, day, name = keys.buffer_clip_parts(key)
    with quarantine_bad_footage(store, key), store.local_copy(key) as local:
        info = probe_video(local)
    video_id = f"{camera}_{day}_{name.rsplit('.', 1)[0]}"
    prefix = keys.buffer_frames_prefix(camera, day, name.rsplit('.', 1)[0])
    table = extract_to_store(store, key, buffer_targets(info.usable_duration_s, config.step_s), source="buffer",
                             video_id=video_id, frame_prefix=prefix)
    digest = write_parquet(store, f"{prefix}{keys.MANIFEST_FILE}", table)
    return dg.MaterializeResult(metadata={"clip": key, "camera": camera, "day": day, "frames": len(table),
                                          "duration_s": round(info.usable_duration_s, 3), "manifest_sha256": digest})


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
    package = write_package(store, frames["frame_key"].tolist() if len(frames) else [], f"hard_examples_{month}",
                            where.task_package)
    store.write_bytes(where.sample, json.dumps({**info, "month": month}, indent=2).encode())
    per_camera_day = chosen.groupby(["camera", "day"]).size().rename("frames").reset_index() if len(chosen) else \
        pd.DataFrame()
    return dg.MaterializeResult(metadata={
        "month": month, **{k: v for k, v in info.items()}, "frames_extracted": len(frames),
        "quarantined_clips": len(bad), "quarantined": "\n".join(bad) or "none",
        "package_sha256": package.get("zip_sha256", ""), "package_uri": store.uri(where.task_package),
        "per_camera_day": md_table(per_camera_day)})
