"""read_export: one CVAT export in, one normalized box table (and image table) out."""
from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.cvat.archive import ArchiveLimits, _coco_subset, _head, _read_directory, _read_zip, _sniff
from pipeline.cvat.coco import _parse_coco
from pipeline.cvat.common import BOX_COLUMNS, IMAGE_COLUMNS, _FORMAT_REMEDY, _NUM, _Parsed
from pipeline.cvat.cvat_xml import _parse_xml
from pipeline.cvat.mapping import LabelMapping
from pipeline.cvat.matching import _frame_keys
from pipeline.errors import AnnotationError, PipelineInputError
from pipeline.hashing import sha256_bytes, sha256_file


@dataclass
class ImportResult:
    table: pd.DataFrame     # one row per box (BOX_COLUMNS)
    images: pd.DataFrame    # one row per image / video frame, negatives included (IMAGE_COLUMNS)
    counts: dict
    format: str             # "coco" | "cvat_images" | "cvat_video"
    export_file: str
    export_sha256: str
    video_id: str | None = None       # video exports matched to a manifest: our video the task was made from
    video_source: str | None = None   # video exports: the file name in the export's <meta><source>


def read_export(path: Path, *, annotator: str, task: str, mapping: LabelMapping,
                frame_manifest: pd.DataFrame | None = None, clip_tolerance_px: float = 2.0,
                non_box_shapes: str = "error", limits: ArchiveLimits = ArchiveLimits(),
                video: str | None = None) -> ImportResult:
    """Import one CVAT export (zip, bare .json/.xml, or unpacked directory) into an ImportResult.

    ``frame_manifest`` (columns ``frame_key``, ``file_name``, optional ``source_frame``): the manifest of
    the task package sent to CVAT; every export image must resolve to one of its frame keys by file name
    (or, for video exports, by ``source_frame`` when the manifest has it). Without it, ``frame_key`` is the
    export's file name. Boxes overshooting the image by at most ``clip_tolerance_px`` are clipped and
    counted; beyond that they are an error.

    Video exports and a manifest holding several videos: optional manifest columns ``video_id`` and
    ``video_file`` (the video's file name), ``width``/``height``; ``video`` names the video_id the CVAT task
    was made from (ignored for image exports). See the module docstring for the rules. Where several manifest
    rows of the video carry the same ``source_frame`` (the same frame extracted twice), the first row wins:
    order the manifest by preference.
    """
    path = Path(path)
    shown = str(path)
    for name, value in (("annotator", annotator), ("task", task)):
        if not isinstance(value, str) or not value.strip():
            raise PipelineInputError(shown, name, value, f"pass a non-empty {name} name", problem=f"missing {name}")
    if not isinstance(mapping, LabelMapping):
        raise PipelineInputError(shown, "mapping", type(mapping).__name__, "pass a LabelMapping",
                                 problem="bad label mapping")
    if not (isinstance(clip_tolerance_px, _NUM) and clip_tolerance_px >= 0 and math.isfinite(clip_tolerance_px)):
        raise PipelineInputError(shown, "clip_tolerance_px", clip_tolerance_px, "use a finite value >= 0")
    if non_box_shapes not in ("error", "skip"):
        raise PipelineInputError(shown, "non_box_shapes", non_box_shapes, "use 'error' or 'skip'")
    if video is not None and (not isinstance(video, str) or not video.strip()):
        raise PipelineInputError(shown, "video", video, "pass our video_id, or None to use the export's <source>")
    if not path.exists():
        raise AnnotationError(shown, "path", shown, "check the path of the downloaded export",
                              problem="export file not found")

    parsed = _Parsed(mapping=mapping, non_box=non_box_shapes)
    if path.is_dir():
        export_sha = _read_directory(path, parsed, limits)
    elif zipfile.is_zipfile(path):
        export_sha = sha256_file(path)
        _read_zip(path, parsed, limits)
    else:
        size = path.stat().st_size
        if size > limits.max_total_bytes:
            raise AnnotationError(shown, "size", size, f"exports above {limits.max_total_bytes} bytes are refused; "
                                  "split the task or raise ArchiveLimits.max_total_bytes", problem="file too large")
        data = path.read_bytes()
        export_sha = sha256_bytes(data)
        kind = _sniff(data, path.name)
        if kind is None:
            raise AnnotationError(shown, "format", _head(data), _FORMAT_REMEDY, problem="unrecognised export format")
        if kind == "json":
            _parse_coco(data, shown, _coco_subset(path.name), parsed)
        else:
            _parse_xml(data, shown, "", parsed)
    if parsed.format is None:
        raise AnnotationError(shown, "format", None, _FORMAT_REMEDY, problem="no annotations found in the export")
    return _finalize(parsed, export_file=path.name, export_sha=export_sha, annotator=annotator, task=task,
                     manifest=frame_manifest, tol=float(clip_tolerance_px), shown=shown, video=video)


