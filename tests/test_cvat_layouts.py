"""Every export layout CVAT writes for 'CVAT for images 1.1', 'CVAT for video 1.1' and 'COCO 1.0', and one test
per remedy the import gives for a layout it refuses.

The XML layouts are built here the way CVAT's exporter writes them (cvat/apps/dataset_manager/bindings.py and
formats/cvat.py, 1.x to 2.x servers), described in pipeline/cvat/cvat_xml.py: task-level exports (<meta><task>,
original_size inside <task>, <source> under <meta> on older servers and inside <task> on newer ones), job-level
exports (<meta><job>, original_size directly under <meta>, no <source>), with and without <segments>. A video
export lists every frame of a track (interpolated frames with keyframe="0") up to the frame where it goes outside.
Expected counts come from a plain count of the XML / JSON in the test, never from the importer.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest

from pipeline.cvat import LabelMapping, read_export
from pipeline.errors import AnnotationError

FIXTURES = Path(__file__).parents[2] / "shared" / "fixtures"
TENNIS = "cvat_coco_tennis_players/annotations/instances_default.json"

W, H = 64, 48
MAPPING = LabelMapping(mapping={"person": "person"}, ignore={"car"})


def fixture(rel: str) -> Path:
    path = FIXTURES / rel
    if not path.exists():
        pytest.skip(f"real CVAT fixture not available: {path} (../shared/fixtures is absent)")
    return path


def load(path: Path, mapping: LabelMapping = MAPPING, **kw):
    return read_export(path, annotator="anna", task="task-1", mapping=mapping, **kw)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib) -> ET.Element:
    el = ET.SubElement(parent, tag, {k: str(v) for k, v in attrib.items()})
    if text is not None:
        el.text = text
    return el


def _size(parent: ET.Element) -> None:
    size = _sub(parent, "original_size")
    _sub(size, "width", str(W))
    _sub(size, "height", str(H))


def _labels(parent: ET.Element) -> None:
    labels = _sub(parent, "labels")
    for name in ("person", "car"):
        label = _sub(labels, "label")
        _sub(label, "name", name)
        _sub(label, "attributes")


def _meta(root: ET.Element, *, level: str, size_at: str | None, source_at: str | None, segments: bool,
          start: int, stop: int, step: int, mode: str = "interpolation") -> None:
    meta = _sub(root, "meta")
    scope = _sub(meta, level)
    _sub(scope, "id", "7")
    if level == "task":
        _sub(scope, "name", "line 3 collar")
    _sub(scope, "size", str((stop - start) // step + 1))
    _sub(scope, "mode", mode)
    _sub(scope, "overlap", "0")
    _sub(scope, "bugtracker", "")
    _sub(scope, "created", "2024-03-01 10:00:00.000000+00:00")
    _sub(scope, "updated", "2024-03-02 10:00:00.000000+00:00")
    _sub(scope, "subset", "default")
    _sub(scope, "start_frame", str(start))
    _sub(scope, "stop_frame", str(stop))
    _sub(scope, "frame_filter", f"step={step}" if step > 1 else "")
    if segments:
        segs = _sub(scope, "segments")
        seg = _sub(segs, "segment")
        for tag, text in (("id", "11"), ("start", "0"), ("stop", str((stop - start) // step)),
                          ("url", "http://cvat.local/api/jobs/7")):
            _sub(seg, tag, text)
    _sub(scope, "owner")
    _sub(scope, "assignee")
    _labels(scope)
    if size_at == level:
        _size(scope)
    if source_at == level:
        _sub(scope, "source", "op_collar_01.mp4")
    _sub(meta, "dumped", "2024-03-02 11:00:00.000000+00:00")
    if size_at == "meta":
        _size(meta)
    if source_at == "meta":
        _sub(meta, "source", "op_collar_01.mp4")


def _box(parent: ET.Element, frame: int, x: float, *, outside: int = 0, keyframe: int = 1, occluded: int = 0) -> None:
    _sub(parent, "box", frame=frame, keyframe=keyframe, outside=outside, occluded=occluded, xtl=f"{x:.2f}",
         ytl="4.00", xbr=f"{x + 10:.2f}", ybr="30.00", z_order=0)


def video_xml(tmp_path: Path, *, level: str = "task", size_at: str | None = "task", source_at: str | None = "meta",
              segments: bool = True, start: int = 10, stop: int = 40, step: int = 5, mode: str = "interpolation",
              name: str = "annotations.xml") -> Path:
    """A 'CVAT for video 1.1' export as CVAT writes it: frames start, start+step, ... <= stop; tracks:
    0 'person' from the first frame to an outside keyframe (interpolated frames in between have keyframe=0);
    1 'person' from the third frame to the end, occluded; 2 'car' on two frames then outside (ignored label);
    3 'person' polygon (not a box); a single-frame shape of 'person' as CVAT writes a shape: a keyframe and an
    outside keyframe one step later."""
    root = ET.Element("annotations")
    _sub(root, "version", "1.1")
    _meta(root, level=level, size_at=size_at, source_at=source_at, segments=segments, start=start, stop=stop,
          step=step, mode=mode)
    frames = list(range(start, stop + 1, step))
    t0 = _sub(root, "track", id=0, label="person", source="manual")
    for k, f in enumerate(frames[:4]):
        _box(t0, f, 2 + 2 * k, keyframe=int(k in (0, 3)), outside=int(k == 3))
    t1 = _sub(root, "track", id=1, label="person", source="manual")
    for k, f in enumerate(frames[2:]):
        _box(t1, f, 30 + k, keyframe=int(k == 0), occluded=1)
    t2 = _sub(root, "track", id=2, label="car", source="manual")
    for k, f in enumerate(frames[1:4]):
        _box(t2, f, 20, outside=int(k == 2), keyframe=int(k in (0, 2)))
    t3 = _sub(root, "track", id=3, label="person", source="manual")
    _sub(t3, "polygon", frame=frames[0], keyframe=1, outside=0, occluded=0, points="1,1;5,1;5,5", z_order=0)
    _sub(t3, "polygon", frame=frames[1], keyframe=1, outside=1, occluded=0, points="1,1;5,1;5,5", z_order=0)
    t4 = _sub(root, "track", id=4, label="person", source="manual")
    _box(t4, frames[-2], 40)
    _box(t4, frames[-1], 40, outside=1)
    path = tmp_path / name
    path.write_bytes(b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root))
    return path


def count_video(path: Path) -> dict:
    """Plain count of a video export: task frames from meta, visible boxes per label, outside shapes."""
    root = ET.parse(path).getroot()
    scope = root.find("meta/task")
    if scope is None:
        scope = root.find("meta/job")
    start, stop = int(scope.findtext("start_frame")), int(scope.findtext("stop_frame"))
    filt = scope.findtext("frame_filter") or ""
    step = int(filt.split("=")[1]) if filt else 1
    boxes: dict[str, int] = {}
    outside = 0
    for track in root.iter("track"):
        for box in track.iter("box"):
            if box.get("outside") == "1":
                outside += 1
            else:
                boxes[track.get("label")] = boxes.get(track.get("label"), 0) + 1
    return {"frames": list(range(start, stop + 1, step)), "boxes": boxes, "outside": outside,
            "polygon_tracks": sum(1 for t in root.iter("track") if t.find("polygon") is not None)}


VIDEO_LAYOUTS = {
    # CVAT 1.x / 2.0 task export: original_size in <task>, <source> under <meta>
    "task, size in task, source in meta, segments": dict(level="task", size_at="task", source_at="meta"),
    # CVAT 2.x task export (meta_for_task): original_size and <source> in <task>
    "task, size and source in task, segments": dict(level="task", size_at="task", source_at="task"),
    "task, size in task, no segments": dict(level="task", size_at="task", source_at="task", segments=False),
    # CVAT 2.x job export: <meta><job>, original_size directly under <meta>, no <source>
    "job, size in meta, segments": dict(level="job", size_at="meta", source_at=None),
    "job, size in meta, no segments": dict(level="job", size_at="meta", source_at=None, segments=False),
    "job, size in job": dict(level="job", size_at="job", source_at=None),
    "task, size in meta": dict(level="task", size_at="meta", source_at="meta"),
    "job of a later segment, step 1": dict(level="job", size_at="meta", source_at=None, start=120, stop=135, step=1),
}


@pytest.mark.parametrize("layout", VIDEO_LAYOUTS.values(), ids=VIDEO_LAYOUTS.keys())
def test_every_cvat_for_video_layout_imports_with_plain_counts(tmp_path, layout):
    path = video_xml(tmp_path, **layout)
    expected = count_video(path)
    result = load(path, non_box_shapes="skip")
    c = result.counts
    assert result.format == "cvat_video"
    assert result.images.source_frame.tolist() == expected["frames"]
    assert set(zip(result.images.width, result.images.height)) == {(W, H)}
    assert c["boxes"] == expected["boxes"]["person"]
    assert c["ignored_labels"] == {"car": expected["boxes"]["car"]}
    assert c["outside_shapes"] == expected["outside"]  # outside boxes (the polygon track is only counted)
    assert c["non_box_shapes"] == {"polygon": expected["polygon_tracks"]}
    assert result.video_source == ("op_collar_01.mp4" if layout.get("source_at") else None)
    occluded = result.table[result.table.track_id == 1]
    assert occluded.occluded.all() and len(occluded) == len(expected["frames"]) - 2


def test_job_level_video_export_matches_our_frames_through_the_video_folder(tmp_path):
    path = video_xml(tmp_path, level="job", size_at="meta", source_at=None)
    frames = count_video(path)["frames"]
    manifest = pd.DataFrame({
        "frame_key": [f"frames/ops/{v}/{f * 200:09d}.jpg" for v in ("v1", "v2") for f in frames],
        "file_name": [f"ops__{v}__{f * 200:09d}.jpg" for v in ("v1", "v2") for f in frames],
        "source_frame": frames * 2, "video_id": ["v1"] * len(frames) + ["v2"] * len(frames),
        "video_file": ["op_collar_01.mp4"] * len(frames) + ["op_collar_02.mp4"] * len(frames),
        "width": W, "height": H})
    result = load(path, frame_manifest=manifest, video="v2", non_box_shapes="skip")
    assert result.video_id == "v2" and set(result.images.frame_key) == set(manifest.frame_key[len(frames):])


# --------------------------------------------------------------------------------------------- CVAT for images


def images_xml(tmp_path: Path, *, level: str, segments: bool, names: list[str], name: str = "annotations.xml",
               video_task: bool = False) -> Path:
    """'CVAT for images 1.1' as CVAT writes it: every frame an <image> (empty ones too), boxes, one polygon."""
    root = ET.Element("annotations")
    _sub(root, "version", "1.1")
    _meta(root, level=level, size_at=level if video_task else None, source_at="meta" if video_task else None,
          segments=segments, start=0, stop=len(names) - 1, step=1,
          mode="interpolation" if video_task else "annotation")
    for i, file_name in enumerate(names):
        image = _sub(root, "image", id=i, name=file_name, width=W, height=H)
        for k in range(i % 3):
            _sub(image, "box", label="person" if k == 0 else "car", source="manual", occluded=0, xtl=f"{k}.00",
                 ytl="1.00", xbr=f"{k + 9}.50", ybr="20.00", z_order=0)
        if i == 1:
            _sub(image, "polygon", label="person", source="manual", occluded=0, points="1,1;9,1;9,9", z_order=0)
    path = tmp_path / name
    path.write_bytes(b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root))
    return path


def count_images(path: Path) -> dict:
    root = ET.parse(path).getroot()
    boxes = [b.get("label") for b in root.iter("box")]
    return {"images": len(root.findall("image")), "person": boxes.count("person"), "car": boxes.count("car"),
            "negatives": sum(1 for im in root.findall("image") if im.find("box") is None)}


@pytest.mark.parametrize("level,segments", [("task", True), ("task", False), ("job", True), ("job", False)])
def test_every_cvat_for_images_layout_imports_with_plain_counts(tmp_path, level, segments):
    path = images_xml(tmp_path, level=level, segments=segments, names=[f"ops__v1__{i:09d}.jpg" for i in range(7)])
    expected = count_images(path)
    result = load(path, non_box_shapes="skip")
    c = result.counts
    assert result.format == "cvat_images"
    assert (c["images"], c["boxes"], c["ignored_boxes"]) == (expected["images"], expected["person"], expected["car"])
    assert int((result.images.n_boxes + result.images.n_ignored == 0).sum()) == expected["negatives"]


def _video_manifest(frames: list[int], videos=("v1", "v2"), size=(W, H)) -> pd.DataFrame:
    rows = [{"frame_key": f"frames/ops/{v}/{f * 40:09d}.jpg", "file_name": f"ops__{v}__{f * 40:09d}.jpg",
             "source_frame": f, "video_id": v, "video_file": f"{v}.mp4", "width": size[0], "height": size[1]}
            for v in videos for f in frames]
    return pd.DataFrame(rows)


def test_cvat_for_images_export_of_a_video_task_matches_by_frame_number(tmp_path):
    names = [f"frame_{f:06d}" for f in range(0, 35, 5)]  # CVAT names a video task's frames without extension
    path = images_xml(tmp_path, level="job", segments=True, names=names, video_task=True)
    expected = count_images(path)
    manifest = _video_manifest(list(range(0, 60, 5)))
    result = load(path, frame_manifest=manifest, video="v1", non_box_shapes="skip")
    assert result.images.source_frame.tolist() == list(range(0, 35, 5))
    assert result.images.frame_key.tolist() == [f"frames/ops/v1/{f * 40:09d}.jpg" for f in range(0, 35, 5)]
    assert result.counts["boxes"] == expected["person"]


# --------------------------------------------------------------------------------------------- COCO of a video task


def _tennis(tmp_path: Path, prefix: str = "") -> tuple[Path, dict]:
    doc = json.loads(fixture(TENNIS).read_text())
    for im in doc["images"]:
        im["file_name"] = prefix + im["file_name"]
    path = tmp_path / "instances_default.json"
    path.write_text(json.dumps(doc))
    return path, doc


@pytest.mark.parametrize("prefix", ["", "frames/", "images/default/"])
def test_coco_export_of_a_video_task_matches_by_frame_number(tmp_path, prefix):
    path, doc = _tennis(tmp_path, prefix)
    n_images, n_boxes = len(doc["images"]), len(doc["annotations"])
    numbers = [int(im["file_name"].rsplit("_", 1)[1].split(".")[0]) for im in doc["images"]]
    manifest = _video_manifest(sorted(numbers), size=(1280, 720))
    result = load(path, LabelMapping(), frame_manifest=manifest, video="v2")
    assert (result.counts["images"], result.counts["boxes"]) == (n_images, n_boxes)
    assert result.video_id == "v2" and result.counts["manifest_frames_not_in_export"] == 0
    assert result.images.source_frame.tolist() == numbers
    assert result.images.frame_key.tolist() == [f"frames/ops/v2/{f * 40:09d}.jpg" for f in numbers]
    # one video in the manifest: no folder needed
    alone = load(path, LabelMapping(), frame_manifest=_video_manifest(sorted(numbers), ("v1",), (1280, 720)))
    assert alone.video_id == "v1" and alone.counts["boxes"] == n_boxes


# --------------------------------------------------------------------------------------------- one test per remedy


def _refused(path: Path, **kw) -> str:
    with pytest.raises(AnnotationError) as err:
        load(path, **kw)
    message = str(err.value)
    assert str(path) in message and "Remedy:" in message
    assert "re-export" not in message, message  # a file as CVAT wrote it is never sent back to be exported again
    return message


def test_remedy_project_level_video_export_is_a_named_unsupported_layout(tmp_path):
    path = video_xml(tmp_path)
    root = ET.parse(path).getroot()
    meta = root.find("meta")
    task = meta.find("task")
    meta.remove(task)
    project = _sub(meta, "project")
    _sub(_sub(project, "tasks"), "task").extend(list(task))
    path.write_bytes(ET.tostring(root))
    message = _refused(path, non_box_shapes="skip")
    assert "unsupported CVAT layout: a project-level 'CVAT for video 1.1' export" in message
    assert "export each video task on its own" in message


def test_remedy_video_export_of_an_image_task_is_a_named_unsupported_layout(tmp_path):
    path = video_xml(tmp_path, size_at=None, source_at=None, mode="annotation")
    message = _refused(path, non_box_shapes="skip")
    assert "unsupported CVAT layout: a 'CVAT for video 1.1' export of an image task" in message
    assert "export this task as 'CVAT for images 1.1' or 'COCO 1.0'" in message


def test_remedy_video_export_without_any_frame_size_was_edited(tmp_path):
    path = video_xml(tmp_path, size_at=None)
    message = _refused(path, non_box_shapes="skip")
    assert "no original_size under meta/task, meta/job or meta" in message
    assert "so it was edited after it was downloaded" in message and "If it is unedited" in message


def test_remedy_meta_without_task_job_or_project_was_edited(tmp_path):
    path = video_xml(tmp_path)
    root = ET.parse(path).getroot()
    root.find("meta").remove(root.find("meta/task"))
    path.write_bytes(ET.tostring(root))
    message = _refused(path, non_box_shapes="skip")
    assert "this is no layout CVAT writes" in message


def test_remedy_altered_file_says_so(tmp_path):
    path = video_xml(tmp_path)
    root = ET.parse(path).getroot()
    root.findall("track")[1].set("id", "0")
    path.write_bytes(ET.tostring(root))
    message = _refused(path, non_box_shapes="skip")
    assert "duplicate track id" in message and "CVAT never writes this" in message


def test_remedy_job_export_among_several_videos_needs_the_video_folder(tmp_path):
    path = video_xml(tmp_path, level="job", size_at="meta", source_at=None)
    manifest = _video_manifest(count_video(path)["frames"])
    message = _refused(path, frame_manifest=manifest, non_box_shapes="skip")
    assert "CVAT writes none in a job-level export" in message
    assert "annotations/incoming/video-<video_id>/<annotator>/" in message


def test_remedy_coco_of_a_video_task_among_several_videos_needs_the_video_folder(tmp_path):
    path, doc = _tennis(tmp_path)
    manifest = _video_manifest(list(range(len(doc["images"]))), size=(1280, 720))
    message = _refused(path, mapping=LabelMapping(), frame_manifest=manifest)
    assert "'COCO 1.0' export of a video task names its frames (frame_<number>) but never the video" in message
    assert "annotations/incoming/video-<video_id>/<annotator>/" in message


def test_remedy_coco_of_a_video_task_with_frames_we_did_not_extract(tmp_path):
    path, doc = _tennis(tmp_path)
    every_10th = list(range(0, len(doc["images"]), 10))
    message = _refused(path, mapping=LabelMapping(), frame_manifest=_video_manifest(every_10th, ("v1",), (1280, 720)))
    assert "video frame not in the task manifest" in message
    assert "start frame 0, frame step 10 (or a multiple)" in message


def test_remedy_coco_of_a_video_task_of_another_frame_size(tmp_path):
    path, doc = _tennis(tmp_path)
    manifest = _video_manifest(list(range(len(doc["images"]))), ("v1",), (1920, 1080))
    message = _refused(path, mapping=LabelMapping(), frame_manifest=manifest)
    assert "frame size differs from our frames of the video" in message and "images.width/height" in message


def test_remedy_coco_of_a_video_task_without_frame_numbers_in_the_manifest(tmp_path):
    path, doc = _tennis(tmp_path)
    manifest = pd.DataFrame({"frame_key": ["frames/photos/a/000000000.jpg"], "file_name": ["a.jpg"]})
    message = _refused(path, mapping=LabelMapping(), frame_manifest=manifest)
    assert "the manifest has no frame numbers" in message and "source_frame" in message


def test_remedy_unmapped_labels_are_all_listed_at_once(tmp_path):
    path = tmp_path / "instances_default.json"
    labels = ["person", "car", "tram", "pet", "tram"]
    doc = {"images": [{"id": 1, "file_name": "a.jpg", "width": W, "height": H}],
           "categories": [{"id": i + 1, "name": n} for i, n in enumerate(dict.fromkeys(labels))],
           "annotations": [{"id": j + 1, "image_id": 1, "category_id": list(dict.fromkeys(labels)).index(n) + 1,
                            "bbox": [1, 1, 5, 5]} for j, n in enumerate(labels)]}
    path.write_text(json.dumps(doc))
    unknown = sorted(set(labels) - {"person"})
    message = _refused(path, mapping=LabelMapping())
    assert f"unmapped labels ({len(unknown)})" in message and str(unknown) in message
    assert "'tram': 2 boxes" in message and "ignore_labels" in message
    ok = load(path, LabelMapping(ignore={"car", "tram", "pet"}))
    assert ok.counts["boxes"] == labels.count("person") and ok.counts["ignored_boxes"] == len(labels) - 1
