"""Export images -> our frame keys, through the manifest of the frames we extracted."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from pipeline.cvat.common import _Parsed
from pipeline.errors import AnnotationError, PipelineInputError


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
    has_frames = "source_frame" in manifest.columns and bool(manifest["source_frame"].notna().any())
    if p.format == "cvat_video" and has_frames:
        return _resolve_video(p, manifest, video, shown)
    numbers = _video_frame_numbers(p.img_file)
    if numbers is not None and video is not None and has_frames:  # filed under video-<id>/: by frame number
        return _resolve_video_images(p, manifest, video, shown, numbers)
    out, failed = _match_names(p, named)
    if failed is None:
        return out, len(set(keys_col) - set(out))
    if numbers is not None and has_frames:
        # 'COCO 1.0' / 'CVAT for images 1.1' export of a CVAT video task: its images are the video's frames,
        # named by frame number, not our package's images
        return _resolve_video_images(p, manifest, video, shown, numbers)
    i, ambiguous = failed
    if numbers is not None and not ambiguous and not out:  # nothing matched by name: a video task's frames
        raise AnnotationError(p.img_src[i], "images.file_name", p.img_file[i],
                              "pass a frame manifest with the source_frame (and video_id) columns: the annotations "
                              "asset does (pipeline/labels.py export_manifest)",
                              problem="export of a CVAT video task (frames named frame_<number>) but the manifest "
                                      "has no frame numbers to match them by")
    raise AnnotationError(p.img_src[i], "images.file_name", p.img_file[i],
                          "import the export against the manifest of the task package that was sent to CVAT for "
                          "this task (the export's images must be that package's images, unrenamed)",
                          problem="export image matches several manifest frames" if ambiguous
                          else "export image matches no frame in the task manifest")


# A frame of a CVAT video task, as CVAT names it in every export format: frame_<absolute frame number, 6+ digits>,
# with the frame's extension in COCO (frame_000024.png) and none in XML, under a folder or not (images/, frames/,
# a subset); the number is the frame's rank in presentation order, which is our frame_index
_VIDEO_FRAME = re.compile(r"(?:.*/)?frame_(\d{6,})(?:\.[A-Za-z0-9]{1,5})?")


def _video_frame_numbers(names: list[str]) -> list[int] | None:
    """Frame numbers when every image is named as CVAT names a video task's frames, else None."""
    out = []
    for name in names:
        m = _VIDEO_FRAME.fullmatch(_norm_name(name))
        if m is None:
            return None
        out.append(int(m.group(1)))
    return out or None


def _match_names(p: _Parsed, named: dict[str, str]) -> tuple[list[str], tuple[int, bool] | None]:
    """Frame keys by image name (exact, then base name, then stem for XML video frames); on the first image that
    matches no single frame: (keys so far, (its index, whether its name matched several frames))."""
    base: dict[str, str | None] = {}
    stems: dict[str, str | None] = {}
    for name, key in named.items():
        b = _basename(name)
        base[b] = key if base.get(b, key) == key else None    # None: two frames share the name
        s = _stem(b)
        stems[s] = key if stems.get(s, key) == key else None
    video = p.format == "cvat_video"
    out: list[str] = []
    for i, name in enumerate(p.img_file):
        n = _norm_name(name)
        k = named.get(n)
        if k is None:
            k = base.get(_basename(n))
        if k is None and video:  # video frames have no extension: frame_000010
            k = stems.get(_basename(n))
        if k is None:
            return out, (i, _basename(n) in base)
        out.append(k)
    return out, None


def _resolve_video_images(p: _Parsed, manifest: pd.DataFrame, video: str | None, shown: str,
                          numbers: list[int]) -> tuple[list[str], int]:
    """An image-format export of a video task: matched like a video export, by frame number within one video."""
    p.img_frame[:] = numbers
    sizes = sorted(set(zip(p.img_w, p.img_h)))
    if len(sizes) > 1:
        i = next(j for j, wh in enumerate(zip(p.img_w, p.img_h)) if wh != (p.img_w[0], p.img_h[0]))
        raise AnnotationError(p.img_src[i], "images.width/height", [f"{w}x{h}" for w, h in sizes[:4]],
                              "an export whose images are named frame_<number> is matched as the frames of one "
                              "video, and one video has one frame size: import the export exactly as CVAT wrote it",
                              problem="frames of one video task with different sizes")
    p.video_size = sizes[0] if sizes else None
    p.video_size_field = "images.width/height"
    if numbers:
        diffs = np.diff(np.unique(np.asarray(numbers, dtype=np.int64)))
        step = int(np.gcd.reduce(diffs)) if diffs.size else 1
        p.video_frames = (min(numbers), max(numbers), step)
    return _resolve_video(p, manifest, video, shown)


_FORMAT_NAMES = {"coco": "COCO 1.0", "cvat_images": "CVAT for images 1.1", "cvat_video": "CVAT for video 1.1"}
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
        if p.format == "cvat_video":
            field, what = "meta/source", ("this 'CVAT for video 1.1' export names no video file (CVAT writes none in "
                                          "a job-level export)")
        else:
            field, what = "video", (f"this {_FORMAT_NAMES.get(p.format, p.format)!r} export of a video task names "
                                    "its frames (frame_<number>) but never the video")
        raise AnnotationError(src, field, None, f"{what}: " + _VIDEO_REMEDY, problem="cannot tell which of our "
                              f"videos this video task was made from (frames of {len(known)} videos extracted)")
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
            raise AnnotationError(src, p.video_size_field, f"{w}x{h}", f"our frames of {named} are "
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
