"""INT8 calibration discipline: calibrate on training frames only, never build INT8 without it.

TensorRT's INT8 engine takes its activation ranges from a *calibration cache*, produced by running
TensorRT's entropy calibrator over representative frames. Those frames must come from the TRAIN
split of `dataset_split_v0.csv`: calibrating on validation, test or deployment-test frames fits the
quantisation to the frames that later judge the engine (a leak the split exists to prevent).

* `select_calibration_frames` draws frames from the train split only (spread over videos, seeded).
* `check_calibration_frames` refuses any frame of val / test / deployment_test (or one the split
  does not know), naming the frame keys and the remedy.
* `write_calibration_package` writes what the device's calibrator reads: the frames letterboxed
  exactly as the network sees them (lossless PNG), a Polygraphy data loader (`data_loader.py`) that
  turns them into the `images` tensor, and the manifest (`calibration_set.json`).
* `require_int8_calibration` is the gate the engine build goes through: INT8 without a calibration
  set, with a set that holds a non-train frame, made for another ONNX, or without a TensorRT
  calibration cache is refused.

Where the cache is made: on the Jetson, with the TensorRT it will be used with (`trtexec` only
*reads* a cache, `--calib=<file>`; it cannot calibrate from images), e.g.
``polygraphy convert model.onnx --int8 --data-loader-script data_loader.py --calibration-cache calib.cache``
(see docs/deployment.md, "The Jetson").
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from pipeline.errors import PipelineInputError
from pipeline.hashing import sha256_bytes, sha256_file

CALIBRATION_SPLIT = "train"
DEFAULT_FRAMES = 200
CACHE_MAGIC = b"TRT-"  # TensorRT calibration caches start with e.g. "TRT-8601-EntropyCalibration2"
PACKAGE_ROOT = "calibration"
SPLIT_FILE = "dataset_split_v0.csv"

DATA_LOADER = '''\
"""Polygraphy data loader for INT8 calibration (written by the LBZF pipeline; do not edit).

    polygraphy convert model.onnx --int8 --data-loader-script data_loader.py \\
        --calibration-cache calib.cache -o /tmp/calibration-only.engine

