"""CVAT export import (pipeline/cvat/) against real CVAT exports and hostile / broken variants of them.

The real exports live in ../shared/fixtures (never copied into this repository); tests that need one are
skipped, with the reason shown, where that folder is absent. Broken exports are built in tmp_path by
mutating the real files.
"""
from __future__ import annotations

import io
import json
import stat
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import keys
from pipeline.cvat import (ArchiveLimits, BOX_COLUMNS, IMAGE_COLUMNS, LabelMapping, package_name, read_export,
                           write_task_package)
from pipeline.errors import AnnotationError, PipelineInputError
from pipeline.hashing import sha256_file

FIXTURES = Path(__file__).parents[2] / "shared" / "fixtures"
TENNIS = "cvat_coco_tennis_players/annotations/instances_default.json"
VIDEO_2020 = "cvat_datumaro_fixtures/openvinotoolkit_datumaro/cvat_dataset/for_video/annotations.xml"
VIDEO_NEW = "cvat_datumaro_fixtures/cvat-ai_datumaro/cvat_dataset/for_video"
IMAGES_TASK = "cvat_datumaro_fixtures/openvinotoolkit_datumaro/cvat_dataset/for_images/export_task/train.xml"
IMAGES_NEW = "cvat_datumaro_fixtures/cvat-ai_datumaro/cvat_dataset/for_images/train.xml"
IMAGES_PROJECT = ("cvat_datumaro_fixtures/openvinotoolkit_datumaro/cvat_dataset/for_images/export_project/"
                  "annotations.xml")
COCO_INSTANCES = "cvat_datumaro_fixtures/openvinotoolkit_datumaro/coco_instances"
DATUMARO_JSON = "cvat_datumaro_fixtures/cvat-ai_datumaro/datumaro_dataset_diverse/annotations/default.json"

# Expected counts, counted independently of pipeline/cvat/:
# tennis: python -c "import json; d=json.load(open(TENNIS)); print(len(d['images']), len(d['annotations']),
#   d['categories'], {a['image_id'] for a in d['annotations']} == {i['id'] for i in d['images']},
#   collections.Counter(a['attributes']['track_id'] for a in d['annotations']))"
#   -> 541 images, 1082 annotations, one category {id 1, 'player'}, every image has a box (2 each),
#   track_id 0: 541, track_id 1: 541; all 1280x720; no bbox leaves the image (so nothing is clipped).
TENNIS_IMAGES, TENNIS_BOXES, TENNIS_PER_TRACK = 541, 1082, 541
# video 2020 dump (read by eye, 80 lines): start_frame 10, stop_frame 19, frame_filter step=3 -> frames
#   10, 13, 16, 19 (4 frames, <size>4</size>); original_size 25x20; track 0 'II' boxes: frame 10 visible
#   (3,4)-(10,5) occluded, frame 13 outside, frame 16 outside -> 1 box; track 1 'klhg' points,
#   track 2 'II' polyline (not boxes).
VIDEO_FRAMES, VIDEO_BOXES = [10, 13, 16, 19], 1
# CVAT for images export_task/train.xml: 2 images (8x8, 10x10); one <box> 'label1' (0,2)-(4,4) occluded on
#   img0; polyline '' on img0, polygon '' and points 'label2' on img1 -> 1 box, 1 negative.
# export_project/annotations.xml: 6 <image> (img0/img1 in subsets Test, Train, Validation, ids repeat per
#   subset), one 'label1' box per img0 -> 3 boxes; polygon 'label1' on every img1.


def fixture(rel: str) -> Path:
    path = FIXTURES / rel
    if not path.exists():
        pytest.skip(f"real CVAT fixture not available: {path} (../shared/fixtures is absent)")
    return path


def people(**kw) -> LabelMapping:
    return LabelMapping(**kw)


def load(path: Path, mapping: LabelMapping | None = None, **kw):
    return read_export(path, annotator="anna", task="task-1", mapping=mapping or LabelMapping(), **kw)


def tennis_doc() -> dict:
    return json.loads(fixture(TENNIS).read_text())


