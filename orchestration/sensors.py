"""Sensors: new buffer footage, new CVAT exports, a month's hard-example labels imported."""

import json

import dagster as dg

from assets.buffer import clip_partition_key
from assets.store_io import read_parquet
from orchestration.partitions import buffer_clip_partitions
from pipeline import keys
from pipeline.buffer_listing import Backfill, BufferCursor, scan
from pipeline.retraining import task_name
from orchestration.jobs import annotations_job, buffer_frames_job, retraining_resume_job
from resources.storage import ArtifactStore


class BufferSensorSettings(dg.ConfigurableResource):
    """How far the buffer sensor looks: a camera's first tick backfills `backfill_days` before its
    newest day; each tick re-lists `overlap_days` before each camera's own newest day, every new day
    folder and every day that changed within `hot_s` seconds; every `full_listing_s` it enumerates every
    day folder, so a backlog uploaded out of order is found (pipeline/buffer_listing.py)."""

    backfill_days: int = 7
    overlap_days: int = 1
    hot_s: float = 3600.0
    full_listing_s: float = 3600.0  # how often every camera's day folders are enumerated in full


@dg.sensor(job=buffer_frames_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Registers each new, fully uploaded buffer clip as a partition and requests its frames "
                       "(one cursor per camera; a first tick backfills, bounded).")
def buffer_footage_sensor(context: dg.SensorEvaluationContext, store: ArtifactStore,
                          buffer_sensor_settings: BufferSensorSettings) -> dg.SensorResult:
    cursor = BufferCursor.parse(context.cursor)
    listing = lambda prefix: ((i.key, i.size, i.etag, i.last_modified) for i in store.list_keys(prefix))  # noqa: E731
    ignored: list[tuple[str, str]] = []
    backfills: list[Backfill] = []
    settings = buffer_sensor_settings
    ready, new_cursor = scan(cursor, store.list_prefixes, listing, ignored=ignored, backfills=backfills,
                             backfill_days=settings.backfill_days, overlap_days=settings.overlap_days,
                             hot_s=settings.hot_s, full_listing_s=settings.full_listing_s)
    for backfill in backfills:
        context.log.info(f"buffer sensor, first tick for a camera: {backfill.describe()} "
                         f"(backfill_days={settings.backfill_days})")
    if ignored:  # a mis-configured camera uploads where nothing will ever pick it up: say so every tick
        shown = "; ".join(f"{key} ({why})" for key, why in ignored[:5])
        context.log.warning(f"{len(ignored)} key(s) under {keys.BUFFER_PREFIX} outside the buffer layout were "
                            f"ignored (no run): {shown}{' ...' if len(ignored) > 5 else ''}. Remedy: upload clips as "
                            f"{keys.BUFFER_PREFIX}<camera>/<YYYY-MM-DD>/<HHMMSS>.mp4")
    partitions = [clip_partition_key(c.key) for c in ready]
    runs = [dg.RunRequest(run_key=c.run_key, partition_key=p, tags={"lbzf/clip": c.key})
            for c, p in zip(ready, partitions)]
    return dg.SensorResult(
        run_requests=runs, cursor=new_cursor.dump(),
        dynamic_partitions_requests=[buffer_clip_partitions.build_add_request(partitions)] if partitions else [],
    )


@dg.sensor(job=annotations_job, minimum_interval_seconds=120, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Requests an annotation import when a CVAT export lands (or changes) in annotations/incoming/.")
def annotation_exports_sensor(context: dg.SensorEvaluationContext, store: ArtifactStore) -> dg.SensorResult:
    previous = json.loads(context.cursor) if context.cursor else {"seen": {}, "done": {}}
    seen, done = previous["seen"], previous["done"]
    current = {i.key: [i.size, i.etag] for i in store.list_keys(keys.INCOMING_ANNOTATIONS)
               if i.key.endswith((".zip", ".json", ".xml"))}
    stable_new = sorted(k for k, v in current.items() if seen.get(k) == v and done.get(k) != v[1])
    runs = []
    if stable_new:
        tag = ",".join(f"{k}@{current[k][1]}" for k in stable_new)
        runs.append(dg.RunRequest(run_key=tag, tags={"lbzf/exports": str(len(stable_new))}))
        for k in stable_new:
            done[k] = current[k][1]
    done = {k: v for k, v in done.items() if k in current}
    return dg.SensorResult(run_requests=runs, cursor=json.dumps({"seen": current, "done": done}, sort_keys=True))


@dg.sensor(job=retraining_resume_job, minimum_interval_seconds=120, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Resumes a month waiting for hard-example labels once its CVAT export has been imported.")
def hard_example_labels_sensor(context: dg.SensorEvaluationContext, store: ArtifactStore) -> dg.SensorResult:
    instance = context.instance
    sent = instance.get_materialized_partitions(dg.AssetKey("hard_examples"))
    done = instance.get_materialized_partitions(dg.AssetKey("hard_example_labels"))
    waiting = sorted(set(sent) - set(done))
    if not waiting or not store.exists(keys.ANNOTATION_IMAGES):
        return dg.SensorResult(skip_reason=f"{len(waiting)} month(s) waiting; no labels imported yet")
    info = store.stat(keys.ANNOTATION_IMAGES)
    tasks = set(read_parquet(store, keys.ANNOTATION_IMAGES)["task"].astype(str))
    runs = [dg.RunRequest(run_key=f"{p}@{info.etag}", partition_key=p, tags={"lbzf/resumed": "labels imported"})
            for p in waiting if task_name(p[:7]) in tasks]
    if not runs:
        return dg.SensorResult(skip_reason=f"waiting for labels of {', '.join(task_name(p[:7]) for p in waiting)}")
    return dg.SensorResult(run_requests=runs)
