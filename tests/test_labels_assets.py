"""The `annotations` asset through Dagster on a real, generated store: H.264 videos made by the demo's virtual
camera (exact person boxes), frames extracted by the `video_frames` asset, and CVAT exports written the way CVAT
writes them: a "COCO 1.0" zip of image-task frames and "CVAT for video 1.1" exports of a video task.

The video task is tied to our video by its folder (annotations/incoming/video-<video_id>/<annotator>/) or by the
export's <source>; its frames are matched by frame number, so the task's frame step must line up with ours.
"""
from __future__ import annotations

import io
import shutil
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from assets.footage import video_frames, video_manifest
from assets.labels import ANNOTATIONS_KEY, IMAGES_KEY, annotations
from pipeline import keys
from demo.annotators import LabelledImage, coco_export_zip
from demo.encode import write_h264
from demo.motion import make_path
from demo.scene import boxes_in_view, load_photos, render
from pipeline.errors import AnnotationError
from resources.storage import LocalArtifactStore

W, H, FPS, DURATION_S, STEP_S = 320, 176, 5.0, 12.0, 2.0
OURS = [int(round(t * FPS)) for t in np.arange(0.0, DURATION_S, STEP_S)]  # 0, 10, ..., 50: every 2 s at 5 fps
VIDEOS = {"op_collar_01": 0, "op_cuffs_01": 2}  # video_id -> demo photo index (bus, zidane)
COCO_KEY = f"{keys.INCOMING_ANNOTATIONS}ops_frames/sophia/export_1.zip"


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict:
    """Two generated videos, their manifest, and their frames extracted by the real assets (1 every 2 s)."""
    root = tmp_path_factory.mktemp("labels") / "store"
    seeder = LocalArtifactStore(root=str(root), allow_source_writes=True)
    rng = np.random.default_rng(5)
    photos = load_photos()
    paths, rows = {}, []
    for video_id, photo in VIDEOS.items():
        path = make_path(photos[photo], rng, duration_s=DURATION_S, fps=FPS, out_w=W, out_h=H, active_s=6.0,
                         with_empty=False)
        local = root.parent / f"{video_id}.mp4"
        write_h264(local, (render(path.photo, v, W, H) for v in path.views), fps=FPS, gop_frames=10)
        seeder.upload_file(local, f"{keys.VIDEOS_PREFIX}{video_id}.mp4")
        paths[video_id] = path
        rows.append({"video_id": video_id, "key": f"{keys.VIDEOS_PREFIX}{video_id}.mp4", "operation": "Collar",
                     "camera": "phone_a", "recorded_day": "2026-04-10", "post_install": False})
    seeder.write_bytes(keys.VIDEO_MANIFEST, pd.DataFrame(rows).to_csv(index=False).encode())

    store = LocalArtifactStore(root=str(root))
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize([video_manifest], resources={"store": store}, instance=instance).success
    for video_id in VIDEOS:
        assert dg.materialize([video_frames], partition_key=video_id, resources={"store": store},
                              instance=instance).success
    return {"root": root, "paths": paths}


@pytest.fixture
def store_root(base, tmp_path) -> Path:
    """A private copy of the base store, so each test adds its own exports."""
    root = tmp_path / "store"
    shutil.copytree(base["root"], root)
    return root


def truth(base: dict, video_id: str, frame: int) -> list[tuple[float, float, float, float]]:
    """The exact person boxes of frame `frame` of a generated video (the demo camera's ground truth)."""
    path = base["paths"][video_id]
    return boxes_in_view(path.photo, path.views[frame], W, H)


def seed(root: Path, key: str, data: bytes) -> None:
    LocalArtifactStore(root=str(root), allow_source_writes=True).write_bytes(key, data)


def frames_of(root: Path, video_id: str) -> pd.DataFrame:
    return pd.read_parquet(root / keys.frames_manifest_key("ops", video_id))


def coco_export(base: dict, root: Path, video_id: str) -> bytes:
    """A CVAT "COCO 1.0" export of an image task made from our task package of one video's frames."""
    manifest = frames_of(root, video_id)
    images = [LabelledImage(keys.package_file_name(r.frame_key), W, H, truth(base, video_id, int(r.frame_index)))
              for r in manifest.itertuples()]
    return coco_export_zip(images)


