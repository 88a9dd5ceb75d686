"""The camera rolling buffer: frames per clip (1 / 30 s). The monthly hard-example sample is Stage C's
(assets/retraining.py)."""

import dagster as dg

from assets.common import extract_to_store
from assets.store_io import write_parquet
from orchestration.partitions import buffer_clip_partitions
from pipeline import keys
from pipeline.frames import probe_video
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
