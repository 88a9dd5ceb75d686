"""CVAT 'CVAT for images 1.1' and 'CVAT for video 1.1' XML -> the parse buffer."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import numpy as np

from pipeline.cvat.common import _FORMAT_REMEDY, _ALTERED, _Parsed, _size
from pipeline.errors import AnnotationError


def _parse_xml(data: bytes, source: str, subset: str, p: _Parsed) -> None:
    if re.search(rb"<!DOCTYPE|<!ENTITY", data):
        raise AnnotationError(source, "xml", "DOCTYPE/ENTITY declaration", _ALTERED + " (CVAT writes none)",
                              problem="refusing XML with a document type declaration")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        line, col = exc.position
        raise AnnotationError(source, "xml", f"line {line} column {col}", _ALTERED,
                              problem=f"malformed XML: {exc}") from exc
    if root.tag != "annotations":
        raise AnnotationError(source, "root element", root.tag, _FORMAT_REMEDY, problem="unrecognised export format")
    images = root.findall("image")
    tracks = root.findall("track")
    if images and tracks:
        raise AnnotationError(source, "format", "<image> and <track>", _ALTERED, problem="mixed CVAT XML formats")
    if images:
        _parse_cvat_images(images, source, p)
        return
    meta = root.find("meta")
    scope = None if meta is None else next((el for el in (meta.find("task"), meta.find("job")) if el is not None),
                                           None)
    if tracks or (scope is not None and scope.find("start_frame") is not None):
        _parse_cvat_video(root, tracks, source, p)
        return
    raise AnnotationError(source, "annotations", "no <image> or <track> elements", _FORMAT_REMEDY,
                          problem="unrecognised export format (nothing to import)")


def _attr_number(el: ET.Element, key: str, source: str, where: str, kind: type = float):
    """A required numeric attribute of `el` as `kind` (float or int), or a clear error."""
    value = el.get(key)
    if value is None:
        raise AnnotationError(source, f"{where}.{key}", None, _ALTERED, problem="missing required attribute")
    try:
        return kind(value)
    except ValueError:
        raise AnnotationError(source, f"{where}.{key}", value, _ALTERED,
                              problem="not an integer" if kind is int else "not a number") from None


def _attr_float(el: ET.Element, key: str, source: str, where: str) -> float:
    return _attr_number(el, key, source, where, float)


def _attr_int(el: ET.Element, key: str, source: str, where: str) -> int:
    return _attr_number(el, key, source, where, int)


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
            raise AnnotationError(source, f"{where}.id", iid, _ALTERED + "; every image needs its own id",
                                  problem="duplicate image id")
        seen.add((subset, iid))
        name = im.get("name")
        if not name:
            raise AnnotationError(source, f"{where} (id {iid}).name", name, _ALTERED, problem="missing image name")
        w = _size(im.get("width"), source, f"{where} (id {iid}).width")
        h = _size(im.get("height"), source, f"{where} (id {iid}).height")
        index = p.add_image(iid, name, w, h, subset, source)
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
                raise AnnotationError(source, f"{swhere}.label", None, _ALTERED, problem="missing required attribute")
            p.b_img.append(index)
            p.b_label.append(label)
            coords.append([_attr_float(shape, key, source, swhere) for key in ("xtl", "ytl", "xbr", "ybr")])
            p.b_rot.append(_attr_float(shape, "rotation", source, swhere) if shape.get("rotation") else 0.0)
            p.b_occ.append(_flag(shape.get("occluded")))
            p.b_track.append(None)
            p.b_ref.append(swhere)
            p.b_raw.append(dict(shape.attrib))
    p.coords.append(np.array(coords, dtype=np.float64).reshape(-1, 4))


# Where CVAT puts what a video export needs, by the level it was exported from (read from CVAT's exporter,
# cvat/apps/dataset_manager/bindings.py, 1.x to 2.x servers):
#   task export (Actions > Export task dataset): <meta><task> with start_frame, stop_frame, frame_filter and
#     <original_size> inside <task>; <source> (the uploaded video's name) directly under <meta> (older servers) or
#     inside <task> (newer ones);
#   job export (a job's menu > Export job annotations): <meta><job> with the job's own absolute start_frame and
#     stop_frame and the task's frame_filter; <original_size> directly under <meta>; no <source>;
#   project export: <meta><project><tasks><task>..., tracks carry task_id: several videos in one file (refused);
#   'CVAT for video 1.1' export of an image task (mode 'annotation'): no <original_size> anywhere (refused: the
#     frames are images of different sizes; 'CVAT for images 1.1' or 'COCO 1.0' carries each image's size).
# <segments> may be present or not; nothing here depends on it.
_LAYOUTS = ("task-level (<meta><task>)", "job-level (<meta><job>)")


def _video_scope(root: ET.Element, source: str) -> tuple[ET.Element, ET.Element, str]:
    """(<meta>, <task> or <job>, layout name) of a 'CVAT for video 1.1' export, or a named refusal."""
    meta = root.find("meta")
    if meta is None:
        raise AnnotationError(source, "meta", None, _ALTERED + " (CVAT writes <meta> first in every XML export)",
                              problem="missing required key")
    task, job = meta.find("task"), meta.find("job")
    if task is not None:
        return meta, task, _LAYOUTS[0]
    if job is not None:
        return meta, job, _LAYOUTS[1]
    if meta.find("project") is not None:
        raise AnnotationError(source, "meta/project", "project-level export",
                              "export each video task on its own (Actions > Export task dataset, or a job's Export "
                              "job annotations) as 'CVAT for video 1.1' and file it under annotations/incoming/"
                              "video-<video_id>/<annotator>/", problem="unsupported CVAT layout: a project-level "
                              "'CVAT for video 1.1' export (several videos in one file); supported: "
                              + ", ".join(_LAYOUTS))
    raise AnnotationError(source, "meta", [el.tag for el in meta][:8],
                          "this is no layout CVAT writes (its <meta> holds <task>, <job> or <project>), so the file "
                          "was edited after it was downloaded: import the export exactly as CVAT wrote it",
                          problem="missing required key (meta/task or meta/job)")


def _original_size(meta: ET.Element, scope: ET.Element, layout: str, source: str) -> tuple[ET.Element, str]:
    """The <original_size> element and its path: inside <task>/<job>, else directly under <meta>."""
    for parent, path in ((scope, f"meta/{scope.tag}/original_size"), (meta, "meta/original_size")):
        el = parent.find("original_size")
        if el is not None:
            return el, path
    mode = (scope.findtext("mode") or "").strip()
    if mode == "annotation":
        raise AnnotationError(source, f"meta/{scope.tag}/mode", mode,
                              "export this task as 'CVAT for images 1.1' or 'COCO 1.0' instead (both carry each "
                              "image's size)", problem="unsupported CVAT layout: a 'CVAT for video 1.1' export of an "
                              f"image task ({layout}, mode 'annotation'; CVAT writes no frame size for it)")
    raise AnnotationError(source, "original_size", None,
                          f"CVAT writes the frame size of a video task in meta/{scope.tag}/original_size or "
                          "meta/original_size, and this file has neither, so it was edited after it was downloaded: "
                          "import the export exactly as CVAT wrote it. If it is unedited, CVAT wrote a layout we do "
                          "not read: export the task as 'COCO 1.0' instead (each image carries its size)",
                          problem=f"image width/height missing ({layout} 'CVAT for video 1.1', mode {mode or '?'!r}: "
                                  "no original_size under meta/task, meta/job or meta)")


def _parse_cvat_video(root: ET.Element, tracks: list[ET.Element], source: str, p: _Parsed) -> None:
    p.set_format("cvat_video", source)
    if p.img_id:
        raise AnnotationError(source, "format", "several video exports", "import one video task export at a time",
                              problem="more than one video annotation file")
    meta, scope, layout = _video_scope(root, source)

    def meta_int(key: str) -> int:
        el = scope.find(key)
        if el is None or not (el.text or "").strip():
            raise AnnotationError(source, f"meta/{scope.tag}/{key}", None, _ALTERED, problem="missing required key")
        try:
            return int(el.text.strip())
        except ValueError:
            raise AnnotationError(source, f"meta/{scope.tag}/{key}", el.text, _ALTERED,
                                  problem="not an integer") from None

    start, stop = meta_int("start_frame"), meta_int("stop_frame")
    filt = (scope.findtext("frame_filter") or "").strip()
    step = 1
    if filt:
        m = re.fullmatch(r"step\s*=\s*(\d+)", filt)
        if not m or int(m.group(1)) < 1:
            raise AnnotationError(source, f"meta/{scope.tag}/frame_filter", filt, "only 'step=N' frame filters are "
                                  "understood; " + _ALTERED, problem="unsupported frame filter")
        step = int(m.group(1))
    if stop < start or start < 0:
        raise AnnotationError(source, f"meta/{scope.tag}/stop_frame", (start, stop), _ALTERED,
                              problem="stop_frame before start_frame")
    size, size_path = _original_size(meta, scope, layout, source)
    w = _size(size.findtext("width"), source, f"{size_path}/width")
    h = _size(size.findtext("height"), source, f"{size_path}/height")

    source_name = meta.findtext("source") or scope.findtext("source")
    p.video_source = source_name.strip() if source_name and source_name.strip() else None
    p.video_frames = (start, stop, step)
    p.video_size = (w, h)
    p.video_size_field = size_path
    n = (stop - start) // step + 1
    frames = start + step * np.arange(n, dtype=np.int64)
    p.img_id.extend(range(n))  # CVAT's frame index within the exported task or job
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
            raise AnnotationError(source, f"{where}.id", tid, _ALTERED, problem="duplicate track id")
        seen_tracks.add(tid)
        label = track.get("label")
        if label is None:
            raise AnnotationError(source, f"{where} (id {tid}).label", None, _ALTERED,
                                  problem="missing required attribute")
        shapes = [el for el in track if el.tag != "track"]  # nested <track>: parts of a skeleton
        kinds = {el.tag for el in shapes}
        if kinds != {"box"}:
            if "box" in kinds:
                raise AnnotationError(source, f"track {tid}", sorted(kinds), _ALTERED,
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
                                  f"up to {stop}; " + _ALTERED, problem="frame number not on the task's frame step")
        fr[k] = f
        co[k] = [_attr_float(el, key, source, where) for key in ("xtl", "ytl", "xbr", "ybr")]
        rot[k] = _attr_float(el, "rotation", source, where) if el.get("rotation") else 0.0
        out[k] = _flag(el.get("outside"))
        occ[k] = _flag(el.get("occluded"))
    order = np.argsort(fr, kind="stable")
    fr, co, rot, out, occ = fr[order], co[order], rot[order], out[order], occ[order]
    dup = np.flatnonzero(np.diff(fr) == 0)
    if dup.size:
        raise AnnotationError(source, f"track {tid} frame", int(fr[dup[0]]), _ALTERED,
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