def cvat_video_export(base: dict, video_id: str, *, start: int, stop: int, step: int, source: str | None,
                      label: str = "person", size: tuple[int, int] = (W, H)) -> bytes:
    """A "CVAT for video 1.1" export zip as CVAT writes it: meta (task frames, original size, <source>), and
    every box drawn as a shape, which CVAT's video format writes as a one-frame track ending in an outside
    keyframe on the next task frame."""
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    meta = ET.SubElement(root, "meta")
    task = ET.SubElement(meta, "task")
    frames = list(range(start, stop + 1, step))
    for tag, text in (("id", "31"), ("name", f"{video_id} persons"), ("size", str(len(frames))),
                      ("mode", "interpolation"), ("overlap", "5"), ("bugtracker", ""),
                      ("created", "2026-05-14 12:00:00.000000+00:00"), ("updated", "2026-05-14 13:00:00.000000+00:00"),
                      ("subset", "default"), ("start_frame", str(start)), ("stop_frame", str(stop)),
                      ("frame_filter", f"step={step}" if step > 1 else "")):
        ET.SubElement(task, tag).text = text
    labels = ET.SubElement(ET.SubElement(task, "labels"), "label")
    ET.SubElement(labels, "name").text = label
    ET.SubElement(labels, "type").text = "rectangle"
    original = ET.SubElement(task, "original_size")
    ET.SubElement(original, "width").text = str(size[0])
    ET.SubElement(original, "height").text = str(size[1])
    ET.SubElement(meta, "dumped").text = "2026-05-14 13:05:00.000000+00:00"
    if source is not None:
        ET.SubElement(meta, "source").text = source
    track_id = 0
    for frame in frames:
        for x1, y1, x2, y2 in truth(base, video_id, frame):
            track = ET.SubElement(root, "track", {"id": str(track_id), "label": label, "source": "manual"})
            track_id += 1
            coords = {"xtl": f"{x1:.2f}", "ytl": f"{y1:.2f}", "xbr": f"{x2:.2f}", "ybr": f"{y2:.2f}"}
            ET.SubElement(track, "box", {"frame": str(frame), "keyframe": "1", "outside": "0", "occluded": "0",
                                         **coords, "z_order": "0"})
            if frame + step <= stop:
                ET.SubElement(track, "box", {"frame": str(frame + step), "keyframe": "1", "outside": "1",
                                             "occluded": "0", **coords, "z_order": "0"})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("annotations.xml", ET.tostring(root, encoding="utf-8", xml_declaration=True))
    return buffer.getvalue()


def run_annotations(root: Path) -> dg.ExecuteInProcessResult:
    return dg.materialize([annotations], resources={"store": LocalArtifactStore(root=str(root))},
                          instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)


def failure(result: dg.ExecuteInProcessResult) -> str:
    """The message of the error the asset raised (what the UI shows under the step failure)."""
    assert not result.success, "the annotations asset should have failed"
    [event] = [e for e in result.all_events if e.is_step_failure]
    cause = event.step_failure_data.error.cause
    assert cause is not None and cause.cls_name == "AnnotationError", event.step_failure_data.error.message
    return cause.message.removeprefix("pipeline.errors.AnnotationError: ").strip()


# --------------------------------------------------------------------------------------------- tests


def test_coco_zip_and_lined_up_video_export_become_one_table(base, store_root):
    seed(store_root, COCO_KEY, coco_export(base, store_root, "op_cuffs_01"))
    video_key = f"{keys.INCOMING_ANNOTATIONS}video-op_collar_01/armando/task_31_video.zip"
    seed(store_root, video_key, cvat_video_export(base, "op_collar_01", start=0, stop=50, step=10,
                                                  source="op_collar_01.mp4"))
    result = run_annotations(store_root)
    assert result.success
    meta = result.asset_materializations_for_node("annotations")[0].metadata
    images = pd.read_parquet(store_root / IMAGES_KEY)
    boxes = pd.read_parquet(store_root / ANNOTATIONS_KEY)

    ours = frames_of(store_root, "op_collar_01")
    assert ours["frame_index"].tolist() == OURS                    # the extractor's frame numbers, 1 every 2 s
    video = images[images["export_file"] == video_key].sort_values("source_frame")
    assert video["source_frame"].tolist() == OURS
    assert video["frame_key"].tolist() == ours["frame_key"].tolist()  # frame n of the task = our frame n
    assert set(video["task"]) == {"video-op_collar_01"} and set(video["annotator"]) == {"armando"}

    expected = sum(len(truth(base, "op_collar_01", f)) for f in OURS)
    got = boxes[boxes["export_file"] == video_key]
    assert expected > 0 and len(got) == expected
    first = ours["frame_key"].iloc[3]
    want = sorted(truth(base, "op_collar_01", OURS[3]))
    have = sorted(got.loc[got["frame_key"] == first, ["x1", "y1", "x2", "y2"]].itertuples(index=False, name=None))
    assert np.allclose(have, want, atol=0.006)

    coco = images[images["export_file"] == COCO_KEY]
    assert sorted(coco["frame_key"]) == sorted(frames_of(store_root, "op_cuffs_01")["frame_key"])
    assert meta["exports"].value == 2 and meta["labelled_frames"].value == 2 * len(OURS)
    assert meta["boxes"].value == len(boxes) == expected + sum(len(truth(base, "op_cuffs_01", f)) for f in OURS)
    assert "op_collar_01" in meta["per_export"].value  # the video the export was matched to


