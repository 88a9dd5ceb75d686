"""What the format parsers share: accepted formats, remedies, column lists and the parse buffer."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from pipeline.cvat.mapping import LabelMapping
from pipeline.errors import AnnotationError

ACCEPTED_FORMATS = (
    "CVAT 'COCO 1.0' (zip with annotations/instances_<subset>.json, or that .json alone)",
    "CVAT 'CVAT for images 1.1' (zip with annotations.xml, or that .xml alone)",
    "CVAT 'CVAT for video 1.1' (zip with annotations.xml, or that .xml alone)",
)
_FORMAT_REMEDY = ("export the task from CVAT (Actions > Export task dataset) as one of: "
                  + "; ".join(ACCEPTED_FORMATS))
# Remedies for files that are not as CVAT writes them. They say so, because telling an operator to export again a
# file CVAT did write is no help: an export as CVAT wrote it, in a layout we do not read, gets an error naming
# that layout instead (see cvat_xml.py and matching.py).
_ALTERED = ("CVAT never writes this, so the file was edited or damaged after it was downloaded: import the export "
            "exactly as CVAT wrote it (download it from CVAT again if this copy is damaged)")
_ALTERED_ARCHIVE = ("CVAT never writes such an archive, so it was altered or damaged after it was downloaded: import "
                    "the zip exactly as downloaded from CVAT (download it again if this copy is damaged)")

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
        self.video_size_field = "meta/task/original_size"  # where the export states that size
        self.video_matched: str | None = None  # our video_id, set by the manifest resolution

    def add_image(self, iid: int, name: str, width: int, height: int, subset: str, source: str,
                  frame: int | None = None) -> int:
        """Append one image's columns; returns its index in the image lists."""
        self.img_id.append(iid)
        self.img_file.append(name)
        self.img_w.append(width)
        self.img_h.append(height)
        self.img_frame.append(frame)
        self.img_subset.append(subset)
        self.img_src.append(source)
        return len(self.img_id) - 1

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


def _size(value: Any, source: str, where: str) -> int:
    if value is None:
        raise AnnotationError(source, where, value, _ALTERED + "; CVAT writes every image's size",
                              problem="image width/height missing")
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not (math.isfinite(number) and number > 0 and number == int(number)):
        raise AnnotationError(source, where, value, _ALTERED + "; image sizes are positive whole pixels",
                              problem="image width/height missing or not positive")
    return int(number)
