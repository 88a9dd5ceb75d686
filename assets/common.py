"""Small glue shared by assets: frames extracted into the store, CVAT task packages, launchpad configs
(the store readers are in assets/store_io.py)."""

import dataclasses
import tempfile
import typing
from pathlib import Path

import dagster as dg
import pandas as pd
import pydantic

from pipeline.frames import extract_frames
from pipeline.quarantine import quarantine_bad_footage
from pipeline.training import TrainingRecipe
from resources.storage import ArtifactStore

FRAME_COLUMNS = ["frame_key", "source", "video_id", "video_sha256", "target_s", "actual_s", "frame_index", "width",
                 "height", "jpeg_sha256"]


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


def config_from(settings: type, *, exclude: tuple[str, ...] = ()) -> type[dg.Config]:
    """A launchpad Config with the fields, types and defaults of the core's settings dataclass, so the two
    cannot drift apart (subclass it to add asset-only fields); `to_settings` turns one back into the other."""
    hints = typing.get_type_hints(settings)
    fields = {f.name: (hints[f.name], f.default if f.default is not dataclasses.MISSING else f.default_factory())
              for f in dataclasses.fields(settings) if f.name not in exclude}
    return pydantic.create_model(f"{settings.__name__}Fields", __base__=dg.Config, **fields)


def to_settings(settings: type, config: dg.Config, **overrides):
    """The core's settings dataclass from a Config made by `config_from`, field by field by name."""
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(settings) if f.name in type(config).model_fields}
    return settings(**{**values, **overrides})


class RecipeConfig(config_from(TrainingRecipe, exclude=("device", "workers"))):
    """A training recipe from the launchpad (the plan's, by default); every field maps to an
    Ultralytics train argument, `extra` takes any other."""

    def recipe(self) -> TrainingRecipe:
        return to_settings(TrainingRecipe, self, extra=dict(self.extra))
