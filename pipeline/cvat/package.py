"""Task packages: our frames zipped, with a manifest, for creating a CVAT task."""
from __future__ import annotations

import os
import re
import shutil
import zipfile
from pathlib import Path

import pandas as pd

from pipeline.errors import PipelineInputError
from pipeline.hashing import sha256_file
from pipeline.keys import package_file_name


_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member time: the same frames give the same package bytes
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]")


def package_name(frame_key: str) -> str:
    """The image name a frame has in a task package: ``keys.package_file_name`` (the same name every other
    module derives from a frame key), checked rather than altered, so that the two can never differ."""
    name = package_file_name(frame_key)
    if (not name or name.startswith(".") or _UNSAFE_NAME.search(name) or name == "manifest.csv"
            or not name.lower().endswith((".jpg", ".jpeg"))):
        raise PipelineInputError("task package", "frame_key", frame_key,
                                 "frame keys must flatten to a plain '<...>.jpg' file name (no '\\', ':', control "
                                 "characters or leading dot); extract the frame under a regular key",
                                 problem="frame key unusable as a CVAT image name")
    return name


def write_task_package(frames: list[tuple[str, Path]], out_zip: Path, task: str) -> dict:
    """Zip of the frames' JPEGs (named ``package_name(frame_key)``) plus ``manifest.csv``
    (file_name, frame_key, sha256) for creating a CVAT task; the manifest is what ``read_export``
    matches the export against. Written atomically; the same frames give the same bytes.

    Returns ``{"task", "zip_path", "zip_sha256", "frames", "manifest"}`` with ``manifest`` a list of row
    dicts (``pd.DataFrame(result["manifest"])``).
    """
    out_zip = Path(out_zip)
    if not isinstance(task, str) or not task.strip():
        raise PipelineInputError(str(out_zip), "task", task, "pass a non-empty task name", problem="missing task")
    if not frames:
        raise PipelineInputError(str(out_zip), "frames", [], "pass at least one (frame_key, jpeg path)",
                                 problem="empty task package")
    rows: list[dict[str, str]] = []
    names: dict[str, str] = {}
    keys: set[str] = set()
    for frame_key, local in frames:
        local = Path(local)
        if frame_key in keys:
            raise PipelineInputError(str(out_zip), "frame_key", frame_key, "list each frame once",
                                     problem="duplicate frame in task package")
        keys.add(frame_key)
        name = package_name(frame_key)
        if name in names:
            raise PipelineInputError(str(out_zip), "file_name", name, f"frame keys {names.get(name)!r} and "
                                     f"{frame_key!r} flatten to the same name; rename one",
                                     problem="file name collision in task package")
        names[name] = frame_key
        if not local.is_file():
            raise PipelineInputError(str(local), "local_path", str(local), "extract the frame again",
                                     problem="frame image missing")
        with open(local, "rb") as handle:
            magic = handle.read(3)
        if magic != b"\xff\xd8\xff":
            raise PipelineInputError(str(local), "local_path", magic, "task packages carry JPEG frames",
                                     problem="not a JPEG file")
        rows.append({"file_name": name, "frame_key": frame_key, "sha256": sha256_file(local)})
    manifest_csv = pd.DataFrame(rows, columns=["file_name", "frame_key", "sha256"]).to_csv(index=False,
                                                                                          lineterminator="\n")
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    partial = out_zip.with_name(out_zip.name + ".partial")
    try:
        with zipfile.ZipFile(partial, "w") as zf:
            for row, (_, local) in zip(rows, frames):
                info = zipfile.ZipInfo(row["file_name"], date_time=_ZIP_TIME)
                info.compress_type = zipfile.ZIP_STORED  # JPEGs do not compress
                info.external_attr = 0o644 << 16
                with open(local, "rb") as src, zf.open(info, "w") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            info = zipfile.ZipInfo("manifest.csv", date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, manifest_csv)
        os.replace(partial, out_zip)
    finally:
        if partial.exists():
            partial.unlink()
    return {"task": task, "zip_path": str(out_zip), "zip_sha256": sha256_file(out_zip), "frames": len(rows),
            "manifest": rows}