def test_video_export_found_by_its_source_and_a_coarser_step(base, store_root):
    """No video-<id> folder: the export's <source> names the file; a step of 20 (a multiple of ours) works.
    The same video frames also extracted as Stage A frames: the labels go to the ops frames."""
    ops = frames_of(store_root, "op_collar_01")
    stage_a = ops.assign(source="stage_a", frame_key=ops["frame_key"].str.replace("frames/ops/", "frames/stage_a/"))
    (store_root / "frames/stage_a").mkdir()
    stage_a.to_parquet(store_root / "frames/stage_a/manifest.parquet", index=False)
    key = f"{keys.INCOMING_ANNOTATIONS}collar_task/armando/annotations.zip"
    seed(store_root, key, cvat_video_export(base, "op_collar_01", start=10, stop=50, step=20,
                                            source="op_collar_01.mp4"))
    result = run_annotations(store_root)
    assert result.success
    images = pd.read_parquet(store_root / IMAGES_KEY)
    ours = frames_of(store_root, "op_collar_01").set_index("frame_index")["frame_key"]
    assert images.sort_values("source_frame")["frame_key"].tolist() == [ours[10], ours[30], ours[50]]
    assert all(k.startswith("frames/ops/") for k in pd.read_parquet(store_root / ANNOTATIONS_KEY)["frame_key"])


def test_video_export_whose_step_does_not_line_up_fails_clearly(base, store_root):
    key = f"{keys.INCOMING_ANNOTATIONS}video-op_collar_01/armando/task_32_video.zip"
    seed(store_root, key, cvat_video_export(base, "op_collar_01", start=0, stop=50, step=5,
                                            source="op_collar_01.mp4"))
    message = failure(run_annotations(store_root))
    assert message.startswith(key)                              # named by its storage key
    assert "video frame not in the task manifest" in message and "value 5" in message
    assert "5 of the task's 11 frames" in message and "op_collar_01" in message
    assert "start frame 0, frame step 10" in message             # what to set in CVAT
    assert f"replace {key}" in message


@pytest.mark.parametrize("folder,source,problem", [
    ("video-op_cuffs_01", "op_collar_01.mp4", "export filed under another video"),
    ("collar_task", None, "cannot tell which of our videos"),
    ("collar_task", "IMG_0042.MOV", "cannot tell which of our videos"),
    ("video-op_missing_09", None, "no extracted frames of the video"),
    ("video-op_collar_01", "op_collar_01.mp4", "frame size differs from our frames"),
])
def test_video_export_that_cannot_be_tied_to_one_video_fails(base, store_root, folder, source, problem):
    key = f"{keys.INCOMING_ANNOTATIONS}{folder}/armando/export.zip"
    size = (2 * W, 2 * H) if "size" in problem else (W, H)  # e.g. the task made from a full-resolution original
    seed(store_root, key, cvat_video_export(base, "op_collar_01", start=0, stop=50, step=10, source=source,
                                            size=size))
    message = failure(run_annotations(store_root))
    assert message.startswith(key) and problem in message and "Remedy:" in message


def test_bad_export_fails_the_asset_naming_its_key_and_the_remedy(base, store_root):
    import json

    data = coco_export(base, store_root, "op_cuffs_01")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        doc = json.loads(zf.read("annotations/instances_default.json"))
    doc["annotations"][2]["image_id"] = 999                      # a box on an image the export does not have
    bad_key = f"{keys.INCOMING_ANNOTATIONS}ops_frames/sophia/export_2.zip"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("annotations/instances_default.json", json.dumps(doc))
    seed(store_root, COCO_KEY, data)
    seed(store_root, bad_key, buffer.getvalue())
    message = failure(run_annotations(store_root))
    assert message.startswith(f"{bad_key}!annotations/instances_default.json: dangling image_id")
    assert "value 999" in message and "CVAT never writes this" in message
    assert f"replace {bad_key}" in message and "or remove it" in message
    assert not (store_root / ANNOTATIONS_KEY).exists()           # nothing half-written


def test_asset_raises_the_import_error_type(base, store_root):
    """The asset raises the import's own error type (an AnnotationError), not a generic one."""
    seed(store_root, f"{keys.INCOMING_ANNOTATIONS}collar_task/armando/x.zip",
         cvat_video_export(base, "op_collar_01", start=0, stop=50, step=10, source=None))
    with pytest.raises(AnnotationError, match="cannot tell which of our videos"):
        dg.materialize([annotations], resources={"store": LocalArtifactStore(root=str(store_root))},
                       instance=dg.DagsterInstance.ephemeral())
