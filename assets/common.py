"""Small glue shared by assets: move frames and tables between the store and the core."""

import io
import tempfile
from pathlib import Path

import dagster as dg
import pandas as pd

from pipeline import keys
from pipeline.frames import extract_frames
from pipeline.hashing import sha256_bytes
from pipeline.quarantine import quarantine_bad_footage
from resources.storage import ArtifactStore

FRAME_COLUMNS = ["frame_key", "source", "video_id", "video_sha256", "target_s", "actual_s", "frame_index", "width",
                 "height", "jpeg_sha256"]


def read_parquet(store: ArtifactStore, key: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(store.read_bytes(key)))


def write_parquet(store: ArtifactStore, key: str, table: pd.DataFrame) -> str:
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    data = buffer.getvalue()
    store.write_bytes(key, data)
    return sha256_bytes(data)


def extract_to_store(store: ArtifactStore, video_key: str, targets: list[float], *, source: str,
                     video_id: str, frame_prefix: str) -> pd.DataFrame:
    """Extract exact frames of a stored video and put the JPEGs under `frame_prefix`; the source is
    read through a local copy and never written. JPEGs are uploaded only after the whole extraction
    succeeded; bad footage is quarantined (`pipeline.quarantine`) and the error re-raised."""
    with (quarantine_bad_footage(store, video_key), store.local_copy(video_key) as video,
          tempfile.TemporaryDirectory(prefix="lbzf-frames-") as tmp):
        records = extract_frames(Path(video), targets, Path(tmp), video_id=video_id)
        rows = []
        for record in records:
            key = f"{frame_prefix}{record.jpeg_name}"
            store.upload_file(Path(tmp) / record.jpeg_name, key)
            rows.append({**record.to_dict(), "frame_key": key, "source": source})
    return pd.DataFrame(rows)[FRAME_COLUMNS] if rows else pd.DataFrame(columns=FRAME_COLUMNS)


def md_table(table: pd.DataFrame, max_rows: int = 40) -> dg.MetadataValue:
    shown = table.head(max_rows)
    text = shown.to_markdown(index=False) if len(shown) else "(empty)"
    if len(table) > max_rows:
        text += f"\n\n… {len(table) - max_rows} more rows"
    return dg.MetadataValue.md(text)


def load_frame_manifests(store: ArtifactStore, prefix: str = keys.FRAMES_PREFIX) -> pd.DataFrame:
    """Every extracted frame the store knows of (all `manifest.parquet` under `prefix`)."""
    tables = [read_parquet(store, info.key) for info in store.list_keys(prefix) if info.key.endswith(keys.MANIFEST_FILE)]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=FRAME_COLUMNS)


def write_package(store: ArtifactStore, frame_keys: list[str], task: str, package_key: str) -> dict:
    """A CVAT task package (images + manifest.csv) for `frame_keys`, stored at `package_key`; the
    manifest records what was sent so the returning export can be reconciled."""
    from pipeline.cvat import write_task_package
    from pipeline.keys import package_file_name

    if not frame_keys:
        return {}
    with tempfile.TemporaryDirectory(prefix="lbzf-package-") as tmp:
        local = []
        for key in frame_keys:
            local.append((key, Path(tmp) / package_file_name(key)))
            store.download_file(key, local[-1][1])
        package = write_task_package(local, Path(tmp) / "package.zip", task=task)
        store.upload_file(Path(package["zip_path"]), package_key)
    return package


class RecipeConfig(dg.Config):
    """A training recipe from the launchpad (the plan's, by default); every field maps to an
    Ultralytics train argument, `extra` takes any other."""

    imgsz: int = 640
    epochs: int = 50
    batch: int = 32
    optimizer: str = "SGD"
    lr0: float = 0.01
    cos_lr: bool = True
    patience: int = 10
    fliplr: float = 0.0
    mixup: float = 0.0
    seed: int = 0
    extra: dict = {}

    def recipe(self):
        from pipeline.training import TrainingRecipe

        return TrainingRecipe(self.imgsz, self.epochs, self.batch, self.optimizer, self.lr0, self.cos_lr,
                              self.patience, self.fliplr, self.mixup, self.seed, extra=dict(self.extra))