def write_json(tmp_path: Path, doc: dict, name: str = "instances_default.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def coco_zip(tmp_path: Path, doc: dict | bytes, name: str = "export.zip", extra: dict | None = None) -> Path:
    path = tmp_path / name
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("annotations/instances_default.json", data)
        for member, content in (extra or {}).items():
            zf.writestr(member, content)
    return path


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """tempfile's directory, redirected so a test can see what an import leaves behind."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return scratch


# --------------------------------------------------------------------------------------------- real exports


def test_tennis_coco_json_counts():
    result = load(fixture(TENNIS))
    c = result.counts
    assert result.format == "coco"
    assert (c["images"], c["boxes"], c["negatives"], c["clipped"]) == (TENNIS_IMAGES, TENNIS_BOXES, 0, 0)
    assert c["per_label"] == {"player": TENNIS_BOXES} and c["per_class"] == {"person": TENNIS_BOXES}
    t = result.table
    assert list(t.columns) == BOX_COLUMNS and list(result.images.columns) == IMAGE_COLUMNS
    assert set(t.class_name) == {"person"} and set(t.class_id) == {0} and set(t.label) == {"player"}
    assert t.track_id.value_counts().to_dict() == {0: TENNIS_PER_TRACK, 1: TENNIS_PER_TRACK}
    assert t.source_frame.isna().all() and not t.clipped.any()
    assert (result.images.n_boxes == 2).all() and len(result.images) == TENNIS_IMAGES
    assert result.images.file_name.iloc[0] == "frame_000000.png"
    assert result.images.frame_key.iloc[-1] == "frame_000540.png"
    first = t.iloc[0]  # annotation id 1: bbox [659.72, 389.51, 93.47, 257.55] on image 1
    assert (first.image_id, first.file_name, first.width, first.height) == (1, "frame_000000.png", 1280, 720)
    assert (first.x1, first.y1) == (659.72, 389.51)
    assert first.x2 == pytest.approx(659.72 + 93.47) and first.y2 == pytest.approx(389.51 + 257.55)
    assert t.export_sha256.iloc[0] == sha256_file(fixture(TENNIS)) == result.export_sha256
    assert set(t.annotator) == {"anna"} and set(t.task) == {"task-1"}


def test_tennis_as_cvat_zip_and_directory(tmp_path, private_tmp):
    doc = tennis_doc()
    zipped = coco_zip(tmp_path, doc, extra={"images/frame_000000.png": b"\x89PNG fake"})
    before = sha256_file(zipped)
    from_zip = load(zipped)
    assert (from_zip.counts["images"], from_zip.counts["boxes"]) == (TENNIS_IMAGES, TENNIS_BOXES)
    assert from_zip.export_sha256 == before == sha256_file(zipped)  # source only read
    assert from_zip.export_file == "export.zip" and set(from_zip.table.subset) == {"default"}
    assert list(private_tmp.iterdir()) == []                        # temporary extraction cleaned up
    from_dir = load(fixture(TENNIS).parents[1])
    assert (from_dir.counts["images"], from_dir.counts["boxes"]) == (TENNIS_IMAGES, TENNIS_BOXES)
    pd.testing.assert_frame_equal(from_dir.table.drop(columns=["export_file", "export_sha256"]),
                                  from_zip.table.drop(columns=["export_file", "export_sha256"]))


def test_images_without_boxes_are_negatives(tmp_path):
    doc = tennis_doc()
    empty = {1, 2, 3, 540, 541}
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] not in empty]
    result = load(write_json(tmp_path, doc))
    assert result.counts["images"] == TENNIS_IMAGES and result.counts["negatives"] == len(empty)
    assert result.counts["boxes"] == TENNIS_BOXES - 2 * len(empty)
    negatives = result.images[result.images.n_boxes == 0]
    assert set(negatives.image_id) == empty and not set(negatives.frame_key) & set(result.table.frame_key)


def test_video_xml_2020_dump_start_frame_step_and_outside():
    path = fixture(VIDEO_2020)
    mapping = people(mapping={"II": "person"}, ignore={"klhg"})
    result = load(path, mapping, non_box_shapes="skip")
    c = result.counts
    assert result.format == "cvat_video"
    assert result.images.source_frame.tolist() == VIDEO_FRAMES
    assert result.images.file_name.tolist() == [f"frame_{f:06d}" for f in VIDEO_FRAMES]
    assert set(zip(result.images.width, result.images.height)) == {(25, 20)}
    assert (c["images"], c["boxes"], c["negatives"]) == (4, VIDEO_BOXES, 3)
    assert c["non_box_shapes"] == {"points": 1, "polyline": 1} and c["outside_shapes"] == 2
    box = result.table.iloc[0]
    assert (box.source_frame, box.track_id, box.occluded, box.label, box.class_id) == (10, 0, True, "II", 0)
    assert (box.x1, box.y1, box.x2, box.y2) == (3.0, 4.0, 10.0, 5.0)
    # the real dump has a polyline in a track whose label is mapped: by default that is an error
    with pytest.raises(AnnotationError, match=r"polyline \(not a rectangle\).*track 2") as err:
        load(path, mapping)
    assert str(path) in str(err.value) and "Remedy:" in str(err.value)


def test_video_newer_dump_with_skeleton_as_zip(tmp_path):
    folder = fixture(VIDEO_NEW)
    zipped = tmp_path / "video.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        for file in sorted(folder.rglob("*")):
            zf.write(file, file.relative_to(folder).as_posix())
    result = load(zipped, people(mapping={"II": "person"}, ignore={"klhg"}), non_box_shapes="skip")
    assert result.images.source_frame.tolist() == VIDEO_FRAMES
    assert result.counts["boxes"] == 1 and result.counts["non_box_shapes"] == {"points": 1, "polyline": 1,
                                                                                "skeleton": 1}


def _video_variant(tmp_path: Path, boxes: list[dict], name: str = "annotations.xml") -> Path:
    root = ET.fromstring(fixture(VIDEO_2020).read_bytes())
    for track in root.findall("track"):
        if track.get("id") != "0":
            root.remove(track)
    track = root.find("track")
    for old in list(track):
        track.remove(old)
    for b in boxes:
        ET.SubElement(track, "box", {k: str(v) for k, v in b.items()})
    path = tmp_path / name
    path.write_bytes(ET.tostring(root))
    return path


def _kf(frame, xtl, ytl, xbr, ybr, outside=0, keyframe=1, occluded=0):
    return dict(frame=frame, outside=outside, occluded=occluded, keyframe=keyframe, xtl=xtl, ytl=ytl, xbr=xbr,
                ybr=ybr, z_order=0)


def test_video_interpolation_between_keyframes(tmp_path):
    mapping = people(mapping={"II": "person"})
    # keyframes on 10 and 16 -> 13 is halfway; the track is not outside after 16, so CVAT keeps it to 19
    path = _video_variant(tmp_path, [_kf(10, 3, 4, 10, 5), _kf(16, 9, 8, 16, 11)])
    t = load(path, mapping).table
    assert t.source_frame.tolist() == [10, 13, 16, 19]
    assert t[["x1", "y1", "x2", "y2"]].values.tolist() == [[3, 4, 10, 5], [6, 6, 13, 8], [9, 8, 16, 11],
                                                           [9, 8, 16, 11]]
    # an outside keyframe on 19 ends it there; frames before an interpolated outside still move towards it
    path = _video_variant(tmp_path, [_kf(10, 3, 4, 10, 5), _kf(16, 9, 8, 16, 11, outside=1)])
    t = load(path, mapping).table
    assert t.source_frame.tolist() == [10, 13] and t.iloc[1][["x1", "x2"]].tolist() == [6, 13]
    result = load(_video_variant(tmp_path, [_kf(13, 1, 1, 5, 5), _kf(16, 1, 1, 5, 5, outside=1)]), mapping)
    assert result.table.source_frame.tolist() == [13] and result.counts["negatives"] == 3


def test_video_frame_off_the_step_is_an_error(tmp_path):
    path = _video_variant(tmp_path, [_kf(10, 3, 4, 10, 5), _kf(14, 3, 4, 10, 5)])
    with pytest.raises(AnnotationError, match=r"not on the task's frame step") as err:
        load(path, people(mapping={"II": "person"}))
    assert "track 0 box[1].frame" in str(err.value) and "value 14" in str(err.value) and "10 + k*3" in str(err.value)


def test_cvat_for_images_fixtures():
    mapping = people(mapping={"label1": "person"}, ignore={"label2"})
    result = load(fixture(IMAGES_TASK), mapping)
    c = result.counts
    assert result.format == "cvat_images"
    assert (c["images"], c["boxes"], c["negatives"]) == (2, 1, 1)
    assert c["non_box_shapes"] == {"points": 1, "polygon": 1, "polyline": 1}
    box = result.table.iloc[0]
    assert (box.file_name, box.width, box.height, box.occluded) == ("img0.jpg", 8, 8, True)
    assert (box.x1, box.y1, box.x2, box.y2) == (0.0, 2.0, 4.0, 4.0) and pd.isna(box.track_id)
    newer = load(fixture(IMAGES_NEW), mapping).counts
    assert (newer["images"], newer["boxes"]) == (2, 1) and newer["non_box_shapes"]["skeleton"] == 2


def test_cvat_for_images_project_export_with_subsets():
    path = fixture(IMAGES_PROJECT)
    mapping = people(mapping={"label1": "person"}, ignore={"label2"})
    with pytest.raises(AnnotationError, match=r"polygon \(not a rectangle\)"):
        load(path, mapping)
    result = load(path, mapping, non_box_shapes="skip")
    assert (result.counts["images"], result.counts["boxes"], result.counts["negatives"]) == (6, 3, 3)
    assert sorted(result.table.frame_key) == ["Test/img0.jpg", "Train/img0.jpg", "Validation/img0.jpg"]
    assert result.images.frame_key.is_unique


def test_coco_instances_two_subsets_and_ignored_labels():
    folder = fixture(COCO_INSTANCES)
    result = load(folder, people(mapping={"a": "person", "B": "person"}, ignore={"C"}))
    c = result.counts
    assert (c["images"], c["boxes"]) == (2, 3) and c["per_label"] == {"a": 1, "b": 2}
    assert sorted(result.images.frame_key) == ["train/a.jpg", "val/b.jpg"]
    only_a = load(folder, people(mapping={"a": "person"}, ignore={"b", "c"}))
    assert only_a.counts["ignored_labels"] == {"b": 2} and only_a.counts["boxes"] == 1
    assert only_a.images.set_index("file_name").n_ignored.to_dict() == {"a.jpg": 1, "b.jpg": 1}


def test_label_mapping_is_case_insensitive_and_checked(tmp_path):
    doc = tennis_doc()
    doc["categories"][0]["name"] = "PLAYER"
    assert load(write_json(tmp_path, doc)).counts["per_class"] == {"person": TENNIS_BOXES}
    doc["categories"][0]["name"] = "car"
    with pytest.raises(AnnotationError, match="unmapped label") as err:
        load(write_json(tmp_path, doc))
    assert "'car'" in str(err.value) and "player" in str(err.value) and "person" in str(err.value)
    ignored = load(write_json(tmp_path, doc), people(ignore={"Car"}))
    assert ignored.counts["ignored_labels"] == {"car": TENNIS_BOXES} and ignored.counts["negatives"] == TENNIS_IMAGES
    with pytest.raises(PipelineInputError, match="unknown class"):
        LabelMapping(mapping={"player": "human"})


# --------------------------------------------------------------------------------------------- bad input


def _set(path, value):
    def mutate(doc):
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


def _delete(path):
    def mutate(doc):
        target = doc
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return mutate


def _dup(section):
    def mutate(doc):
        doc[section][1]["id"] = doc[section][0]["id"]
    return mutate


BAD_COCO = [
    ("missing annotations", _delete(["annotations"]), "missing required key", "field 'annotations'"),
    ("missing bbox", _delete(["annotations", 0, "bbox"]), "missing required key", "annotations[0].bbox"),
    ("missing file_name", _delete(["images", 0, "file_name"]), "missing required key", "images[0].file_name"),
    ("missing width", _delete(["images", 3, "width"]), "image width/height missing", "images[3] (id 4).width"),
    ("zero height", _set(["images", 3, "height"], 0), "not positive", "images[3] (id 4).height"),
    ("dangling image_id", _set(["annotations", 5, "image_id"], 99999), "dangling image_id", "value 99999"),
    ("dangling category_id", _set(["annotations", 5, "category_id"], 7), "dangling category_id", "value 7"),
    ("duplicate image id", _dup("images"), "duplicate image id", "images[1].id"),
    ("duplicate annotation id", _dup("annotations"), "duplicate annotation id", "annotations[1].id"),
    ("negative width", _set(["annotations", 7, "bbox"], [10, 10, -5, 20]), "negative, zero or NaN",
     "annotations[7] (id 8).bbox"),
    ("zero height", _set(["annotations", 7, "bbox"], [10, 10, 5, 0]), "negative, zero or NaN", "[10, 10, 5, 0]"),
    ("NaN width", _set(["annotations", 7, "bbox"], [10, 10, float("nan"), 20]), "negative, zero or NaN", "nan"),
    ("short bbox", _set(["annotations", 7, "bbox"], [10, 10, 5]), "malformed bbox", "annotations[7] (id 8).bbox"),
    ("text in bbox", _set(["annotations", 7, "bbox"], [10, "10", 5, 5]), "malformed bbox", "'10'"),
    ("far outside", _set(["annotations", 7, "bbox"], [1250.0, 10, 40, 20]), "outside the image by more than 2 px",
     "1280x720"),
    ("negative x", _set(["annotations", 7, "bbox"], [-3.5, 10, 40, 20]), "outside the image by more than 2 px",
     "annotations[7] (id 8).bbox"),
]


@pytest.mark.parametrize("mutate,problem,detail", [case[1:] for case in BAD_COCO], ids=[c[0] for c in BAD_COCO])
def test_bad_coco_is_refused_with_a_precise_message(tmp_path, mutate, problem, detail):
    doc = tennis_doc()
    mutate(doc)
    path = write_json(tmp_path, doc)
    with pytest.raises(AnnotationError) as err:
        load(path)
    message = str(err.value)
    assert problem in message and detail in message, message
    assert str(path) in message and "Remedy:" in message


def test_bad_coco_inside_a_zip_names_the_member(tmp_path):
    doc = tennis_doc()
    doc["annotations"][2]["image_id"] = 4242
    path = coco_zip(tmp_path, doc)
    with pytest.raises(AnnotationError, match="dangling image_id") as err:
        load(path)
    assert f"{path}!annotations/instances_default.json" in str(err.value)


def test_malformed_json_reports_the_parser_position(tmp_path):
    data = fixture(TENNIS).read_bytes()
    path = tmp_path / "instances_default.json"
    path.write_bytes(data[:5000])
    with pytest.raises(AnnotationError, match=r"malformed JSON.*line 1 column \d+") as err:
        load(path)
    assert str(path) in str(err.value)


def test_small_overshoot_is_clipped_and_counted(tmp_path):
    doc = tennis_doc()
    doc["annotations"][0]["bbox"] = [-1.5, 10.0, 40.0, 20.0]          # 1.5 px left of the image
    doc["annotations"][1]["bbox"] = [1250.0, 700.0, 31.0, 21.5]       # 1 px right, 1.5 px below
    result = load(write_json(tmp_path, doc))
    assert result.counts["clipped"] == 2 and result.table.clipped.sum() == 2
    a, b = result.table.iloc[0], result.table.iloc[1]
    assert (a.x1, a.x2) == (0.0, 38.5) and (b.x2, b.y2) == (1280.0, 720.0)
    with pytest.raises(AnnotationError, match="more than 1 px"):
        load(write_json(tmp_path, doc), clip_tolerance_px=1.0)


def test_malformed_and_broken_xml(tmp_path):
    data = fixture(VIDEO_2020).read_bytes()
    cut = tmp_path / "annotations.xml"
    cut.write_bytes(data[:2500])
    with pytest.raises(AnnotationError, match=r"malformed XML.*line \d+ column \d+") as err:
        load(cut)
    assert str(cut) in str(err.value)

    root = ET.fromstring(fixture(IMAGES_TASK).read_bytes())
    box = root.find("image/box")
    box.set("xbr", box.get("xtl"))
    zero = tmp_path / "zero.xml"
    zero.write_bytes(ET.tostring(root))
    with pytest.raises(AnnotationError, match="negative, zero or NaN") as err:
        load(zero, people(mapping={"label1": "person"}, ignore={"label2"}))
    assert "image 'img0.jpg' (id 0) shape[0]" in str(err.value)

    root = ET.fromstring(fixture(IMAGES_TASK).read_bytes())
    del root.find("image").attrib["width"]
    nowidth = tmp_path / "nowidth.xml"
    nowidth.write_bytes(ET.tostring(root))
    with pytest.raises(AnnotationError, match="image width/height missing"):
        load(nowidth, people(mapping={"label1": "person"}, ignore={"label2"}))

    root = ET.fromstring(fixture(IMAGES_TASK).read_bytes())
    root.findall("image")[1].set("id", "0")
    dup = tmp_path / "dup.xml"
    dup.write_bytes(ET.tostring(root))
    with pytest.raises(AnnotationError, match="duplicate image id"):
        load(dup, people(mapping={"label1": "person"}, ignore={"label2"}))

    evil = tmp_path / "entity.xml"
    evil.write_bytes(b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]>' + data.split(b"?>", 1)[1])
    with pytest.raises(AnnotationError, match="document type declaration"):
        load(evil)


def test_unknown_formats_name_the_file_and_the_accepted_formats(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello, these are not annotations")
    datumaro = fixture(DATUMARO_JSON)
    other_zip = tmp_path / "datumaro.zip"
    with zipfile.ZipFile(other_zip, "w") as zf:
        zf.write(datumaro, "annotations/default.json")
    for path in (text, datumaro, other_zip):
        with pytest.raises(AnnotationError, match="unrecognised export format") as err:
            load(path)
        message = str(err.value)
        assert str(path) in message and "COCO 1.0" in message and "CVAT for video 1.1" in message
    with pytest.raises(AnnotationError, match="not found"):
        load(tmp_path / "missing.zip")


# --------------------------------------------------------------------------------------------- hostile zips


def _set_encrypted_flag(path: Path, member: str) -> None:
    """Set bit 0 (encrypted) of a member's general-purpose flags in the local and central headers."""
    data = bytearray(path.read_bytes())
    name = member.encode()
    for signature, flag_offset, name_offset in ((b"PK\x03\x04", 6, 30), (b"PK\x01\x02", 8, 46)):
        start = 0
        while (start := data.find(signature, start)) != -1:
            if data[start + name_offset:start + name_offset + len(name)] == name:
                data[start + flag_offset] |= 0x01
            start += 4
    path.write_bytes(bytes(data))


def _hostile(tmp_path: Path, kind: str) -> Path:
    doc = fixture(TENNIS).read_bytes()
    path = tmp_path / f"{kind}.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("annotations/instances_default.json", doc)
        if kind == "traversal":
            zf.writestr("../../escaped.txt", b"owned")
        elif kind == "absolute":
            zf.writestr("/tmp/escaped.txt", b"owned")
        elif kind == "symlink":
            link = zipfile.ZipInfo("images/frame_000000.png")
            link.create_system = 3
            link.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(link, "../../../../etc/passwd")
        elif kind == "encrypted":
            zf.writestr("images/frame_000000.png", b"secret" * 10)
        elif kind == "bomb":
            zf.writestr("images/frame_000000.png", b"\0" * (8 * 1024 * 1024))
    if kind == "encrypted":
        _set_encrypted_flag(path, "images/frame_000000.png")
    return path


@pytest.mark.parametrize("kind,problem", [
    ("traversal", "path traversal"), ("absolute", "path traversal"), ("symlink", "symlink member"),
    ("encrypted", "encrypted member"), ("bomb", "suspicious compression ratio"),
])
def test_hostile_archives_are_refused_before_extracting(tmp_path, private_tmp, kind, problem):
    path = _hostile(tmp_path, kind)
    before = sha256_file(path)
    with pytest.raises(AnnotationError, match=problem) as err:
        load(path)
    assert str(path) in str(err.value)
    assert list(private_tmp.iterdir()) == []        # nothing was extracted, not even the annotations
    assert not (tmp_path.parent / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()
    assert sha256_file(path) == before


def test_archive_limits_total_size_and_member_count(tmp_path, private_tmp):
    path = coco_zip(tmp_path, tennis_doc(), extra={f"images/frame_{i:06d}.png": b"x" for i in range(5)})
    with pytest.raises(AnnotationError, match="archive too large"):
        load(path, limits=ArchiveLimits(max_total_bytes=100_000))
    with pytest.raises(AnnotationError, match="too many archive members"):
        load(path, limits=ArchiveLimits(max_members=4))
    assert list(private_tmp.iterdir()) == []
    assert load(path).counts["boxes"] == TENNIS_BOXES


# --------------------------------------------------------------------------------------------- frame matching


def _tennis_manifest(names: list[str]) -> pd.DataFrame:
    rows = [{"file_name": n, "frame_key": f"frames/tennis/clip6/{i * 40:09d}.jpg"} for i, n in enumerate(names)]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=3).reset_index(drop=True)  # order must not matter


def test_frames_resolve_through_the_manifest_by_name(tmp_path):
    doc = tennis_doc()
    names = [im["file_name"] for im in doc["images"]]
    manifest = _tennis_manifest(names)
    expected = dict(zip(manifest.file_name, manifest.frame_key))
    doc["images"] = doc["images"][::-1]                                   # export order differs
    for im in doc["images"][:10]:
        im["file_name"] = "images/" + im["file_name"]                    # relative path in the export
    result = load(write_json(tmp_path, doc), frame_manifest=manifest)
    got = dict(zip(result.images.file_name.str.replace("images/", "", regex=False), result.images.frame_key))
    assert got == expected
    assert result.counts["manifest_frames_not_in_export"] == 0
    assert set(result.table.frame_key) == set(expected.values())


def test_manifest_repeats_are_harmless_but_conflicts_are_not(tmp_path):
    doc = tennis_doc()
    manifest = _tennis_manifest([im["file_name"] for im in doc["images"]])
    path = write_json(tmp_path, doc)
    doubled = pd.concat([manifest, manifest], ignore_index=True)  # e.g. a frame listed by two manifests
    assert load(path, frame_manifest=doubled).images.frame_key.tolist() == \
        load(path, frame_manifest=manifest).images.frame_key.tolist()
    conflict = pd.concat([manifest, pd.DataFrame([{"file_name": "frame_000007.png", "frame_key": "frames/x/y.jpg"}])])
    with pytest.raises(PipelineInputError, match="ambiguous manifest entry"):
        load(path, frame_manifest=conflict)
    cam1 = manifest.assign(file_name="cam1/" + manifest.file_name)  # one basename, two frames: never guessed
    cam2 = manifest.assign(file_name="cam2/" + manifest.file_name, frame_key=manifest.frame_key + "2")
    with pytest.raises(AnnotationError, match="matches several manifest frames"):
        load(path, frame_manifest=pd.concat([cam1, cam2]))


def test_export_image_missing_from_manifest_is_an_error(tmp_path):
    doc = tennis_doc()
    manifest = _tennis_manifest([im["file_name"] for im in doc["images"]])
    manifest = manifest[manifest.file_name != "frame_000123.png"]
    with pytest.raises(AnnotationError, match="matches no frame in the task manifest") as err:
        load(write_json(tmp_path, doc), frame_manifest=manifest)
    message = str(err.value)
    assert "frame_000123.png" in message and "task package" in message


def test_video_frames_resolve_by_source_frame(tmp_path):
    path = fixture(VIDEO_2020)
    mapping = people(mapping={"II": "person"}, ignore={"klhg"})
    manifest = pd.DataFrame({"frame_key": [f"frames/ops/t/{f:09d}.jpg" for f in VIDEO_FRAMES],
                             "file_name": [f"ops__t__{f:09d}.jpg" for f in VIDEO_FRAMES],
                             "source_frame": VIDEO_FRAMES})
    result = load(path, mapping, frame_manifest=manifest, non_box_shapes="skip")
    assert result.images.frame_key.tolist() == manifest.frame_key.tolist()
    assert result.table.frame_key.tolist() == ["frames/ops/t/000000010.jpg"]
    with pytest.raises(AnnotationError, match="video frame not in the task manifest") as err:
        load(path, mapping, frame_manifest=manifest.iloc[:3], non_box_shapes="skip")
    assert "value 19" in str(err.value)


# --------------------------------------------------------------------------------------------- task packages


def _jpeg(path: Path, seed: int) -> Path:
    body = np.random.default_rng(seed).integers(0, 255, 64, dtype=np.uint8).tobytes()
    path.write_bytes(b"\xff\xd8\xff\xe0" + body + b"\xff\xd9")
    return path


def test_package_names_are_the_keys_module_names():
    photo = keys.frame_key("photos", "IMG 0042.jpg", 0.0)
    assert package_name(photo) == keys.package_file_name(photo) == "photos__IMG 0042.jpg__000000000.jpg"
    for bad in ("frames/ops/a\\b/000000001.jpg", "frames/ops/v1/000000001.png", "frames/.hidden.jpg"):
        with pytest.raises(PipelineInputError, match="unusable as a CVAT image name"):
            package_name(bad)


def test_task_package_round_trip(tmp_path):
    frame_keys = [keys.frame_key("op_collar_01", "cam2", s) for s in (2.0, 4.5, 7.0)]
    frames = [(k, _jpeg(tmp_path / f"local{i}.jpg", i)) for i, k in enumerate(frame_keys)]
    out = tmp_path / "pkg" / "task-7.zip"
    result = write_task_package(frames, out, task="task-7")
    assert result["zip_sha256"] == sha256_file(out) and result["frames"] == 3
    assert package_name(frame_keys[0]) == "op_collar_01__cam2__000002000.jpg"
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == sorted([package_name(k) for k in frame_keys] + ["manifest.csv"])
        manifest = pd.read_csv(io.BytesIO(zf.read("manifest.csv")))
        assert zf.read(package_name(frame_keys[1])) == frames[1][1].read_bytes()
    assert manifest.to_dict("records") == result["manifest"]
    assert manifest.sha256.tolist() == [sha256_file(p) for _, p in frames]
    assert write_task_package(frames, tmp_path / "again.zip", task="task-7")["zip_sha256"] == result["zip_sha256"]

    # CVAT's COCO 1.0 export of that task: its own ids and order, one name with images/, one frame with nobody
    names = manifest.file_name.tolist()
    doc = {"licenses": [], "info": {}, "categories": [{"id": 3, "name": "person", "supercategory": ""}],
           "images": [{"id": 10 + i, "file_name": n, "width": 640, "height": 480} for i, n in
                      enumerate([names[2], "images/" + names[0], names[1]])],
           "annotations": [{"id": 1, "image_id": 10, "category_id": 3, "bbox": [10, 20, 30, 40], "iscrowd": 0},
                           {"id": 2, "image_id": 11, "category_id": 3, "bbox": [1, 2, 3, 4], "iscrowd": 0}]}
    imported = load(coco_zip(tmp_path, doc), frame_manifest=manifest)
    assert imported.table.frame_key.tolist() == [frame_keys[2], frame_keys[0]]
    assert imported.images.set_index("frame_key").n_boxes.to_dict() == {frame_keys[2]: 1, frame_keys[0]: 1,
                                                                        frame_keys[1]: 0}
    assert imported.counts["negatives"] == 1

    with pytest.raises(PipelineInputError, match="duplicate frame"):
        write_task_package(frames + frames[:1], tmp_path / "dup.zip", task="t")
    not_jpeg = tmp_path / "x.jpg"
    not_jpeg.write_bytes(b"\x89PNG")
    with pytest.raises(PipelineInputError, match="not a JPEG"):
        write_task_package([("frames/a/b/000000001.jpg", not_jpeg)], tmp_path / "bad.zip", task="t")
    assert not (tmp_path / "bad.zip").exists() and not (tmp_path / "dup.zip").exists()


# --------------------------------------------------------------------------------------------- speed


def test_100k_boxes_import_completely(tmp_path):
    """Scale, not speed: 100k boxes over 20k images all arrive. How fast is measured by
    scripts/bench_labels.py (docs/benchmarks.md), not asserted here."""
    rng = np.random.default_rng(0)
    n_images, n_boxes = 20_000, 100_000
    xy = rng.uniform(0, 1500, (n_boxes, 2)).round(2)
    image_of = rng.integers(1, n_images + 1, n_boxes)
    doc = {"licenses": [], "info": {}, "categories": [{"id": 1, "name": "person", "supercategory": ""}],
           "images": [{"id": i + 1, "width": 1920, "height": 1080, "file_name": f"img_{i:06d}.jpg"}
                      for i in range(n_images)],
           "annotations": [{"id": j + 1, "image_id": int(image_of[j]), "category_id": 1,
                            "bbox": [float(xy[j, 0]), float(xy[j, 1] / 2), 40.0, 90.0], "area": 3600.0,
                            "iscrowd": 0, "attributes": {"occluded": False, "rotation": 0.0}}
                           for j in range(n_boxes)]}
    path = write_json(tmp_path, doc)
    result = load(path)
    assert result.counts["boxes"] == n_boxes and result.counts["images"] == n_images
    assert len(result.table) == n_boxes
