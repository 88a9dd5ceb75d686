"""Any class list: person stays first and the gate's class; a second output class ("no helmet", as
in the Atvos seed) goes through the real assets end to end - CVAT export, annotations (recorded
class list), dataset yaml and label files, Stage B training, per-class evaluation with the confusion
matrix over both classes, and the ONNX export with its parity.

The fixture is generated: frames seen by the demo's virtual camera over its labelled photos (exact
person boxes), and a "no helmet" box on the head of every other person (the top of their box).
A one-epoch CPU training at 64 px keeps it fast."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import cv2
import dagster as dg
import numpy as np
import pandas as pd
import pytest
import yaml

from assets.common import FRAME_COLUMNS
from assets.store_io import read_parquet, write_parquet
from pipeline import keys
from pipeline.errors import PipelineInputError
from pipeline.hashing import sha256_bytes
from resources.base_weights import BaseWeights
from resources.storage import LocalArtifactStore
from resources.trainer import InProcessTrainer

pytestmark = pytest.mark.seed_views

CLASSES = ["person", "no_helmet"]
MAPPING = {"person": "person", "no helmet": "no_helmet"}
W, H = 128, 96
VIDEOS = 10  # the last two recorded after the install: the deployment_test split
FRAMES = 5  # per video, the last one a Stage A frame
EXPORT_KEY = f"{keys.INCOMING_ANNOTATIONS}ops_frames/sophia/export_1.zip"


def _head(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    return (x1 + 0.2 * w, y1, x2 - 0.2 * w, y1 + 0.22 * h)


def _coco_zip(images: list[dict]) -> bytes:
    """A CVAT "COCO 1.0" export with both labels (CVAT's own label names)."""
    doc = {"licenses": [], "info": {}, "categories": [{"id": 1, "name": "person", "supercategory": ""},
                                                      {"id": 2, "name": "no helmet", "supercategory": ""}],
           "images": [], "annotations": []}
    for image_id, im in enumerate(images, start=1):
        doc["images"].append({"id": image_id, "width": W, "height": H, "file_name": im["file_name"]})
        for category, (x1, y1, x2, y2) in im["boxes"]:
            doc["annotations"].append({"id": len(doc["annotations"]) + 1, "image_id": image_id,
                                       "category_id": category, "bbox": [x1, y1, x2 - x1, y2 - y1],
                                       "area": (x2 - x1) * (y2 - y1), "iscrowd": 0, "segmentation": [],
                                       "attributes": {"occluded": False}})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("annotations/instances_default.json", json.dumps(doc))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def two_class_store(tmp_path_factory) -> Path:
    """Frames of ten 'videos' (the raw store's manifest and frame manifests, as the footage assets
    write them) and one CVAT export labelling person and no helmet."""
    from demo.scene import View, boxes_in_view, clamp_view, load_photos, render

    root = tmp_path_factory.mktemp("two_classes") / "store"
    seeder = LocalArtifactStore(root=str(root), allow_source_writes=True)
    photos, rng = load_photos(), np.random.default_rng(3)
    videos, stage_a, images, n_heads = [], [], [], 0
    for v in range(VIDEOS):
        video_id, photo = f"op_{v:02d}", photos[v % len(photos)]
        videos.append({"video_id": video_id, "key": f"{keys.VIDEOS_PREFIX}{video_id}.mp4", "operation": "Collar",
                       "camera": f"cam_{v}", "recorded_day": f"2026-04-{10 + v}", "post_install": v >= VIDEOS - 2})
        rows = {"ops": [], "stage_a": []}
        for f in range(FRAMES):
            source = "stage_a" if f == FRAMES - 1 else "ops"
            max_cw = min(photo.width, photo.height * W / H)
            view = clamp_view(photo, View(photo.width * rng.uniform(0.3, 0.7), photo.height * rng.uniform(0.4, 0.6),
                                          max_cw * rng.uniform(0.6, 1.0)), W, H)
            data = cv2.imencode(".jpg", render(photo, view, W, H), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
            key = keys.frame_key(source, video_id, f * 2.0)
            seeder.write_bytes(key, data)
            rows[source].append({"frame_key": key, "source": source, "video_id": video_id,
                                 "video_sha256": f"{v:064x}", "target_s": f * 2.0, "actual_s": f * 2.0,
                                 "frame_index": f * 10, "width": W, "height": H, "jpeg_sha256": sha256_bytes(data)})
            boxes = []
            for i, box in enumerate(boxes_in_view(photo, view, W, H)):
                boxes.append((1, box))
                if i % 2 == 0:
                    boxes.append((2, _head(box)))
                    n_heads += 1
            images.append({"file_name": keys.package_file_name(key), "boxes": boxes})
        write_parquet(seeder, keys.frames_manifest_key("ops", video_id), pd.DataFrame(rows["ops"])[FRAME_COLUMNS])
        stage_a.extend(rows["stage_a"])
    write_parquet(seeder, keys.STAGE_A_MANIFEST, pd.DataFrame(stage_a)[FRAME_COLUMNS])
    seeder.write_bytes(keys.VIDEO_MANIFEST, pd.DataFrame(videos).to_csv(index=False).encode())
    seeder.write_bytes(EXPORT_KEY, _coco_zip(images))
    assert n_heads >= 20  # enough of the second class to train and measure on
    return root


def _meta(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    (event,) = [m for m in result.get_asset_materialization_events() if m.asset_key.path[-1] == asset]
    return {k: v.value for k, v in event.materialization.metadata.items()}


@pytest.fixture(scope="module")
def end_to_end(two_class_store, tmp_path_factory):
    """annotations -> dataset_split -> yolo_dataset -> stage_a_baseline -> stage_b -> evaluation ->
    onnx_model, through Dagster, on the two-class store."""
    from assets.export import onnx_model, onnx_parity
    from assets.labels import annotations, dataset_split, yolo_dataset
    from assets.models import evaluation, stage_a_baseline, stage_b

    work = tmp_path_factory.mktemp("two_classes_work")
    store = LocalArtifactStore(root=str(two_class_store))
    result = dg.materialize(
        [annotations, dataset_split, yolo_dataset, stage_a_baseline, stage_b, evaluation, onnx_model, onnx_parity],
        resources={"store": store, "trainer": InProcessTrainer(runs_dir=str(work / "runs")),
                   "base_weights": BaseWeights(allow_untrained=True)},  # no official weights offline: the seeded stand-in
        instance=dg.DagsterInstance.ephemeral(),
        run_config={"ops": {
            "annotations": {"config": {"classes": CLASSES, "label_mapping": MAPPING}},
            "stage_a_baseline": {"config": {"imgsz": 64, "n_boot": 50}},
            "stage_b": {"config": {"force": True, "imgsz": 64, "epochs": 1, "batch": 8,
                                   "extra": {"close_mosaic": 0, "warmup_epochs": 0, "mosaic": 0.0}}},
            "evaluation": {"config": {"imgsz": 64, "n_boot": 50, "speed_images": 0, "fp_conf": 0.001}},
            "onnx_model": {"config": {"parity_frames": 4}}}})
    assert result.success
    return {"store": store, "root": two_class_store, "result": result}


def test_annotations_record_the_class_list_and_map_both_labels(end_to_end):
    store, meta = end_to_end["store"], _meta(end_to_end["result"], "annotations")
    assert json.loads(store.read_bytes(keys.ANNOTATION_CLASSES))["classes"] == CLASSES
    boxes = read_parquet(store, keys.ANNOTATIONS)
    assert set(zip(boxes["class_name"], boxes["class_id"])) == {("person", 0), ("no_helmet", 1)}
    assert meta["classes"] == "person, no_helmet"


def test_dataset_yaml_and_label_files_carry_both_classes(end_to_end):
    store, root = end_to_end["store"], end_to_end["root"]
    dataset = keys.dataset_keys("v0")
    doc = yaml.safe_load(store.read_bytes(dataset.yaml))
    assert doc["names"] == {0: "person", 1: "no_helmet"}
    ids = {int(line.split()[0]) for p in (root / dataset.folder / "labels").rglob("*.txt")
           for line in p.read_text().splitlines()}
    assert ids == {0, 1}
    # as many label lines of each class as the annotations hold for the dataset's frames
    boxes = read_parquet(store, keys.ANNOTATIONS)
    lines = [line for p in (root / dataset.folder / "labels").rglob("*.txt") for line in p.read_text().splitlines()]
    assert sum(line.startswith("1 ") for line in lines) == int((boxes["class_name"] == "no_helmet").sum())


def test_the_trained_model_has_both_classes_and_its_onnx_passes_parity(end_to_end, tmp_path):
    from pipeline.detector import load_model
    from pipeline.weights import fetch_weights

    store, result = end_to_end["store"], end_to_end["result"]
    weights = fetch_weights(store, keys.version_keys("v0").weights, tmp_path / "v0.pt")
    assert load_model(weights).names == {0: "person", 1: "no_helmet"}
    assert _meta(result, "onnx_model")["spec"]["output_shape"][1] == 4 + 2  # boxes + the two class scores
    recorded = json.loads(store.read_bytes(keys.version_keys("v0").onnx_meta))
    assert recorded["spec"]["output_shape"][1] == 4 + 2, recorded["spec"]
    (check,) = result.get_asset_check_evaluations()
    assert check.passed and recorded["parity"]["passed"]


def test_evaluation_reports_each_class_and_the_confusion_matrix_over_both(end_to_end):
    store = end_to_end["store"]
    report = json.loads(store.read_bytes(keys.version_keys("v0").report("eval")))
    assert report["classes"] == CLASSES
    boxes = read_parquet(store, keys.ANNOTATIONS)
    split = pd.read_csv(io.BytesIO(store.read_bytes(keys.split_key("v0"))))
    n_pred = 0
    for name, entry in report["splits"].items():
        frames = set(split.loc[split["split"] == name, "frame_key"])
        in_split = boxes[boxes["frame_key"].isin(frames)]
        assert set(entry["per_class"]) == set(CLASSES)
        for cls in CLASSES:
            assert entry["per_class"][cls]["n_gt"] == int((in_split["class_name"] == cls).sum()), (name, cls)
            assert 0.0 <= entry["per_class"][cls]["map50"] <= 1.0 or entry["per_class"][cls]["n_gt"] == 0
        # the headline (and the gate's) measures are person's
        assert entry["map50"] == entry["per_class"]["person"]["map50"]
        cm = entry["confusion_matrix"]
        assert cm["labels"] == [*CLASSES, "background"]
        assert cm["totals"]["gt_boxes"] == len(in_split)
        assert [sum(row) for row in cm["matrix"][:2]] == [int((in_split["class_name"] == c).sum()) for c in CLASSES]
        # each predicted-class column holds that class's detections (the model's class ids, named)
        assert [sum(row[i] for row in cm["matrix"]) for i in range(2)] == \
            [entry["per_class"][c]["n_pred"] for c in CLASSES]
        n_pred += sum(entry["per_class"][c]["n_pred"] for c in CLASSES)
        stored = json.loads(store.read_bytes(keys.version_keys("v0").figure(f"confusion_{name}", "json")))
        assert stored == cm
    assert n_pred > 0
    meta = _meta(end_to_end["result"], "evaluation")
    assert "no_helmet" in meta["per_class"] and meta["classes"] == "person, no_helmet"


def test_stage_a_stays_a_person_gate(end_to_end):
    store = end_to_end["store"]
    report = json.loads(store.read_bytes(keys.STAGE_A_REPORT))
    boxes = read_parquet(store, keys.ANNOTATIONS)
    stage_a = set(read_parquet(store, keys.STAGE_A_MANIFEST)["frame_key"])
    persons = boxes[boxes["frame_key"].isin(stage_a) & (boxes["class_name"] == "person")]
    assert report["confusion_matrix"]["labels"] == ["person", "background"]
    assert report["confusion_matrix"]["totals"]["gt_boxes"] == len(persons)


def test_a_class_list_without_person_first_is_refused():
    from pipeline.classes import check_classes

    assert check_classes(["person", "no_helmet"]) == ["person", "no_helmet"]
    with pytest.raises(PipelineInputError, match="person is not the first class") as error:
        check_classes(["no_helmet", "person"])
    assert "['person', 'no_helmet']" in error.value.remedy
    with pytest.raises(PipelineInputError, match="bad class list"):
        check_classes(["person", "person"])


def test_detections_of_a_class_the_list_does_not_know_are_refused():
    from pipeline.classes import name_detections

    preds = pd.DataFrame({"frame_key": ["a", "a"], "conf": [0.9, 0.8], "class_id": [0, 2]})
    with pytest.raises(PipelineInputError, match="detection of an unknown class"):
        name_detections(preds, CLASSES, "model.pt")
    assert name_detections(preds.iloc[:1], CLASSES, "model.pt")["class_name"].tolist() == ["person"]
