"""CVAT exports in, one normalized box table out; task packages (frames for CVAT) out.

Accepted exports (the format is detected from the content, not the file name):

* COCO 1.0: the zip CVAT writes (``annotations/instances_<subset>.json`` plus optional ``images/``),
  the bare ``instances_*.json``, or an unpacked export directory;
* CVAT for images 1.1: ``annotations.xml`` (bare, in a zip or in a directory) with ``<image>`` elements;
* CVAT for video 1.1: ``annotations.xml`` with ``<track>`` elements; frame numbers are absolute video
  frames ``start_frame + k * step`` and boxes are interpolated between keyframes as CVAT does.

A video export is matched to our frames by frame number, within one of our videos: the ``video`` argument
names it (the annotations asset takes it from the task folder ``annotations/incoming/video-<video_id>/``),
else the export's ``<meta><source>`` (the file name CVAT recorded when the video was uploaded) must be the
``video_file`` of exactly one video in the frame manifest. Every frame of the task must be a frame we
extracted from that video (so the task's start frame and frame step must line up with our extraction), and
the export's frame size must be that of our frames; anything else is an error naming what to change.

Only rectangles become boxes. COCO bboxes are rectangles by construction (CVAT converts polygons and
masks). In XML, other shapes (polygon, polyline, points, ellipse, mask, cuboid, skeleton) are counted in
``counts['non_box_shapes']``; one whose label maps to a class is an error by default, because dropping it
would silently turn a person into background (``non_box_shapes="skip"`` only counts them). A rotated
rectangle (CVAT ``rotation``) becomes the axis-aligned box around it.

Every image or frame in the export is a row of ``ImportResult.images``, also those with no box: they are
the negatives. Archives are checked member by member before anything is extracted, and only the
annotation files are extracted, into a ``tempfile.TemporaryDirectory``; the export itself is only read.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import stat
import tempfile
import xml.etree.ElementTree as ET
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import AnnotationError, PipelineInputError
from pipeline.hashing import sha256_bytes, sha256_file
from pipeline.keys import package_file_name

__all__ = [
    "ACCEPTED_FORMATS",
    "ArchiveLimits",
    "BOX_COLUMNS",
    "DEFAULT_LABEL_MAPPING",
    "IMAGE_COLUMNS",
    "ImportResult",
    "LabelMapping",
    "package_name",
    "read_export",
    "write_task_package",
]

DEFAULT_LABEL_MAPPING: dict[str, str] = {
    "person": "person",
    "people": "person",
    "kid": "person",
    "pedestrian": "person",
    "player": "person",
    "worker": "person",
}

ACCEPTED_FORMATS = (
    "CVAT 'COCO 1.0' (zip with annotations/instances_<subset>.json, or that .json alone)",
    "CVAT 'CVAT for images 1.1' (zip with annotations.xml, or that .xml alone)",
    "CVAT 'CVAT for video 1.1' (zip with annotations.xml, or that .xml alone)",
)
_FORMAT_REMEDY = ("export the task from CVAT (Actions > Export task dataset) as one of: "
                  + "; ".join(ACCEPTED_FORMATS))
_REEXPORT = "re-export the task from CVAT and import the file as downloaded, without editing it"
_REEXPORT_SUFFIX = "download the export from CVAT again and import that file unchanged"

BOX_COLUMNS = [
    "export_file", "export_sha256", "annotator", "task", "image_id", "file_name", "frame_key", "width", "height",
    "label", "class_name", "class_id", "x1", "y1", "x2", "y2", "clipped", "occluded", "track_id", "source_frame",
    "subset",
]
IMAGE_COLUMNS = [
    "export_file", "export_sha256", "annotator", "task", "image_id", "file_name", "frame_key", "width", "height",
    "source_frame", "subset", "n_boxes", "n_ignored",
]

_NUM = (int, float)
_NUMSET = frozenset(_NUM)
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member time: the same frames give the same package bytes
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]")


# --------------------------------------------------------------------------------------------- public types


def _norm_label(label: str) -> str:
    return str(label).strip().casefold()



@dataclass
class LabelMapping:
    """CVAT label name (case-insensitive) -> our class name; ``classes`` index = YOLO class id.

    Labels in ``ignore`` are dropped but counted; any other unmapped label is an error.
    """

    mapping: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_LABEL_MAPPING))
    classes: list[str] = field(default_factory=lambda: ["person"])
    ignore: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not self.classes or len(set(self.classes)) != len(self.classes):
            raise PipelineInputError("LabelMapping", "classes", self.classes,
                                     "give a non-empty list of distinct class names", problem="bad class list")
        normalized: dict[str, str] = {}
        for label, target in self.mapping.items():
            key = _norm_label(label)
            if target not in self.classes:
                raise PipelineInputError("LabelMapping", f"mapping[{label!r}]", target,
                                         f"map labels only to one of the classes {self.classes}",
                                         problem="label mapped to an unknown class")
            if normalized.get(key, target) != target:
                raise PipelineInputError("LabelMapping", f"mapping[{label!r}]", target,
                                         "labels differing only in case must map to the same class",
                                         problem="conflicting mapping")
            normalized[key] = target
        ignored = {_norm_label(label) for label in self.ignore}
        both = sorted(ignored & normalized.keys())
        if both:
            raise PipelineInputError("LabelMapping", "ignore", both, "a label is either mapped or ignored, not both",
                                     problem="label both mapped and ignored")
        self._lookup = normalized
        self._ignored = ignored
        self._class_id = {name: i for i, name in enumerate(self.classes)}

    def resolve(self, label: str) -> tuple[str, int] | None:
        """(class_name, class_id) for a mapped label, None for an ignored one; KeyError if neither."""
        key = _norm_label(label)
        if key in self._lookup:
            name = self._lookup[key]
            return name, self._class_id[name]
        if key in self._ignored:
            return None
        raise KeyError(label)

    def maps(self, label: str) -> bool:
        return _norm_label(label) in self._lookup

    def allowed(self) -> list[str]:
        return sorted(self._lookup) + [f"{label} (ignored)" for label in sorted(self._ignored)]


@dataclass(frozen=True)
class ArchiveLimits:
    """What an export zip may contain before it is refused (checked before anything is extracted)."""

    max_total_bytes: int = 2 * 1024**3       # sum of declared uncompressed sizes
    max_members: int = 200_000               # a 100k-frame task with images is ~100k members
    max_ratio: float = 200.0                 # uncompressed / compressed, for members above ...
    ratio_min_bytes: int = 1024**2           # ... this uncompressed size


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


# --------------------------------------------------------------------------------------------- import


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


class _Parsed:
    """Column lists filled by the format parsers, turned into DataFrames by ``_finalize``."""

    def __init__(self, mapping: LabelMapping, non_box: str):
        self.mapping = mapping
        self.non_box_policy = non_box
        self.format: str | None = None
        # images
        self.img_id: list[int] = []
        self.img_file: list[str] = []
        self.img_w: list[int] = []
        self.img_h: list[int] = []
        self.img_frame: list[int | None] = []
        self.img_subset: list[str] = []
        self.img_src: list[str] = []       # annotation file the image came from (error messages)
        # boxes
        self.b_img: list[int] = []         # index into the image lists
        self.b_label: list[str] = []
        self.coords: list[np.ndarray] = []  # chunks of (k, 4) x1, y1, x2, y2 in box order
        self.b_rot: list[float] = []
        self.b_occ: list[bool] = []
        self.b_track: list[int | None] = []
        # where each box came from, resolved to text only for an error message (see _describe):
        # COCO: index into 'annotations' + that annotation; XML: text + attributes; video: (track, frame, exact)
        self.b_ref: list[Any] = []
        self.b_raw: list[Any] = []
        self.non_box_counts: dict[str, int] = {}
        self.hidden = 0                    # boxes skipped because outside="1"
        # video exports: <meta><source> (the uploaded file name) and (start_frame, stop_frame, step)
        self.video_source: str | None = None
        self.video_frames: tuple[int, int, int] | None = None
        self.video_size: tuple[int, int] | None = None
        self.video_matched: str | None = None  # our video_id, set by the manifest resolution

    def set_format(self, fmt: str, source: str) -> None:
        if self.format not in (None, fmt):
            raise AnnotationError(source, "format", fmt, "import one export format at a time",
                                  problem=f"mixed formats in one export ({self.format} and {fmt})")
        self.format = fmt

    def non_box(self, tag: str, label: str, source: str, where: str) -> None:
        self.non_box_counts[tag] = self.non_box_counts.get(tag, 0) + 1
        if self.non_box_policy == "error" and tag != "tag" and self.mapping.maps(label):
            raise AnnotationError(source, f"{where}.{tag}", label,
                                  "draw this object as a rectangle in CVAT (or export as 'COCO 1.0', which CVAT "
                                  "converts to boxes), or import with non_box_shapes='skip'",
                                  problem=f"a {tag} (not a rectangle) has a label mapped to a class")


# ---------------------------------------------------------------------------------- containers


def _sniff(data: bytes, name: str) -> str | None:
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"{"):
        return "json"
    if head.startswith(b"<"):
        return "xml"
    suffix = name.lower().rsplit(".", 1)[-1] if "." in name else ""
    return {"json": "json", "xml": "xml"}.get(suffix)


def _head(data: bytes) -> str:
    return data[:60].decode("utf-8", "replace")


def _member_plan(names: list[str], shown: str) -> tuple[str, list[str]]:
    """('coco', [instances files]) or ('xml', [annotations.xml]) from the member names of an export."""
    coco = sorted(n for n in names if re.fullmatch(r"annotations/instances_[^/]+\.json", n))
    if coco:
        return "coco", coco
    if "annotations.xml" in names:
        return "xml", ["annotations.xml"]
    root_xml = [n for n in names if "/" not in n and n.lower().endswith(".xml")]
    if len(root_xml) == 1:
        return "xml", root_xml
    root_json = [n for n in names if "/" not in n and n.lower().endswith(".json")]
    if len(root_json) == 1:
        return "coco", root_json
    raise AnnotationError(shown, "members", sorted(names)[:8], _FORMAT_REMEDY, problem="unrecognised export format")


def _check_members(zf: zipfile.ZipFile, shown: str, limits: ArchiveLimits) -> dict[str, zipfile.ZipInfo]:
    """Every member is checked before anything is extracted; returns files by normalized name."""
    infos = zf.infolist()
    if len(infos) > limits.max_members:
        raise AnnotationError(shown, "members", len(infos), f"exports with more than {limits.max_members} members "
                              "are refused; split the task or raise ArchiveLimits.max_members",
                              problem="too many archive members")
    total = 0
    files: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        raw = info.filename
        name = raw.replace("\\", "/")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if (name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in parts or "\x00" in name):
            raise AnnotationError(shown, "member name", raw, "refusing an archive whose members point outside it; "
                                  + _REEXPORT_SUFFIX, problem="path traversal in archive")
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise AnnotationError(shown, "member type", raw,
                                  "refusing symbolic links in an export; " + _REEXPORT_SUFFIX,
                                  problem="symlink member in archive")
        if info.flag_bits & 0x1:
            raise AnnotationError(shown, "member flags", raw, "export without a password; " + _REEXPORT_SUFFIX,
                                  problem="encrypted member in archive")
        total += info.file_size
        if total > limits.max_total_bytes:
            raise AnnotationError(shown, "uncompressed size", total, f"exports above {limits.max_total_bytes} bytes "
                                  "uncompressed are refused; split the task or raise ArchiveLimits.max_total_bytes",
                                  problem="archive too large")
        if info.file_size > limits.ratio_min_bytes and (
                info.compress_size == 0 or info.file_size / info.compress_size > limits.max_ratio):
            ratio = info.file_size / info.compress_size if info.compress_size else float("inf")
            raise AnnotationError(shown, f"compression ratio of {raw}", round(ratio, 1),
                                  f"refusing members compressing more than {limits.max_ratio:g}:1 (zip bomb); "
                                  + _REEXPORT_SUFFIX, problem="suspicious compression ratio")
        if info.is_dir():
            continue
        key = "/".join(parts)
        if key in files:
            raise AnnotationError(shown, "member name", raw, _REEXPORT_SUFFIX, problem="duplicate archive member")
        files[key] = info
    return files


def _read_zip(path: Path, parsed: _Parsed, limits: ArchiveLimits) -> None:
    shown = str(path)
    try:
        with zipfile.ZipFile(path) as zf:
            files = _check_members(zf, shown, limits)
            kind, members = _member_plan(list(files), shown)
            with tempfile.TemporaryDirectory(prefix="cvat_import_") as tmp:
                for i, member in enumerate(members):
                    target = Path(tmp) / f"{i:04d}_{PurePosixPath(member).name}"  # flat: no member path used
                    info = files[member]
                    with zf.open(info) as src, open(target, "wb") as dst:
                        _copy_capped(src, dst, info.file_size, shown, member)
                    data = target.read_bytes()
                    subset = _coco_subset(member) if kind == "coco" else ""
                    source = f"{shown}!{member}"
                    if kind == "coco":
                        _parse_coco(data, source, subset, parsed)
                    else:
                        _parse_xml(data, source, subset, parsed)
    except zipfile.BadZipFile as exc:
        raise AnnotationError(shown, "zip", str(exc), _REEXPORT_SUFFIX, problem="unreadable zip archive") from exc
    except (RuntimeError, NotImplementedError, zlib.error, EOFError) as exc:  # a member it cannot decompress
        raise AnnotationError(shown, "zip", str(exc), _REEXPORT_SUFFIX, problem="unreadable zip member") from exc


def _copy_capped(src, dst, limit: int, shown: str, member: str) -> None:
    written = 0
    while chunk := src.read(1 << 20):
        written += len(chunk)
        if written > limit:
            raise AnnotationError(shown, f"size of {member}", written, _REEXPORT_SUFFIX,
                                  problem="member larger than its declared size")
        dst.write(chunk)


def _read_directory(path: Path, parsed: _Parsed, limits: ArchiveLimits) -> str:
    """An unpacked export. Its sha256 is that of the annotation files: sha256 over 'name sha256' lines."""
    names = [p.relative_to(path).as_posix() for p in (path / "annotations").glob("instances_*.json")]
    names += [p.name for p in path.glob("*.xml")] + [p.name for p in path.glob("*.json")]
    kind, members = _member_plan(names, str(path))
    lines = []
    for member in members:
        file = path / member
        if file.stat().st_size > limits.max_total_bytes:
            raise AnnotationError(str(file), "size", file.stat().st_size, "split the task or raise "
                                  "ArchiveLimits.max_total_bytes", problem="file too large")
        data = file.read_bytes()
        lines.append(f"{member} {sha256_bytes(data)}\n")
        if kind == "coco":
            _parse_coco(data, str(file), _coco_subset(member), parsed)
        else:
            _parse_xml(data, str(file), "", parsed)
    return sha256_bytes("".join(lines).encode())


def _coco_subset(member: str) -> str:
    m = re.fullmatch(r"(?:.*/)?instances_(.+)\.json", member)
    return m.group(1) if m else ""


# ---------------------------------------------------------------------------------- COCO


def _parse_coco(data: bytes, source: str, subset: str, p: _Parsed) -> None:
    try:
        doc = json.loads(data)
    except UnicodeDecodeError as exc:
        raise AnnotationError(source, "encoding", f"byte {exc.start}", _REEXPORT, problem="not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise AnnotationError(source, "json", f"line {exc.lineno} column {exc.colno} (char {exc.pos})", _REEXPORT,
                              problem=f"malformed JSON: {exc.msg}") from exc
    if not isinstance(doc, dict):
        raise AnnotationError(source, "json", type(doc).__name__, _FORMAT_REMEDY, problem="JSON is not an object")
    if "items" in doc and "images" not in doc:
        raise AnnotationError(source, "format", "Datumaro JSON", _FORMAT_REMEDY, problem="unrecognised export format")
    for key in ("images", "annotations", "categories"):
        if key not in doc:
            raise AnnotationError(source, key, sorted(doc)[:10], _REEXPORT + " (COCO needs images, annotations, "
                                  "categories)", problem="missing required key")
        if not isinstance(doc[key], list):
            raise AnnotationError(source, key, type(doc[key]).__name__, _REEXPORT, problem="must be a list")
    p.set_format("coco", source)

    cat_name: dict[int, str] = {}
    for i, cat in enumerate(doc["categories"]):
        cid = _req(cat, "id", source, f"categories[{i}]")
        name = _req(cat, "name", source, f"categories[{i}]")
        if type(cid) is not int or not isinstance(name, str):
            raise AnnotationError(source, f"categories[{i}]", cat, _REEXPORT, problem="category needs int id, str name")
        if cid in cat_name:
            raise AnnotationError(source, f"categories[{i}].id", cid, _REEXPORT, problem="duplicate category id")
        cat_name[cid] = name

    img_index: dict[int, int] = {}
    base = len(p.img_id)
    for i, im in enumerate(doc["images"]):
        where = f"images[{i}]"
        iid = _req(im, "id", source, where)
        if type(iid) is not int:
            raise AnnotationError(source, f"{where}.id", iid, _REEXPORT, problem="image id must be an integer")
        if iid in img_index:
            raise AnnotationError(source, f"{where}.id", iid, _REEXPORT + "; every image needs its own id",
                                  problem="duplicate image id")
        name = _req(im, "file_name", source, where)
        if not isinstance(name, str) or not name:
            raise AnnotationError(source, f"{where}.file_name", name, _REEXPORT, problem="empty file_name")
        w = _size(im.get("width"), source, f"{where} (id {iid}).width")
        h = _size(im.get("height"), source, f"{where} (id {iid}).height")
        img_index[iid] = base + i
        p.img_id.append(iid)
        p.img_file.append(name)
        p.img_w.append(w)
        p.img_h.append(h)
        p.img_frame.append(None)
        p.img_subset.append(subset)
        p.img_src.append(source)

    seen: set[int] = set()
    seen_add = seen.add
    img_get, cat_get = img_index.get, cat_name.get
    b_img, b_label, b_ref, b_raw = p.b_img.append, p.b_label.append, p.b_ref.append, p.b_raw.append
    b_rot, b_occ, b_track = p.b_rot.append, p.b_occ.append, p.b_track.append
    boxes: list[list] = []
    box = boxes.append
    num = _NUMSET
    for j, a in enumerate(doc["annotations"]):
        try:
            aid, iid, cid, bbox = a["id"], a["image_id"], a["category_id"], a["bbox"]
        except (KeyError, TypeError):
            for key in ("id", "image_id", "category_id", "bbox"):
                _req(a, key, source, f"annotations[{j}]")
            raise
        if type(aid) is not int:
            raise AnnotationError(source, f"annotations[{j}].id", aid, _REEXPORT,
                                  problem="annotation id must be an integer")
        if aid in seen:
            raise AnnotationError(source, f"annotations[{j}].id", aid, _REEXPORT + "; every annotation needs its own "
                                  "id", problem="duplicate annotation id")
        seen_add(aid)
        ii = img_get(iid) if type(iid) is int else None
        if ii is None:
            raise AnnotationError(source, f"annotations[{j}] (id {aid}).image_id", iid, _REEXPORT + "; the image it "
                                  "refers to is not in 'images'", problem="dangling image_id")
        label = cat_get(cid) if type(cid) is int else None
        if label is None:
            raise AnnotationError(source, f"annotations[{j}] (id {aid}).category_id", cid, _REEXPORT + "; the "
                                  f"category it refers to is not in 'categories' (ids {sorted(cat_name)})",
                                  problem="dangling category_id")
        if type(bbox) is not list or len(bbox) != 4 or type(bbox[0]) not in num or type(bbox[1]) not in num \
                or type(bbox[2]) not in num or type(bbox[3]) not in num:
            raise AnnotationError(source, f"annotations[{j}] (id {aid}).bbox", bbox, _REEXPORT + "; a bbox is "
                                  "[x, y, width, height] in pixels", problem="malformed bbox")
        box(bbox)
        b_img(ii)
        b_label(label)
        attrs = a.get("attributes")
        if attrs and type(attrs) is dict:
            rot = attrs.get("rotation", 0.0)
            b_rot(rot if type(rot) in num else 0.0)
            b_occ(attrs.get("occluded") is True)
            track = attrs.get("track_id")
            b_track(track if type(track) is int else None)
        else:
            b_rot(0.0)
            b_occ(False)
            b_track(None)
        b_ref(j)
        b_raw(a)
    xywh = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    xywh[:, 2:] += xywh[:, :2]
    p.coords.append(xywh)


def _req(obj: Any, key: str, source: str, where: str) -> Any:
    if not isinstance(obj, dict):
        raise AnnotationError(source, where, obj, _REEXPORT, problem="expected a JSON object")
    if key not in obj:
        raise AnnotationError(source, f"{where}.{key}", None, _REEXPORT, problem="missing required key")
    return obj[key]


def _size(value: Any, source: str, where: str) -> int:
    if value is None:
        raise AnnotationError(source, where, value, _REEXPORT + "; CVAT writes every image's size",
                              problem="image width/height missing")
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not (math.isfinite(number) and number > 0 and number == int(number)):
        raise AnnotationError(source, where, value, _REEXPORT + "; image sizes are positive whole pixels",
                              problem="image width/height missing or not positive")
    return int(number)


# ---------------------------------------------------------------------------------- CVAT XML


def _parse_xml(data: bytes, source: str, subset: str, p: _Parsed) -> None:
    if re.search(rb"<!DOCTYPE|<!ENTITY", data):
        raise AnnotationError(source, "xml", "DOCTYPE/ENTITY declaration", _REEXPORT + " (CVAT writes none)",
                              problem="refusing XML with a document type declaration")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        line, col = exc.position
        raise AnnotationError(source, "xml", f"line {line} column {col}", _REEXPORT,
                              problem=f"malformed XML: {exc}") from exc
    if root.tag != "annotations":
        raise AnnotationError(source, "root element", root.tag, _FORMAT_REMEDY, problem="unrecognised export format")
    images = root.findall("image")
    tracks = root.findall("track")
    if images and tracks:
        raise AnnotationError(source, "format", "<image> and <track>", _REEXPORT, problem="mixed CVAT XML formats")
    if images:
        _parse_cvat_images(images, source, p)
        return
    meta = root.find("meta")
    scope = None if meta is None else (meta.find("task") if meta.find("task") is not None else meta.find("job"))
    if tracks or (scope is not None and scope.find("start_frame") is not None):
        _parse_cvat_video(root, tracks, scope, source, p)
        return
    raise AnnotationError(source, "annotations", "no <image> or <track> elements", _FORMAT_REMEDY,
                          problem="unrecognised export format (nothing to import)")


def _attr_float(el: ET.Element, key: str, source: str, where: str) -> float:
    value = el.get(key)
    if value is None:
        raise AnnotationError(source, f"{where}.{key}", None, _REEXPORT, problem="missing required attribute")
    try:
        return float(value)
    except ValueError:
        raise AnnotationError(source, f"{where}.{key}", value, _REEXPORT, problem="not a number") from None


def _attr_int(el: ET.Element, key: str, source: str, where: str) -> int:
    value = el.get(key)
    if value is None:
        raise AnnotationError(source, f"{where}.{key}", None, _REEXPORT, problem="missing required attribute")
    try:
        return int(value)
    except ValueError:
        raise AnnotationError(source, f"{where}.{key}", value, _REEXPORT, problem="not an integer") from None


def _flag(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("1", "true")


def _parse_cvat_images(images: list[ET.Element], source: str, p: _Parsed) -> None:
    p.set_format("cvat_images", source)
    seen: set[tuple[str, int]] = set()
    coords: list[list[float]] = []
    for i, im in enumerate(images):
        where = f"image[{i}]"
        iid = _attr_int(im, "id", source, where)
        subset = im.get("subset", "")
        if (subset, iid) in seen:
            raise AnnotationError(source, f"{where}.id", iid, _REEXPORT + "; every image needs its own id",
                                  problem="duplicate image id")
        seen.add((subset, iid))
        name = im.get("name")
        if not name:
            raise AnnotationError(source, f"{where} (id {iid}).name", name, _REEXPORT, problem="missing image name")
        w = _size(im.get("width"), source, f"{where} (id {iid}).width")
        h = _size(im.get("height"), source, f"{where} (id {iid}).height")
        index = len(p.img_id)
        p.img_id.append(iid)
        p.img_file.append(name)
        p.img_w.append(w)
        p.img_h.append(h)
        p.img_frame.append(None)
        p.img_subset.append(subset)
        p.img_src.append(source)
        for k, shape in enumerate(im):
            swhere = f"image {name!r} (id {iid}) shape[{k}]"
            if shape.tag != "box":
                p.non_box(shape.tag, shape.get("label", ""), source, swhere)
                continue
            if _flag(shape.get("outside")):
                p.hidden += 1
                continue
            label = shape.get("label")
            if label is None:
                raise AnnotationError(source, f"{swhere}.label", None, _REEXPORT, problem="missing required attribute")
            p.b_img.append(index)
            p.b_label.append(label)
            coords.append([_attr_float(shape, key, source, swhere) for key in ("xtl", "ytl", "xbr", "ybr")])
            p.b_rot.append(_attr_float(shape, "rotation", source, swhere) if shape.get("rotation") else 0.0)
            p.b_occ.append(_flag(shape.get("occluded")))
            p.b_track.append(None)
            p.b_ref.append(swhere)
            p.b_raw.append(dict(shape.attrib))
    p.coords.append(np.array(coords, dtype=np.float64).reshape(-1, 4))


def _parse_cvat_video(root: ET.Element, tracks: list[ET.Element], scope: ET.Element | None, source: str,
                      p: _Parsed) -> None:
    p.set_format("cvat_video", source)
    if p.img_id:
        raise AnnotationError(source, "format", "several video exports", "import one video task export at a time",
                              problem="more than one video annotation file")
    if scope is None:
        raise AnnotationError(source, "meta/task", None, "export the task (not the project) as 'CVAT for video "
                              "1.1'", problem="missing required key")

    def meta_int(key: str) -> int:
        el = scope.find(key)
        if el is None or not (el.text or "").strip():
            raise AnnotationError(source, f"meta/{scope.tag}/{key}", None, _REEXPORT, problem="missing required key")
        try:
            return int(el.text.strip())
        except ValueError:
            raise AnnotationError(source, f"meta/{scope.tag}/{key}", el.text, _REEXPORT,
                                  problem="not an integer") from None

    start, stop = meta_int("start_frame"), meta_int("stop_frame")
    filt = (scope.findtext("frame_filter") or "").strip()
    step = 1
    if filt:
        m = re.fullmatch(r"step\s*=\s*(\d+)", filt)
        if not m or int(m.group(1)) < 1:
            raise AnnotationError(source, f"meta/{scope.tag}/frame_filter", filt, "only 'step=N' frame filters are "
                                  "understood; " + _REEXPORT, problem="unsupported frame filter")
        step = int(m.group(1))
    if stop < start or start < 0:
        raise AnnotationError(source, f"meta/{scope.tag}/stop_frame", (start, stop), _REEXPORT,
                              problem="stop_frame before start_frame")
    size = scope.find("original_size")
    if size is None:
        raise AnnotationError(source, f"meta/{scope.tag}/original_size", None,
                              _REEXPORT + "; a video task's export names its frame size in original_size (for an "
                              "image task, export 'CVAT for images 1.1' or 'COCO 1.0' instead)",
                              problem="image width/height missing")
    w = _size(size.findtext("width"), source, f"meta/{scope.tag}/original_size/width")
    h = _size(size.findtext("height"), source, f"meta/{scope.tag}/original_size/height")

    meta_el = root.find("meta")
    source_name = (meta_el.findtext("source") if meta_el is not None else None) or scope.findtext("source")
    p.video_source = source_name.strip() if source_name and source_name.strip() else None
    p.video_frames = (start, stop, step)
    p.video_size = (w, h)
    n = (stop - start) // step + 1
    frames = start + step * np.arange(n, dtype=np.int64)
    p.img_id.extend(range(n))  # CVAT's frame index within the task
    p.img_file.extend(f"frame_{f:06d}" for f in frames.tolist())
    p.img_w.extend([w] * n)
    p.img_h.extend([h] * n)
    p.img_frame.extend(frames.tolist())
    p.img_subset.extend([""] * n)
    p.img_src.extend([source] * n)

    seen_tracks: set[int] = set()
    for t, track in enumerate(tracks):
        where = f"track[{t}]"
        tid = _attr_int(track, "id", source, where)
        if tid in seen_tracks:
            raise AnnotationError(source, f"{where}.id", tid, _REEXPORT, problem="duplicate track id")
        seen_tracks.add(tid)
        label = track.get("label")
        if label is None:
            raise AnnotationError(source, f"{where} (id {tid}).label", None, _REEXPORT,
                                  problem="missing required attribute")
        shapes = [el for el in track if el.tag != "track"]  # nested <track>: parts of a skeleton
        kinds = {el.tag for el in shapes}
        if kinds != {"box"}:
            if "box" in kinds:
                raise AnnotationError(source, f"track {tid}", sorted(kinds), _REEXPORT,
                                      problem="track mixes rectangles with other shapes")
            p.non_box(shapes[0].tag if shapes else "empty track", label, source, f"track {tid}")
            continue
        _track_boxes(shapes, tid, label, start, stop, step, source, p)


def _track_boxes(shapes: list[ET.Element], tid: int, label: str, start: int, stop: int, step: int, source: str,
                 p: _Parsed) -> None:
    """Boxes of one track on every task frame where it is not outside (CVAT's interpolation rules)."""
    m = len(shapes)
    fr = np.empty(m, np.int64)
    co = np.empty((m, 4), np.float64)
    rot = np.zeros(m, np.float64)
    out = np.zeros(m, bool)
    occ = np.zeros(m, bool)
    for k, el in enumerate(shapes):
        where = f"track {tid} box[{k}]"
        f = _attr_int(el, "frame", source, where)
        if f < start or f > stop or (f - start) % step:
            raise AnnotationError(source, f"{where}.frame", f, f"frame numbers of this task are {start} + k*{step} "
                                  f"up to {stop}; " + _REEXPORT, problem="frame number not on the task's frame step")
        fr[k] = f
        co[k] = [_attr_float(el, key, source, where) for key in ("xtl", "ytl", "xbr", "ybr")]
        rot[k] = _attr_float(el, "rotation", source, where) if el.get("rotation") else 0.0
        out[k] = _flag(el.get("outside"))
        occ[k] = _flag(el.get("occluded"))
    order = np.argsort(fr, kind="stable")
    fr, co, rot, out, occ = fr[order], co[order], rot[order], out[order], occ[order]
    dup = np.flatnonzero(np.diff(fr) == 0)
    if dup.size:
        raise AnnotationError(source, f"track {tid} frame", int(fr[dup[0]]), _REEXPORT,
                              problem="two boxes of one track on the same frame")
    grid = np.arange(fr[0], stop + 1, step, dtype=np.int64)
    prev = np.searchsorted(fr, grid, side="right") - 1          # the shape at or before each frame
    visible = ~out[prev]
    p.hidden += int(np.count_nonzero(out))  # explicit outside="1" shapes
    grid, prev = grid[visible], prev[visible]
    if grid.size == 0:
        return
    nxt = np.minimum(prev + 1, m - 1)
    exact = fr[prev] == grid
    span = (fr[nxt] - fr[prev]).astype(np.float64)
    t = np.where((nxt > prev) & ~exact, (grid - fr[prev]) / np.where(span > 0, span, 1.0), 0.0)
    coords = co[prev] + t[:, None] * (co[nxt] - co[prev])
    drot = (rot[nxt] - rot[prev] + 180.0) % 360.0 - 180.0   # shortest way round, as CVAT
    rots = (rot[prev] + t * drot) % 360.0
    index = ((grid - start) // step).tolist()
    p.b_img.extend(index)
    p.b_label.extend([label] * len(index))
    p.coords.append(coords)
    p.b_rot.extend(rots.tolist())
    p.b_occ.extend(occ[prev].tolist())
    p.b_track.extend([tid] * len(index))
    p.b_ref.extend(zip([tid] * len(index), grid.tolist(), exact.tolist()))
    p.b_raw.extend([None] * len(index))


# ---------------------------------------------------------------------------------- table


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
        for u, label in enumerate(uniq.tolist()):
            members = inverse == u
            try:
                resolved = p.mapping.resolve(label)
            except KeyError:
                first = int(np.flatnonzero(members)[0])
                raise AnnotationError(p.img_src[b_img[first]], "label of " + _describe(p, first)[0].removesuffix(".bbox"),
                                      label,
                                      f"add it to LabelMapping.mapping or .ignore; allowed labels: "
                                      f"{p.mapping.allowed()}", problem="unmapped label") from None
            if resolved is None:
                keep[members] = False
                ignored[label] = int(members.sum())
            else:
                class_name[members] = resolved[0]
                class_id[members] = resolved[1]
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


def _basename(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _stem(name: str) -> str:
    stem, dot, _ = name.rpartition(".")
    return stem if dot and stem else name


def _norm_name(name: str) -> str:
    name = str(name).replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    return name


def _frame_keys(p: _Parsed, manifest: pd.DataFrame | None, shown: str,
                video: str | None = None) -> tuple[np.ndarray, int | None]:
    n = len(p.img_id)
    if manifest is None:
        if len(set(p.img_subset)) > 1:
            keys = [f"{s}/{f}" if s else f for s, f in zip(p.img_subset, p.img_file)]
        else:
            keys = list(p.img_file)
        unmatched = None
    else:
        keys, unmatched = _resolve_manifest(p, manifest, shown, video)
    arr = np.asarray(keys, dtype=object) if n else np.empty(0, dtype=object)
    if n:
        uniq, first, cnt = np.unique(arr.astype(str), return_index=True, return_counts=True)
        if (cnt > 1).any():
            u = int(np.flatnonzero(cnt > 1)[0])
            dupes = [p.img_file[i] for i in np.flatnonzero(arr.astype(str) == uniq[u])[:4]]
            raise AnnotationError(p.img_src[int(first[u])], "images.file_name", dupes,
                                  "every image of a task must have its own file name; re-create the task from the "
                                  "task package", problem=f"several export images map to the frame {uniq[u]!r}")
    return arr, unmatched


def _resolve_manifest(p: _Parsed, manifest: pd.DataFrame, shown: str,
                      video: str | None = None) -> tuple[list[str], int]:
    if not isinstance(manifest, pd.DataFrame):
        raise PipelineInputError(shown, "frame_manifest", type(manifest).__name__, "pass a pandas DataFrame")
    for col in ("frame_key", "file_name"):
        if col not in manifest.columns:
            raise PipelineInputError("frame_manifest", col, list(manifest.columns),
                                     "pass the manifest of the task package (frame_key, file_name[, source_frame])",
                                     problem="missing required column")
    keys_col = manifest["frame_key"].astype(str).tolist()
    names_col = [_norm_name(n) for n in manifest["file_name"].astype(str).tolist()]
    named: dict[str, str] = {}
    for name, key in zip(names_col, keys_col):  # the same row twice is harmless; one name, two frames is not
        if named.setdefault(name, key) != key:
            raise PipelineInputError("frame_manifest", "file_name", name, "every file name in the manifest must "
                                     f"stand for one frame (here {named[name]!r} and {key!r})",
                                     problem="ambiguous manifest entry")
    remedy = ("import the export against the manifest of the task package that was sent to CVAT for this task "
              "(the export's images must be that package's images, unrenamed)")
    out: list[str] = []
    if p.format == "cvat_video" and "source_frame" in manifest.columns and manifest["source_frame"].notna().any():
        return _resolve_video(p, manifest, video, shown)
    else:
        exact = named
        base: dict[str, str | None] = {}
        stems: dict[str, str | None] = {}
        for name, key in named.items():
            b = _basename(name)
            base[b] = key if base.get(b, key) == key else None    # None: two frames share the name
            s = _stem(b)
            stems[s] = key if stems.get(s, key) == key else None
        video = p.format == "cvat_video"
        for i, name in enumerate(p.img_file):
            n = _norm_name(name)
            k = exact.get(n)
            if k is None:
                k = base.get(_basename(n))
            if k is None and video:  # video frames have no extension: frame_000010
                k = stems.get(_basename(n))
            if k is None:
                ambiguous = _basename(n) in base
                raise AnnotationError(p.img_src[i], "images.file_name", name, remedy,
                                      problem="export image matches several manifest frames" if ambiguous
                                      else "export image matches no frame in the task manifest")
            out.append(k)
    return out, len(set(keys_col) - set(out))


_VIDEO_REMEDY = ("file the export under annotations/incoming/video-<video_id>/<annotator>/ (read_export(video=...)) "
                 "so it names the video the CVAT task was made from")


def _pick_video(p: _Parsed, rows: pd.DataFrame, video: str | None, src: str) -> str | None:
    """Our video_id the video task was made from (None: the manifest holds one video and names none)."""
    if "video_id" not in rows.columns:
        if video is not None:
            raise PipelineInputError("frame_manifest", "video_id", list(rows.columns), "add the video_id column to the "
                                     "manifest so the export's video can be selected", problem="missing column")
        return None
    vids = rows["video_id"].astype(str)
    known = sorted(set(vids))
    files: dict[str, set[str]] = {}
    if "video_file" in rows.columns:
        for v, f in zip(vids, rows["video_file"].tolist()):
            if isinstance(f, str) and f:
                files.setdefault(_basename(_norm_name(f)), set()).add(v)
    source = _basename(_norm_name(p.video_source)) if p.video_source else None
    if video is not None:
        if video not in set(known):
            raise AnnotationError(src, "video", video, "extract the frames of that video first (video_frames for "
                                  f"partition {video!r}), or check the video id; videos with frames: {known[:8]}",
                                  problem="no extracted frames of the video this export is filed under")
        owners = files.get(source, set()) if source else set()
        if owners and video not in owners:
            raise AnnotationError(src, "meta/source", p.video_source, f"this is an export of {sorted(owners)[0]!r} "
                                  f"(its <source> is that video's file) but it is filed under video {video!r}; move "
                                  "it to annotations/incoming/video-<the right video_id>/<annotator>/",
                                  problem="export filed under another video")
        return video
    if len(known) == 1 and not source:
        return known[0]
    if not source:
        raise AnnotationError(src, "meta/source", None, "the export does not name its video file; " + _VIDEO_REMEDY,
                              problem="cannot tell which of our videos this video task was made from")
    owners = files.get(source, set())
    if len(owners) == 1:
        return next(iter(owners))
    if not owners and len(known) == 1 and not files:
        return known[0]
    raise AnnotationError(src, "meta/source", p.video_source,
                          ("several of our videos have that file name: " + str(sorted(owners)[:4]) if owners else
                           f"no video of ours has that file name (ours: {sorted(files)[:6]})") + "; " + _VIDEO_REMEDY,
                          problem="cannot tell which of our videos this video task was made from")


def _resolve_video(p: _Parsed, manifest: pd.DataFrame, video: str | None, shown: str) -> tuple[list[str], int]:
    """Frame keys of a video export: by absolute frame number within the one video the task was made from."""
    src = p.img_src[0] if p.img_src else shown
    rows = manifest[manifest["source_frame"].notna()]
    chosen = _pick_video(p, rows, video, src)
    if chosen is not None:
        rows = rows[rows["video_id"].astype(str) == chosen]
    p.video_matched = chosen
    named = f"video {chosen!r}" if chosen is not None else "the video"
    if p.video_size is not None and {"width", "height"} <= set(rows.columns):
        sizes = set(zip(rows["width"].astype(int), rows["height"].astype(int)))
        if p.video_size not in sizes:
            w, h = p.video_size
            raise AnnotationError(src, "meta/task/original_size", f"{w}x{h}", f"our frames of {named} are "
                                  + ", ".join(f"{a}x{b}" for a, b in sorted(sizes)) + "; the task was made from "
                                  "another (or a resized) video: " + _VIDEO_REMEDY + ", with the video as stored",
                                  problem="frame size differs from our frames of the video")
    row_keys = rows["frame_key"].astype(str).tolist()
    by_frame: dict[int, str] = {}
    for f, k in zip(rows["source_frame"].tolist(), row_keys):
        by_frame.setdefault(int(f), k)  # the same frame extracted twice: the first row (preferred) wins
    out: list[str] = []
    missing: list[int] = []
    for f in p.img_frame:
        k = by_frame.get(f)
        if k is None:
            missing.append(int(f))
        else:
            out.append(k)
    if missing:
        ours = np.unique(np.fromiter(by_frame, dtype=np.int64, count=len(by_frame)))
        step = int(np.gcd.reduce(np.diff(ours))) if ours.size > 1 else 0
        start, stop, t_step = p.video_frames or (min(p.img_frame), max(p.img_frame), 1)
        shown_ours = ", ".join(map(str, ours[:6].tolist())) + (", ..." if ours.size > 6 else "")
        plan = (f"start frame {int(ours[0])}, frame step {step} (or a multiple), stop frame <= {int(ours[-1])}"
                if step else f"only frame {int(ours[0])}")
        raise AnnotationError(src, "frame", missing[0],
                              f"the task's frames are {start} + k*{t_step} up to {stop}, but the frames we extracted "
                              f"from {named} are frame numbers {shown_ours}: create the CVAT task from the video with "
                              f"{plan} (CVAT: Advanced configuration), annotate and export again",
                              problem=f"video frame not in the task manifest ({len(missing)} of the task's "
                                      f"{len(p.img_frame)} frames are not frames we extracted from {named}: the "
                                      "task's start frame, frame step or stop frame does not line up with ours)")
    return out, len(set(row_keys) - set(out))


# --------------------------------------------------------------------------------------------- packages


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