Yields {"images": (1, 3, H, W) float32 RGB in [0, 1]} for every frame in frames/: the frames are
already letterboxed to the network size (lossless PNG), so this only reorders and scales.
"""
import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def _read_png(path):
    try:
        import cv2

        image = cv2.imread(path, cv2.IMREAD_COLOR)  # BGR
        if image is None:
            raise OSError(f"cannot read {path}")
        return image
    except ImportError:
        from PIL import Image

        return np.asarray(Image.open(path).convert("RGB"))[..., ::-1]  # RGB -> BGR


def load_data():
    with open(os.path.join(HERE, "calibration_set.json")) as handle:
        manifest = json.load(handle)
    for name in manifest["files"]:
        bgr = _read_png(os.path.join(HERE, "frames", name))
        chw = bgr[..., ::-1].transpose(2, 0, 1)
        yield {manifest["input_name"]: np.ascontiguousarray(chw, dtype=np.float32)[None] / 255.0}
'''


class CalibrationError(PipelineInputError):
    """An INT8 build without proper calibration, or calibration frames from the wrong split."""


def _split_of(split: pd.DataFrame) -> dict[str, str]:
    missing = {"frame_key", "split"} - set(split.columns)
    if missing:
        raise CalibrationError(SPLIT_FILE, ", ".join(sorted(missing)), list(split.columns),
                               "pass the dataset split table (dataset_split_v0.csv: frame_key, split, ...)",
                               problem="not a split table")
    return dict(zip(split["frame_key"].astype(str), split["split"].astype(str)))


def check_calibration_frames(frame_keys: Iterable[str], split: pd.DataFrame, *,
                             source: str = "calibration set") -> None:
    """Refuse calibration frames that are not in the TRAIN split (val/test/deployment_test, or
    unknown to the split); the error names the frame keys and their splits."""
    keys = [str(k) for k in frame_keys]
    if not keys:
        raise CalibrationError(source, "frame_keys", [], "select calibration frames from the train split "
                               "(materialize int8_calibration_set)", problem="no calibration frames")
    where = _split_of(split)
    wrong = [(k, where.get(k, "not in the split")) for k in keys if where.get(k) != CALIBRATION_SPLIT]
    if wrong:
        by_split: dict[str, int] = {}
        for _, s in wrong:
            by_split[s] = by_split.get(s, 0) + 1
        shown = ", ".join(f"{k} ({s})" for k, s in wrong[:10]) + (f", ... {len(wrong) - 10} more" if len(wrong) > 10
                                                                    else "")
        counts = ", ".join(f"{n} {s}" for s, n in sorted(by_split.items()))
        raise CalibrationError(
            source, "frame_keys", shown,
            "INT8 calibration may only use frames of the train split of " + SPLIT_FILE + "; rebuild the calibration "
            "set from the train split (materialize int8_calibration_set) and produce a new calibration cache from it",
            problem=f"{len(wrong)} of {len(keys)} calibration frame(s) are not training frames ({counts})")


def select_calibration_frames(split: pd.DataFrame, n: int = DEFAULT_FRAMES, *, seed: int = 0) -> list[str]:
    """Up to `n` frame keys of the TRAIN split, spread over videos (round robin over the videos in a
    seeded order, frames of each video in a seeded order). Deterministic for a split and seed."""
    if n <= 0:
        raise CalibrationError("calibration set", "n_frames", n, "ask for at least one frame (a few hundred is usual)",
                               problem="no calibration frames asked for")
    _split_of(split)
    train = split[split["split"].astype(str) == CALIBRATION_SPLIT]
    if train.empty:
        raise CalibrationError(SPLIT_FILE, "split", sorted(split["split"].astype(str).unique().tolist()),
                               "INT8 calibration needs training frames; label more footage or use precision='fp16'",
                               problem="the split has no train frames")
    rng = np.random.default_rng(seed)
    group = train["video_id"].astype(str) if "video_id" in train.columns else pd.Series("all", index=train.index)
    queues = []
    for video in sorted(group.unique()):
        frames = sorted(train.loc[group == video, "frame_key"].astype(str))
        queues.append([frames[i] for i in rng.permutation(len(frames))])
    queues = [queues[i] for i in rng.permutation(len(queues))]
    chosen: list[str] = []
    while len(chosen) < n and any(queues):
        for queue in queues:
            if queue and len(chosen) < n:
                chosen.append(queue.pop(0))
    check_calibration_frames(chosen, split)
    return chosen


@dataclass
class CalibrationSet:
    """The manifest of a calibration package (`calibration_set.json`)."""

    frame_keys: list[str]
    split_sha256: str
    onnx_sha256: str
    imgsz: int
    input_name: str = "images"
    files: list[str] = field(default_factory=list)
    frame_sha256: list[str] = field(default_factory=list)  # of each letterboxed PNG, in order
    seed: int = 0
    preprocessing: str = "Ultralytics LetterBox(auto=False) to imgsz, BGR->RGB, CHW, float32 / 255"

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> "CalibrationSet":
        doc = json.loads(data)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in doc.items() if k in known})


def write_calibration_package(frames: Sequence[tuple[str, Path]], out_zip: Path, manifest: CalibrationSet) -> Path:
    """A zip with calibration/frames/<i>.png (letterboxed exactly as the network sees them),
    calibration/data_loader.py and calibration/calibration_set.json. `manifest.files` and
    `manifest.frame_sha256` are filled in here."""
    import cv2

    from pipeline.export import letterboxed_uint8

    if [k for k, _ in frames] != list(manifest.frame_keys):
        raise ValueError("frames and manifest.frame_keys must list the same frames in the same order")
    manifest.files, manifest.frame_sha256 = [], []
    out_zip = Path(out_zip)
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out_zip, "w", compression=zipfile.ZIP_STORED) as archive:
        for index, (_, path) in enumerate(frames):
            boxed, _ = letterboxed_uint8(Path(path), manifest.imgsz)
            ok, png = cv2.imencode(".png", boxed)
            if not ok:
                raise PipelineInputError(str(path), "image", None, "check the frame", problem="cannot encode PNG")
            name = f"{index:06d}.png"
            data = png.tobytes()
            archive.writestr(f"{PACKAGE_ROOT}/frames/{name}", data)
            manifest.files.append(name)
            manifest.frame_sha256.append(sha256_bytes(data))
        archive.writestr(f"{PACKAGE_ROOT}/data_loader.py", DATA_LOADER)
        archive.writestr(f"{PACKAGE_ROOT}/calibration_set.json", manifest.to_json())
    return out_zip


def require_int8_calibration(precision: str, *, manifest: CalibrationSet | None, cache: Path | None,
                             split: pd.DataFrame, onnx_sha256: str | None = None,
                             manifest_where: str = "calibration_set.json",
                             cache_where: str = "calibration cache") -> dict | None:
    """The INT8 gate. None for other precisions; for INT8 the provenance to record, or a
    `CalibrationError` when the calibration is missing, from the wrong split or for another ONNX."""
    if precision != "int8":
        return None
    remedy = ("materialize int8_calibration_set (train-split frames), produce the cache on the Jetson from it (see "
              "docs/deployment.md, 'The Jetson'), upload it, then build again; or use precision='fp16'")
    if manifest is None:
        raise CalibrationError(manifest_where, "calibration set", None, remedy,
                               problem="INT8 refused: no calibration set (calibration frames from the train split)")
    check_calibration_frames(manifest.frame_keys, split, source=manifest_where)
    if onnx_sha256 and manifest.onnx_sha256 and manifest.onnx_sha256 != onnx_sha256:
        raise CalibrationError(manifest_where, "onnx_sha256", manifest.onnx_sha256,
                               f"the calibration set was made for another ONNX (this one is {onnx_sha256}); " + remedy,
                               problem="INT8 refused: calibration set belongs to another model")
    if cache is None or not Path(cache).is_file() or Path(cache).stat().st_size == 0:
        raise CalibrationError(cache_where, "calibration cache", str(cache) if cache else None, remedy,
                               problem="INT8 refused: no calibration cache")
    with open(cache, "rb") as handle:
        head = handle.read(len(CACHE_MAGIC))
    if head != CACHE_MAGIC:
        raise CalibrationError(cache_where, "calibration cache", head.decode("latin-1"),
                               "upload the file TensorRT's calibrator wrote (its first line reads like "
                               "'TRT-8601-EntropyCalibration2'); " + remedy,
                               problem="INT8 refused: not a TensorRT calibration cache")
    return {"calibration_frames": len(manifest.frame_keys), "calibration_split": CALIBRATION_SPLIT,
            "calibration_split_sha256": manifest.split_sha256, "calibration_onnx_sha256": manifest.onnx_sha256,
            "int8_calib_cache_sha256": sha256_file(cache)}
