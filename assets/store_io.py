"""The store readers (and table writers) shared by assets: one home for each, so every asset reads a
table, the split, the video manifest, the labels or the selected model the same way."""

import io
import json
from pathlib import Path

import pandas as pd

from assets.common import FRAME_COLUMNS
from pipeline import keys
from pipeline.errors import PipelineInputError
from pipeline.hashing import sha256_bytes
from pipeline.labels import frame_context, primary_labels
from pipeline.yolo_dataset import localize_yaml
from resources.storage import ArtifactStore

MANIFEST_COLUMNS = ["video_id", "key", "operation", "camera", "recorded_day", "post_install"]


def read_parquet(store: ArtifactStore, key: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(store.read_bytes(key)))


def write_parquet(store: ArtifactStore, key: str, table: pd.DataFrame) -> str:
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    data = buffer.getvalue()
    store.write_bytes(key, data)
    return sha256_bytes(data)


def read_json(store: ArtifactStore, key: str):
    return json.loads(store.read_bytes(key))


def write_json(store: ArtifactStore, key: str, doc) -> str:
    """`doc` as indented, key-sorted JSON at `key`; returns its sha256."""
    data = json.dumps(doc, indent=2, sort_keys=True, default=str).encode()
    store.write_bytes(key, data)
    return sha256_bytes(data)


def load_frame_manifests(store: ArtifactStore, prefix: str = keys.FRAMES_PREFIX) -> pd.DataFrame:
    """Every extracted frame the store knows of (all `manifest.parquet` under `prefix`)."""
    tables = [read_parquet(store, info.key) for info in store.list_keys(prefix) if info.key.endswith(keys.MANIFEST_FILE)]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=FRAME_COLUMNS)


def read_video_manifest(store: ArtifactStore) -> pd.DataFrame:
    data = store.read_bytes(keys.VIDEO_MANIFEST)
    table = pd.read_csv(io.BytesIO(data), dtype={"recorded_day": str, "video_id": str})
    missing = [c for c in MANIFEST_COLUMNS if c not in table.columns]
    if missing:
        raise PipelineInputError(keys.VIDEO_MANIFEST, ", ".join(missing), list(table.columns),
                                 f"the manifest needs the columns {MANIFEST_COLUMNS}", problem="missing columns")
    duplicated = table["video_id"][table["video_id"].duplicated()]
    if len(duplicated):
        raise PipelineInputError(keys.VIDEO_MANIFEST, "video_id", duplicated.iloc[0],
                                 "give every video a unique id", problem="duplicate video id")
    table["post_install"] = table["post_install"].astype(str).str.lower().isin({"true", "1", "yes"})
    return table


def read_split(store: ArtifactStore) -> pd.DataFrame:
    """dataset_split_v0.csv, the split every version builds on."""
    return pd.read_csv(io.BytesIO(store.read_bytes(keys.BASE_SPLIT)), dtype={"recorded_day": str, "video_id": str,
                                                                             "camera": str, "group": str})


def read_primary_labels(store: ArtifactStore) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The imported labels, the main annotator's per frame (pipeline.labels.primary_labels)."""
    return primary_labels(read_parquet(store, keys.ANNOTATION_IMAGES), read_parquet(store, keys.ANNOTATIONS))


def labelled_set(store: ArtifactStore, frame_keys: set[str] | None = None,
                 classes: list[str] | tuple[str, ...] = ("person",)) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Frames (with video, operation, camera) and their main-annotator boxes of `classes` (person)."""
    chosen, boxes = read_primary_labels(store)
    if frame_keys is not None:
        chosen = chosen[chosen["frame_key"].isin(frame_keys)]
    context = frame_context(load_frame_manifests(store), read_video_manifest(store))
    frames = chosen[["frame_key"]].merge(context, on="frame_key", how="left")
    return frames, boxes[boxes["frame_key"].isin(set(frames["frame_key"])) & boxes["class_name"].isin(list(classes))]


def read_selected(store: ArtifactStore) -> dict:
    """models/selected_model.json: the model that goes forward to export (Stage B's choice)."""
    return json.loads(store.read_bytes(keys.SELECTED_MODEL))


def materialize_dataset(store: ArtifactStore, local_root: Path) -> Path:
    """Copy the stored v0 dataset to a fresh local folder and write a yaml with its absolute path."""
    prefix = keys.dataset_keys(keys.BASE_VERSION).folder
    yaml_key = keys.dataset_keys(keys.BASE_VERSION).yaml
    for sub in ("images/", "labels/"):
        for info in store.list_keys(prefix + sub):
            store.download_file(info.key, local_root / info.key[len(prefix):])
    local_yaml = local_root / Path(yaml_key).name
    local_yaml.write_text(localize_yaml(store.read_bytes(yaml_key).decode(), local_root))
    return local_yaml