def _finalize(p: _Parsed, *, export_file: str, export_sha: str, annotator: str, task: str,
              manifest: pd.DataFrame | None, tol: float, shown: str, video: str | None = None) -> ImportResult:
    n_img = len(p.img_id)
    img_w = np.asarray(p.img_w, dtype=np.int64)
    img_h = np.asarray(p.img_h, dtype=np.int64)
    b_img = np.asarray(p.b_img, dtype=np.int64)
    labels = np.asarray(p.b_label, dtype=object)

    # labels -> classes (one lookup per distinct label)
    keep = np.ones(len(b_img), bool)
    class_name = np.empty(len(b_img), dtype=object)
    class_id = np.zeros(len(b_img), dtype=np.int64)
    ignored: dict[str, int] = {}
    if len(b_img):
        uniq, inverse = np.unique(labels.astype(str), return_inverse=True)
        unmapped: list[tuple[str, int, int]] = []  # (label, boxes, first box)
        for u, label in enumerate(uniq.tolist()):
            members = inverse == u
            try:
                resolved = p.mapping.resolve(label)
            except KeyError:
                unmapped.append((label, int(members.sum()), int(np.flatnonzero(members)[0])))
                continue
            if resolved is None:
                keep[members] = False
                ignored[label] = int(members.sum())
            else:
                class_name[members] = resolved[0]
                class_id[members] = resolved[1]
        if unmapped:
            _unmapped_labels(p, b_img, unmapped)
    n_ignored = np.bincount(b_img[~keep], minlength=n_img) if n_img else np.zeros(0, np.int64)

    idx = np.flatnonzero(keep)
    bi = b_img[idx]
    coords = np.concatenate(p.coords) if p.coords else np.zeros((0, 4))
    x1, y1, x2, y2 = (coords[idx, c].copy() for c in range(4))
    rot = np.asarray(p.b_rot, dtype=np.float64)[idx]
    turned = np.flatnonzero(np.isfinite(rot) & (rot % 360.0 != 0.0))
    if turned.size:  # a rotated rectangle becomes its axis-aligned bounding box
        cx, cy = (x1[turned] + x2[turned]) / 2, (y1[turned] + y2[turned]) / 2
        w, h = x2[turned] - x1[turned], y2[turned] - y1[turned]
        th = np.deg2rad(rot[turned])
        hw = (np.abs(w * np.cos(th)) + np.abs(h * np.sin(th))) / 2
        hh = (np.abs(w * np.sin(th)) + np.abs(h * np.cos(th))) / 2
        x1[turned], x2[turned], y1[turned], y2[turned] = cx - hw, cx + hw, cy - hh, cy + hh

    def box_error(bad: np.ndarray, problem: str, remedy: str) -> None:
        where = np.flatnonzero(bad)
        if not where.size:
            return
        k = int(where[0])
        j = int(idx[k])
        ref, value = _describe(p, j)
        if value is None:
            value = [round(float(v), 3) for v in (x1[k], y1[k], x2[k], y2[k])]
        more = f" ({where.size - 1} more boxes like it)" if where.size > 1 else ""
        raise AnnotationError(p.img_src[bi[k]], ref, value,
                              remedy + f"; image {p.img_file[bi[k]]!r} is {img_w[bi[k]]}x{img_h[bi[k]]}",
                              problem=problem + more)

    finite = np.isfinite(x1) & np.isfinite(y1) & np.isfinite(x2) & np.isfinite(y2)
    box_error(~finite | ~(x2 - x1 > 0) | ~(y2 - y1 > 0), "box width/height negative, zero or NaN",
              "fix or delete the box in CVAT and export again")
    W, H = img_w[bi].astype(np.float64), img_h[bi].astype(np.float64)
    box_error((x1 < -tol) | (y1 < -tol) | (x2 > W + tol) | (y2 > H + tol),
              f"box outside the image by more than {tol:g} px",
              "fix the box in CVAT (or the image size), then export again")
    cx1, cy1 = np.clip(x1, 0.0, W), np.clip(y1, 0.0, H)
    cx2, cy2 = np.clip(x2, 0.0, W), np.clip(y2, 0.0, H)
    clipped = (cx1 != x1) | (cy1 != y1) | (cx2 != x2) | (cy2 != y2)
    box_error(~(cx2 - cx1 > 0) | ~(cy2 - cy1 > 0), "box lies entirely outside the image",
              "delete the box in CVAT and export again")

    # frame keys
    frame_keys, unmatched_manifest = _frame_keys(p, manifest, shown, video)
    subsets = np.asarray(p.img_subset, dtype=object)
    img_frame = _nullable_int(p.img_frame)
    img_ids = np.asarray(p.img_id, dtype=np.int64)
    img_files = np.asarray(p.img_file, dtype=object)
    n_boxes = np.bincount(bi, minlength=n_img) if n_img else np.zeros(0, np.int64)

    images = pd.DataFrame({
        "export_file": np.full(n_img, export_file, dtype=object),
        "export_sha256": np.full(n_img, export_sha, dtype=object),
        "annotator": np.full(n_img, annotator, dtype=object),
        "task": np.full(n_img, task, dtype=object),
        "image_id": img_ids,
        "file_name": img_files,
        "frame_key": frame_keys,
        "width": img_w,
        "height": img_h,
        "source_frame": img_frame,
        "subset": subsets,
        "n_boxes": n_boxes.astype(np.int64),
        "n_ignored": n_ignored.astype(np.int64),
    }, columns=IMAGE_COLUMNS)

    nb = len(idx)
    track = [p.b_track[j] for j in idx.tolist()] if nb else []
    table = pd.DataFrame({
        "export_file": np.full(nb, export_file, dtype=object),
        "export_sha256": np.full(nb, export_sha, dtype=object),
        "annotator": np.full(nb, annotator, dtype=object),
        "task": np.full(nb, task, dtype=object),
        "image_id": img_ids[bi],
        "file_name": img_files[bi],
        "frame_key": frame_keys[bi],
        "width": img_w[bi],
        "height": img_h[bi],
        "label": labels[idx],
        "class_name": class_name[idx],
        "class_id": class_id[idx],
        "x1": cx1, "y1": cy1, "x2": cx2, "y2": cy2,
        "clipped": clipped,
        "occluded": np.asarray(p.b_occ, dtype=bool)[idx],
        "track_id": _nullable_int(track),
        "source_frame": img_frame[bi] if nb else _nullable_int([]),
        "subset": subsets[bi],
    }, columns=BOX_COLUMNS)

    per_label: dict[str, int] = {}
    if nb:
        lab, cnt = np.unique(labels[idx].astype(str), return_counts=True)
        per_label = {str(k): int(v) for k, v in zip(lab, cnt)}
    per_class = {name: int(np.count_nonzero(class_id[idx] == i)) for i, name in enumerate(p.mapping.classes)}
    counts = {
        "format": p.format,
        "images": n_img,
        "boxes": nb,
        "negatives": int(np.count_nonzero(n_boxes == 0)),
        "clipped": int(np.count_nonzero(clipped)),
        "ignored_labels": ignored,
        "ignored_boxes": int(sum(ignored.values())),
        "per_label": per_label,
        "per_class": per_class,
        "non_box_shapes": dict(sorted(p.non_box_counts.items())),
        "outside_shapes": int(p.hidden),
        "manifest_frames_not_in_export": unmatched_manifest,
        "video_id": p.video_matched,
        "video_source": p.video_source,
    }
    return ImportResult(table=table, images=images, counts=counts, format=p.format or "", export_file=export_file,
                        export_sha256=export_sha, video_id=p.video_matched, video_source=p.video_source)


