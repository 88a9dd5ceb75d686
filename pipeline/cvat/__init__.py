"""CVAT exports in, one normalized box table out; task packages (frames for CVAT) out.

Accepted exports (the format is detected from the content, not the file name):

* COCO 1.0: the zip CVAT writes (``annotations/instances_<subset>.json`` plus optional ``images/``),
  the bare ``instances_*.json``, or an unpacked export directory;
* CVAT for images 1.1: ``annotations.xml`` (bare, in a zip or in a directory) with ``<image>`` elements;
* CVAT for video 1.1: ``annotations.xml`` with ``<track>`` elements; frame numbers are absolute video
  frames ``start_frame + k * step`` and boxes are interpolated between keyframes as CVAT does; task-level
  (``<meta><task>``) and job-level (``<meta><job>``) exports, ``original_size`` inside the task/job element or
  directly under ``<meta>`` (cvat_xml.py lists the layouts and the ones refused, with their reasons).

A video export, and a COCO or CVAT-for-images export of a video task (its images named ``frame_<number>``),
is matched to our frames by frame number, within one of our videos: the ``video`` argument
names it (the annotations asset takes it from the task folder ``annotations/incoming/video-<video_id>/``),
else the export's ``<meta><source>`` (the file name CVAT recorded when the video was uploaded) must be the
``video_file`` of exactly one video in the frame manifest, else the manifest must hold one video (job-level
and COCO exports name none). Every frame of the task must be a frame we
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

from pipeline.cvat.archive import ArchiveLimits
from pipeline.cvat.common import ACCEPTED_FORMATS, BOX_COLUMNS, IMAGE_COLUMNS
from pipeline.cvat.importer import ImportResult, read_export
from pipeline.cvat.mapping import DEFAULT_LABEL_MAPPING, LabelMapping
from pipeline.cvat.package import package_name, write_task_package


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
