"""Annotation faults: every validation case of pipeline/cvat/ on exports built here from a valid
COCO/CVAT document, plus hostile archives. Each is refused with an error naming the file (and member),
the field, the value and a remedy; the export bytes are never changed and nothing is extracted."""
from __future__ import annotations

import copy
import json
import stat
import tempfile
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from pipeline.cvat import ArchiveLimits, LabelMapping, read_export
from pipeline.errors import AnnotationError
from pipeline.hashing import sha256_file

W, H = 640, 480


def coco_doc() -> dict:
    images = [{"id": i + 1, "file_name": f"frame_{i:06d}.jpg", "width": W, "height": H} for i in range(4)]
    annotations = [{"id": j + 1, "image_id": j % 4 + 1, "category_id": 1, "bbox": [10.0 + j, 20.0, 50.0, 120.0],
                    "area": 6000.0, "iscrowd": 0, "segmentation": [], "attributes": {"occluded": False}}
                   for j in range(8)]
    return {"licenses": [], "info": {}, "categories": [{"id": 1, "name": "person", "supercategory": ""}],
            "images": images, "annotations": annotations}


CVAT_XML = f"""<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta><task><name>t</name></task></meta>
  <image id="0" name="frame_000000.jpg" width="{W}" height="{H}">
    <box label="person" occluded="0" source="manual" xtl="10" ytl="20" xbr="60" ybr="140" z_order="0"></box>
  </image>
  <image id="1" name="frame_000001.jpg" width="{W}" height="{H}">
    <box label="person" occluded="0" source="manual" xtl="100" ytl="20" xbr="160" ybr="200" z_order="0"></box>
  </image>
</annotations>
"""


def load(path: Path, **kw):
    return read_export(path, annotator="anna", task="task-1", mapping=LabelMapping(), **kw)


@pytest.fixture
def scratch(tmp_path, monkeypatch) -> Path:
    """tempfile's directory redirected, so a test sees whatever an import extracts."""
    d = tmp_path / "scratch"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    return d


def test_the_unmutated_exports_import(tmp_path):
    """The base documents are valid: every failure below is caused by its one injected fault."""
    p = tmp_path / "instances_default.json"
    p.write_text(json.dumps(coco_doc()))
    assert len(load(p).table) == 8
    x = tmp_path / "annotations.xml"
    x.write_text(CVAT_XML)
    assert len(load(x).table) == 2


def _set(path, value):
    def mutate(doc):
        target = doc
        for k in path[:-1]:
            target = target[k]
        target[path[-1]] = value
    return mutate


def _dup(section):
    def mutate(doc):
        doc[section][1]["id"] = doc[section][0]["id"]
    return mutate


def _drop(key):
    def mutate(doc):
        del doc[key]
    return mutate


def _extra_category(doc):
    doc["categories"].append({"id": 1, "name": "other", "supercategory": ""})


def _relabel(doc):
    doc["categories"][0]["name"] = "forklift"


COCO_CASES = [  # fault id, mutation, field, words of the problem, value shown
    ("missing_key", _drop("annotations"), "annotations", "missing required key", None),
    ("dangling_image_id", _set(["annotations", 5, "image_id"], 999), "image_id", "dangling image_id", "999"),
    ("dangling_category_id", _set(["annotations", 5, "category_id"], 7), "category_id", "dangling category_id", "7"),
    ("duplicate_image_id", _dup("images"), "images[1].id", "duplicate image id", None),
    ("duplicate_annotation_id", _dup("annotations"), "annotations[1].id", "duplicate annotation id", None),
    ("duplicate_category_id", _extra_category, "categories[1].id", "duplicate category id", None),
    ("box_outside", _set(["annotations", 2, "bbox"], [620.0, 10.0, 40.0, 20.0]), "bbox",
     "outside the image by more than 2 px", "640x480"),
    ("negative_size", _set(["annotations", 2, "bbox"], [10.0, 10.0, -5.0, 20.0]), "bbox", "negative, zero or NaN",
     "-5"),
    ("zero_size", _set(["annotations", 2, "bbox"], [10.0, 10.0, 5.0, 0.0]), "bbox", "negative, zero or NaN", None),
    ("nan_size", _set(["annotations", 2, "bbox"], [10.0, 10.0, float("nan"), 20.0]), "bbox",
     "negative, zero or NaN", "nan"),
    ("malformed_bbox", _set(["annotations", 2, "bbox"], [10.0, 10.0, 5.0]), "bbox", "malformed bbox", None),
    ("bad_image_size", _set(["images", 2, "height"], 0), "height", "not positive", None),
    ("unmapped_label", _relabel, "label", "unmapped label", "forklift"),
]


@pytest.mark.parametrize("fid,mutate,field,problem,value", COCO_CASES, ids=[c[0] for c in COCO_CASES])
@pytest.mark.parametrize("container", ["json", "zip"])
def test_invalid_coco_is_refused_naming_file_field_value_remedy(request, tmp_path, scratch, fid, mutate, field,
                                                               problem, value, container):
    request.node.add_marker(pytest.mark.fault(f"annotations.{fid}"))
    fault = request.getfixturevalue("fault")
    doc = coco_doc()
    mutate(doc)
    data = json.dumps(doc).encode()
    if container == "json":
        path, shown = tmp_path / "instances_default.json", str(tmp_path / "instances_default.json")
        path.write_bytes(data)
    else:
        path = tmp_path / "export.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("annotations/instances_default.json", data)
        shown = f"{path}!annotations/instances_default.json"
    before = sha256_file(path)
    needles = [shown, problem, field, "Remedy:"] + ([value] if value else [])
    with fault.rejects(AnnotationError, *needles):
        load(path)
    fault.source(before, sha256_file(path))
    fault.partial(len(list(scratch.iterdir())))
    assert list(scratch.iterdir()) == []


