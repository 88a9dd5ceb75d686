"""Storage key layout: one place that knows how keys are spelled.

Keys are POSIX paths relative to the store root (see docs/ARCHITECTURE.md "Storage").
"""
from __future__ import annotations

VIDEOS_PREFIX = "raw/videos/"
VIDEO_MANIFEST = "raw/videos/manifest.csv"
PHOTOS_PREFIX = "raw/photos/"
BUFFER_PREFIX = "buffer/"
QUALITY_PREFIX = "buffer/quality/"
INCOMING_ANNOTATIONS = "annotations/incoming/"


def frame_key(source: str, video_id: str, target_s: float) -> str:
    """Key of one extracted frame: named by its target time in ms, so names are stable and sortable."""
    return f"frames/{source}/{video_id}/{round(target_s * 1000):09d}.jpg"


def frames_manifest_key(source: str, video_id: str) -> str:
    return f"frames/{source}/{video_id}/manifest.parquet"


def package_file_name(key: str) -> str:
    """Flat, CVAT-safe image name for a frame key: `frames/ops/v1/000002000.jpg` -> `ops__v1__000002000.jpg`."""
    parts = key.split("/")
    if parts and parts[0] == "frames":
        parts = parts[1:]
    return "__".join(parts)


def dataset_prefix(version: str) -> str:
    return f"datasets/lbzf_person_{version}/"


def model_prefix(name: str) -> str:
    return f"models/{name}/"


def buffer_clip_parts(key: str) -> tuple[str, str, str] | None:
    """(camera, day, clip_name) for `buffer/<camera>/<YYYY-MM-DD>/<HHMMSS>.mp4`, else None."""
    parts = key.split("/")
    if len(parts) != 4 or parts[0] != "buffer" or parts[1] == "quality" or not parts[3].endswith(".mp4"):
        return None
    day = parts[2]
    if len(day) != 10 or day[4] != "-" or day[7] != "-":
        return None
    return parts[1], day, parts[3]


TRAIN_RUNS_PREFIX = "train_runs/"


def train_run_prefix(name: str) -> str:
    """Where a training run's folder is kept while it trains (`pipeline.train_runs`): `train_runs/<run>/`."""
    return f"{TRAIN_RUNS_PREFIX}{name}/"
