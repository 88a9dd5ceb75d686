"""Label tables, apart from Dagster: what CVAT exports are matched against, which annotator's labels
a frame keeps, the annotators' overlap, and which labelled frames the v0 split is made of. Pure
functions over the tables the assets read from the store.
"""
from __future__ import annotations

import pandas as pd

from pipeline import keys

VIDEO_TASK_PREFIX = "video-"  # annotations/incoming/video-<video_id>/<annotator>/: a CVAT video task of that video
SOURCE_PREFERENCE = ("ops", "stage_a")  # the same video frame extracted twice: labels go to the ops frame


def task_video(task: str) -> str | None:
    """The video_id a task folder names (``video-<video_id>``), else None."""
    return (task[len(VIDEO_TASK_PREFIX):] or None) if task.startswith(VIDEO_TASK_PREFIX) else None


def export_manifest(frames: pd.DataFrame, videos: pd.DataFrame | None) -> pd.DataFrame:
    """What exports are matched against: every frame we extracted (`frames`, the frame manifests), by
    the name it has in a task package and, for video frames (frame_index known, photos excluded), by its
    frame number in its video, with the video's file name (for a video export's <source>; `videos` is
    the video manifest, None when there is none) and the frame size. Ops frames come first, so a frame
    extracted both as an ops and a Stage A frame gets a video task's labels on its ops key."""
    video_files: dict[str, str] = {}
    if videos is not None:
        video_files = dict(zip(videos["video_id"].astype(str), videos["key"].astype(str).str.rsplit("/", n=1).str[-1]))
    frame_index = pd.to_numeric(frames["frame_index"], errors="coerce") if "frame_index" in frames else \
        pd.Series(float("nan"), index=frames.index)
    is_video = (frames["source"] != "photos") & frame_index.notna()
    manifest = pd.DataFrame({
        "frame_key": frames["frame_key"].astype(str),
        "file_name": frames["frame_key"].astype(str).map(keys.package_file_name),
        "source_frame": frame_index.where(is_video).astype("Int64"),
        "video_id": frames["video_id"].astype(str),
        "video_file": frames["video_id"].astype(str).map(video_files).where(frames["source"] != "photos"),
        "width": frames["width"], "height": frames["height"],
    })
    preference = frames["source"].map({s: i for i, s in enumerate(SOURCE_PREFERENCE)}).fillna(len(SOURCE_PREFERENCE))
    order = pd.DataFrame({"p": preference, "k": manifest["frame_key"]}).sort_values(["p", "k"], kind="stable").index
    return manifest.loc[order].reset_index(drop=True)


def overlap_frames(images: pd.DataFrame) -> tuple[str, str, list[str]]:
    """The two annotators with the largest shared set of frames, and those frames."""
    by_annotator = {a: set(g["frame_key"]) for a, g in images.groupby("annotator")}
    names = sorted(by_annotator, key=lambda a: (-len(by_annotator[a]), a))
    best = ("", "", [])
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = sorted(by_annotator[a] & by_annotator[b])
            if len(shared) > len(best[2]):
                best = (a, b, shared)
    return best


def primary_labels(images: pd.DataFrame, boxes: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per frame, the labels of the annotator who labelled the most frames overall (the main
    annotator); the overlap annotator's labels serve agreement only."""
    rank = images.groupby("annotator")["frame_key"].nunique().sort_values(ascending=False)
    order = {a: i for i, a in enumerate(rank.index)}
    chosen = images.assign(_r=images["annotator"].map(order)).sort_values("_r").drop_duplicates("frame_key")
    picked = set(zip(chosen["frame_key"], chosen["annotator"]))
    mask = [t in picked for t in zip(boxes["frame_key"], boxes["annotator"])]
    return chosen.drop(columns="_r"), boxes[mask]


def labelled_frames(frames: pd.DataFrame, images: pd.DataFrame) -> pd.DataFrame:
    """One row per labelled frame with its source video (photos are their own 'video'). Monthly hard
    examples (source 'hard', post-install buffer frames) are not part of the v0 split: Stage C assigns
    them by camera-day, never to the frozen test split (pipeline/versioning.py, docs/retraining.md)."""
    labelled = frames[frames["frame_key"].isin(set(images["frame_key"])) & (frames["source"] != "hard")]
    return labelled.drop_duplicates("frame_key").reset_index(drop=True)


def frame_context(frames: pd.DataFrame, videos: pd.DataFrame) -> pd.DataFrame:
    """Each frame's video, operation and camera (plant photos: operation 'plant photo', camera 'photo')."""
    frames = frames[["frame_key", "video_id"]].drop_duplicates("frame_key")
    table = frames.merge(videos[["video_id", "operation", "camera"]], on="video_id", how="left")
    return table.fillna({"operation": "plant photo", "camera": "photo"})