def _cut_json(tmp):
    p = tmp / "instances_default.json"
    p.write_bytes(json.dumps(coco_doc()).encode()[:300])
    return p, ["malformed JSON", "line 1 column", "Remedy:"]


def _latin1(tmp):
    p = tmp / "instances_default.json"
    doc = coco_doc()
    doc["images"][0]["file_name"] = "frame_\u00e9.jpg"
    p.write_bytes(json.dumps(doc, ensure_ascii=False).encode("latin-1"))
    return p, ["not UTF-8", "encoding", "Remedy:"]


def _json_list(tmp):
    p = tmp / "instances_default.json"
    p.write_text(json.dumps([coco_doc()]))
    return p, ["not an object", "Remedy:"]


def _cut_xml(tmp):
    p = tmp / "annotations.xml"
    p.write_text(CVAT_XML[:400])
    return p, ["malformed XML", "line", "Remedy:"]


def _doctype(tmp):
    p = tmp / "annotations.xml"
    p.write_text('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                 + CVAT_XML.split("?>", 1)[1].replace('name="t"', 'name="&x;"'))
    return p, ["document type declaration", "Remedy:"]


def _text(tmp):
    p = tmp / "notes.txt"
    p.write_text("these are not annotations")
    return p, ["unrecognised export format", "COCO 1.0", "Remedy:"]


PARSE_CASES = [("malformed_json", _cut_json), ("not_utf8", _latin1), ("json_not_object", _json_list),
               ("malformed_xml", _cut_xml), ("xml_doctype", _doctype), ("unknown_format", _text)]


@pytest.mark.parametrize("fid,make", PARSE_CASES, ids=[c[0] for c in PARSE_CASES])
def test_unparseable_exports_are_refused(request, tmp_path, fid, make):
    request.node.add_marker(pytest.mark.fault(f"annotations.{fid}"))
    fault = request.getfixturevalue("fault")
    path, needles = make(tmp_path)
    before = sha256_file(path)
    with fault.rejects(AnnotationError, str(path), *needles):
        load(path)
    fault.source(before, sha256_file(path))


def _set_encrypted_flag(path: Path, member: str) -> None:
    data = bytearray(path.read_bytes())
    name = member.encode()
    for signature, flag_offset, name_offset in ((b"PK\x03\x04", 6, 30), (b"PK\x01\x02", 8, 46)):
        start = 0
        while (start := data.find(signature, start)) != -1:
            if data[start + name_offset:start + name_offset + len(name)] == name:
                data[start + flag_offset] |= 0x01
            start += 4
    path.write_bytes(bytes(data))


def hostile(tmp: Path, kind: str) -> Path:
    path = tmp / f"{kind}.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("annotations/instances_default.json", json.dumps(coco_doc()))
        if kind == "archive_traversal":
            zf.writestr("../../escaped.txt", b"owned")
        elif kind == "archive_absolute":
            zf.writestr("/tmp/lbzf-escaped.txt", b"owned")
        elif kind == "archive_symlink":
            link = zipfile.ZipInfo("images/frame_000000.jpg")
            link.create_system = 3
            link.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(link, "../../../../etc/passwd")
        elif kind in ("archive_encrypted",):
            zf.writestr("images/frame_000000.jpg", b"secret" * 10)
        elif kind == "archive_zip_bomb":
            zf.writestr("images/frame_000000.jpg", b"\0" * (8 * 1024 * 1024))
        elif kind == "archive_too_many_members":
            for i in range(30):
                zf.writestr(f"images/frame_{i:06d}.jpg", b"x")
    if kind == "archive_encrypted":
        _set_encrypted_flag(path, "images/frame_000000.jpg")
    if kind == "archive_corrupt":  # directory intact, the member's compressed bytes damaged in transit
        data = bytearray(path.read_bytes())
        start = 30 + len("annotations/instances_default.json")
        for i in range(start + 40, start + 60):
            data[i] ^= 0x5A
        path.write_bytes(bytes(data))
    return path


HOSTILE = [("archive_traversal", "path traversal", "member name"),
           ("archive_absolute", "path traversal", "member name"),
           ("archive_symlink", "symlink member", "member type"),
           ("archive_encrypted", "encrypted member", "member flags"),
           ("archive_zip_bomb", "suspicious compression ratio", "compression ratio"),
           ("archive_too_many_members", "too many archive members", "members"),
           ("archive_corrupt", "unreadable zip", "zip")]


@pytest.mark.parametrize("fid,problem,field", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_archives_are_refused_before_extracting(request, tmp_path, scratch, fid, problem, field):
    request.node.add_marker(pytest.mark.fault(f"annotations.{fid}"))
    fault = request.getfixturevalue("fault")
    path = hostile(tmp_path, fid)
    before = sha256_file(path)
    limits = ArchiveLimits(max_members=20) if fid == "archive_too_many_members" else ArchiveLimits()
    needles = [str(path), "Remedy:"] + [n for n in (problem, field) if n]
    with fault.rejects(AnnotationError, *needles):
        load(path, limits=limits)
    escaped = [p for p in (tmp_path.parent.glob("escaped.txt"))] + [p for p in Path("/tmp").glob("lbzf-escaped.txt")]
    fault.partial(len(list(scratch.iterdir())) + len(escaped))
    assert list(scratch.iterdir()) == [] and escaped == []
    fault.source(before, sha256_file(path))