def _unmapped_labels(p: _Parsed, b_img: np.ndarray, unmapped: list[tuple[str, int, int]]) -> None:
    """One error listing every label of the export that is neither mapped nor ignored."""
    first = min(j for _, _, j in unmapped)
    detail = "; ".join(f"{label!r}: {n} box{'es' if n != 1 else ''}, first at "
                       f"{_describe(p, j)[0].removesuffix('.bbox')}" for label, n, j in unmapped)
    names = [label for label, _, _ in unmapped]
    raise AnnotationError(p.img_src[b_img[first]], "labels", names,
                          f"map each of {names} to one of the classes {p.mapping.classes} or ignore it "
                          "(LabelMapping.mapping / .ignore; for the annotations asset, its run config label_mapping / "
                          f"ignore_labels), then import again; mapped or ignored now: {p.mapping.allowed()}",
                          problem=f"unmapped label{'s' if len(names) != 1 else ''} ({len(names)}): {detail}")


def _describe(p: _Parsed, j: int) -> tuple[str, Any]:
    """(field, value as written) of box j, for an error message."""
    ref, raw = p.b_ref[j], p.b_raw[j]
    if isinstance(ref, int):  # COCO: index into 'annotations'
        return f"annotations[{ref}] (id {raw.get('id')}).bbox", raw.get("bbox")
    if isinstance(ref, tuple):  # video: (track id, frame, explicit shape?)
        tid, frame, exact = ref
        return f"track {tid} frame {frame}" + ("" if exact else " (interpolated)"), None
    return ref, raw


def _nullable_int(values: list) -> pd.arrays.IntegerArray:
    n = len(values)
    mask = np.fromiter((v is None for v in values), dtype=bool, count=n)
    data = np.fromiter((0 if v is None else v for v in values), dtype=np.int64, count=n)
    return pd.arrays.IntegerArray(data, mask)
