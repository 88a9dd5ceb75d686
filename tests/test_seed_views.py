"""What the seed write-ups show their users: confusion matrix, PR / F1 curves, the confidence sweep
plot, training curves, the domain-shift gap, the figures' explanations (core, no Dagster)."""
import numpy as np
import pandas as pd
import pytest

from pipeline.coco_map import average_precision, precision_recall_at
from pipeline.confusion import confusion_matrix
from pipeline.curves import ap50, match_flags, pr_curve, pr_table
from pipeline.detection_metrics import per_frame, summary
from pipeline.domain_shift import domain_shift_gap
from pipeline.errors import PipelineInputError

pytestmark = pytest.mark.seed_views
PNG = b"\x89PNG\r\n\x1a\n"


def synthetic(seed: int, n_videos: int = 6, frames_per_video: int = 8, miss: float = 0.15,
              classes: tuple[str, ...] = ("person",)):
    """Frames of several videos with labelled boxes, and detections: jittered copies of most boxes
    (sometimes with the wrong class), duplicates and false alarms, confidences spread over 0..1."""
    rng = np.random.default_rng(seed)
    frames, gt, preds = [], [], []
    for v in range(n_videos):
        for f in range(frames_per_video):
            key = f"v{v}/f{f}"
            frames.append((key, f"v{v}", "sewing"))
            for _ in range(rng.integers(0, 4)):
                x, y = rng.uniform(0, 500), rng.uniform(0, 300)
                w, h = rng.uniform(30, 90), rng.uniform(60, 160)
                cls = classes[rng.integers(0, len(classes))]
                gt.append((key, x, y, x + w, y + h, cls))
                if rng.random() > miss:
                    d = rng.normal(0, 0.12, 4) * [w, h, w, h]
                    pcls = cls if rng.random() > 0.2 else classes[rng.integers(0, len(classes))]
                    preds.append((key, x + d[0], y + d[1], x + w + d[2], y + h + d[3], rng.uniform(0.05, 1), pcls))
                if rng.random() < 0.2:  # a duplicate box on the same person
                    preds.append((key, x + 2, y + 2, x + w, y + h, rng.uniform(0, 0.5), cls))
            for _ in range(rng.poisson(0.8)):  # false alarms
                x, y = rng.uniform(0, 500), rng.uniform(0, 300)
                preds.append((key, x, y, x + 40, y + 70, rng.uniform(0, 0.9), classes[rng.integers(0, len(classes))]))
    frames = pd.DataFrame(frames, columns=["frame_key", "video_id", "operation"])
    gt = pd.DataFrame(gt, columns=["frame_key", "x1", "y1", "x2", "y2", "class_name"])
    preds = pd.DataFrame(preds, columns=["frame_key", "x1", "y1", "x2", "y2", "conf", "class_name"])
    return frames, gt, preds


@pytest.mark.parametrize("conf", [0.1, 0.25, 0.5])
def test_confusion_totals_agree_with_the_evaluation_counts(conf):
    frames, gt, preds = synthetic(1)
    cm = confusion_matrix(gt, preds, ["person"], conf=conf)
    table = per_frame(frames, gt, preds, fp_conf=conf)
    point = precision_recall_at(gt, preds, conf)
    totals = cm["totals"]
    (tp, miss), (fp, _) = cm["matrix"]
    assert cm["labels"] == ["person", "background"]
    assert totals["gt_boxes"] == int(table["n_gt"].sum()) == point["n_gt"] == len(gt)
    assert totals["false_positives"] == fp == summary(table)["false_positives"] == point["n_pred"] - point["tp"]
    assert totals["misses"] == miss == point["n_gt"] - point["tp"]
    assert tp == point["tp"] and totals["detections"] == point["n_pred"]
    assert tp > 0 and fp > 0 and miss > 0  # the fixture exercises every cell


def test_confusion_matrix_several_classes_counts_class_confusions():
    gt = pd.DataFrame([("a", 0, 0, 10, 10, "person"), ("a", 20, 0, 30, 10, "no_helmet"),
                       ("b", 0, 0, 10, 10, "no_helmet")], columns=["frame_key", "x1", "y1", "x2", "y2", "class_name"])
    preds = pd.DataFrame([("a", 0, 0, 10, 10, 0.9, "person"), ("a", 20, 0, 30, 10, 0.8, "person"),
                          ("b", 50, 50, 60, 60, 0.7, "no_helmet"), ("b", 0, 0, 10, 10, 0.1, "no_helmet")],
                         columns=["frame_key", "x1", "y1", "x2", "y2", "conf", "class_name"])
    cm = confusion_matrix(gt, preds, ["person", "no_helmet"], conf=0.25)
    assert cm["labels"] == ["person", "no_helmet", "background"]
    assert cm["matrix"] == [[1, 0, 0], [1, 0, 1], [0, 1, 0]]
    assert cm["totals"] == {"gt_boxes": 3, "detections": 3, "matched": 2, "correct_class": 1,
                            "class_confusions": 1, "misses": 1, "false_positives": 1}


def test_confusion_matrix_several_classes_totals_on_a_generated_fixture():
    frames, gt, preds = synthetic(2, classes=("person", "no_helmet"))
    cm = confusion_matrix(gt, preds, ["person", "no_helmet"], conf=0.25)
    matrix = np.array(cm["matrix"])
    assert matrix[:2].sum() == len(gt)
    assert matrix[:, :2].sum() == int((preds["conf"] >= 0.25).sum())
    assert cm["totals"]["class_confusions"] > 0
    # class-agnostic, the matrix collapses to the single-class one
    single = confusion_matrix(gt.drop(columns="class_name"), preds.drop(columns="class_name"), conf=0.25)
    assert single["matrix"] == [[cm["totals"]["matched"], cm["totals"]["misses"]],
                                [cm["totals"]["false_positives"], 0]]


def test_confusion_matrix_names_an_unknown_class():
    gt = pd.DataFrame([("a", 0, 0, 10, 10, "helmet")], columns=["frame_key", "x1", "y1", "x2", "y2", "class_name"])
    preds = pd.DataFrame(columns=["frame_key", "x1", "y1", "x2", "y2", "conf"])
    with pytest.raises(PipelineInputError) as error:
        confusion_matrix(gt, preds, ["person"])
    assert error.value.field == "class_name" and error.value.value == "helmet" and "label mapping" in str(error.value)


def test_pr_table_equals_precision_recall_at_and_ap50_equals_coco():
    frames, gt, preds = synthetic(3)
    flags = match_flags(gt, preds)
    table = pr_table(flags, len(gt), np.array([0.0, 0.1, 0.25, 0.4, 0.55, 0.8, 0.99])).set_index("conf")
    for conf, row in table.iterrows():
        ref = precision_recall_at(gt, preds, conf)
        assert row["tp"] == ref["tp"] and row["n_pred"] == ref["n_pred"]
        assert row["recall"] == pytest.approx(ref["recall"]) and row["precision"] == pytest.approx(ref["precision"])
    coco = average_precision(gt, preds)["ap50"]
    assert ap50(flags["conf"], flags["tp"], len(gt)) == pytest.approx(coco)
    assert pr_curve(flags, len(gt))["precision"].mean() == pytest.approx(coco)


def _shifted(seed: int, miss: float):
    frames, gt, preds = synthetic(seed, miss=miss)
    return per_frame(frames, gt, preds), match_flags(gt, preds)


def test_domain_shift_gap_direction_and_clustered_ci():
    test = _shifted(4, miss=0.05)
    worse = _shifted(5, miss=0.6)
    gap = domain_shift_gap(test, worse, n_boot=300, seed=1)
    assert gap["direction"] == "deployment_test - test" and gap["n_videos"] == {"test": 6, "deployment_test": 6}
    for measure in ("recall", "map50"):
        assert gap["gap"][measure] == pytest.approx(gap["deployment_test"][measure] - gap["test"][measure])
        low, high = gap["gap_ci"][measure]
        assert low <= gap["gap"][measure] <= high and high < 0  # clearly worse after install
    same = domain_shift_gap(test, test, n_boot=300, seed=1)
    assert same["gap"]["recall"] == 0 and same["gap_ci"]["recall"][0] < 0 < same["gap_ci"]["recall"][1]


def test_domain_shift_ci_is_by_video():
    # one video found everything, one nothing: resampling videos gives gaps of -1, -0.5 or 0 only
    table = pd.DataFrame({"frame_key": [f"f{i}" for i in range(20)], "video_id": ["A"] * 10 + ["B"] * 10,
                          "n_gt": 1, "recall": [1.0] * 10 + [0.0] * 10, "best_conf": [0.9] * 10 + [0.1] * 10})
    perfect = table.assign(recall=1.0, best_conf=0.9)
    flags = pd.DataFrame(columns=["frame_key", "conf", "tp"])
    gap = domain_shift_gap((perfect, flags), (table, flags), n_boot=400, seed=0)
    assert gap["gap"]["recall"] == -0.5 and gap["gap_ci"]["recall"] == [-1.0, 0.0]


def test_figures_render_png():
    from pipeline import figures

    frames, gt, preds = synthetic(6)
    flags = match_flags(gt, preds)
    by_conf = pr_table(flags, len(gt))
    point = by_conf.loc[by_conf["f1"].idxmax()].to_dict()
    sweep = [precision_recall_at(gt, preds, c) for c in (0.1, 0.25, 0.5)]
    curves = [{"epoch": e, "train/box_loss": 2 / e, "train/cls_loss": 3 / e, "train/dfl_loss": 1.5 / e,
               "metrics/precision(B)": 0.1 * e, "metrics/recall(B)": 0.1 * e, "metrics/mAP50(B)": 0.08 * e,
               "metrics/mAP50-95(B)": 0.05 * e, "val/box_loss": 2.2 / e, "val/cls_loss": 3.1 / e,
               "val/dfl_loss": 1.6 / e, "lr/pg0": 0.01} for e in range(1, 5)]
    gap = domain_shift_gap(_shifted(4, 0.05), _shifted(5, 0.3), n_boot=50)
    for data in (figures.confusion_png(confusion_matrix(gt, preds)), figures.pr_f1_png(pr_curve(flags, len(gt)),
                                                                                       by_conf, point),
                 figures.sweep_png(sweep, sweep[1]), figures.training_curves_png(curves), figures.domain_gap_png(gap)):
        assert data.startswith(PNG) and len(data) > 5000
    with pytest.raises(ValueError, match="results.csv"):
        figures.training_curves_png([])


def test_every_figure_has_an_operator_explanation():
    from pipeline.explanations import EXPLAIN

    for name in ("confusion_matrix", "pr_f1_curves", "conf_sweep", "training_curves", "domain_shift",
                 "confidence_histogram", "recall_by_operation", "worst_frames", "comparison", "shadow", "preview"):
        assert len(EXPLAIN[name]) > 60 and "\n" not in EXPLAIN[name]


# --------------------------------------------------------------------------- annotated video preview


def _moving_box_video(path, seconds: float = 3.0, fps: int = 25, size=(320, 240)):
    """An H.264 clip: a white 'person' block sliding across a grey floor."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(int(seconds * fps)):
            image = np.full((size[1], size[0], 3), 90, np.uint8)
            x = 20 + 3 * i
            image[60:180, x:x + 50] = 235
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _bright_block_detector(images):
    """Finds the bright block by thresholding: a real (if simple) detector with exact boxes."""
    import cv2

    out = []
    for image in images:
        mask = (cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) > 200).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h, area in stats[1:] if area > 200], float).reshape(-1, 4)
        out.append((boxes, np.full(len(boxes), 0.87), ["person"] * len(boxes)))
    return out


def test_preview_video_decodes_with_the_expected_frames_and_boxes(tmp_path):
    import av

    from pipeline.preview import render_preview

    source = tmp_path / "clip.mp4"
    _moving_box_video(source)
    target = tmp_path / "preview.mp4"
    table, sheet, info = render_preview(source, _bright_block_detector, target, start_s=0.5, length_s=2.0, fps=5)
    assert info["frames"] == 10 and table["frame"].nunique() == 10 and len(table) == 10
    assert sheet[:2] == b"\xff\xd8" and len(sheet) > 2000
    data = target.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # +faststart: a browser plays it before it has it all
    assert not list(tmp_path.glob(".*tmp*"))
    with av.open(str(target)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(stream)]
    assert len(frames) == 10
    for row in table.itertuples():
        image = frames[row.frame].astype(int)
        x1, y1, x2, y2 = (int(round(v)) for v in (row.x1, row.y1, row.x2, row.y2))
        # the drawn box edge is red where the record says (H.264 blurs colours a little)
        edge = np.concatenate([image[(y1 + y2) // 2 - 10:(y1 + y2) // 2 + 10, x1], image[(y1 + y2) // 2 - 10:
                                                                                        (y1 + y2) // 2 + 10, x2]])
        assert (edge[:, 2] - edge[:, 1]).mean() > 80, (row.frame, edge.mean(axis=0))
        inside = image[y1 + 15:y2 - 15, x1 + 10:x2 - 10]
        assert (inside[:, :, 2] - inside[:, :, 1]).mean() < 20  # not a filled blob: the box is where recorded
    assert table["actual_s"].tolist() == pytest.approx([0.48 + 0.2 * k for k in range(10)], abs=1e-3)  # exact frames


def test_preview_rejects_a_start_outside_the_video(tmp_path):
    from pipeline.preview import render_preview

    source = tmp_path / "clip.mp4"
    _moving_box_video(source, seconds=1.0)
    with pytest.raises(PipelineInputError) as error:
        render_preview(source, _bright_block_detector, tmp_path / "p.mp4", start_s=5.0)
    assert error.value.field == "start_s" and "0 to" in error.value.remedy
    assert not (tmp_path / "p.mp4").exists()


def test_video_preview_asset_writes_previews_and_shows_the_contact_sheet(tmp_path):
    """The asset end to end on a local store: the selected model (a real checkpoint, random weights)
    over a post-install video; the MP4, contact sheet, detections and metadata land under previews/."""
    import json

    import av
    import dagster as dg

    from assets.previews import video_preview
    from pipeline.hashing import sha256_file
    from pipeline.offline import ultralytics_yolo
    from pipeline.weights import publish_weights
    from resources.storage import LocalArtifactStore

    root = tmp_path / "store"
    seeder = LocalArtifactStore(root=str(root), allow_source_writes=True)
    (root / "raw/videos").mkdir(parents=True)
    _moving_box_video(root / "raw/videos/post1.mp4", seconds=2.0)
    seeder.write_bytes("raw/videos/manifest.csv", b"video_id,key,operation,camera,recorded_day,post_install\n"
                       b"pre1,raw/videos/post1.mp4,sewing,cam1,2026-01-01,false\n"
                       b"post1,raw/videos/post1.mp4,sewing,cam1,2026-02-01,true\n")
    store = LocalArtifactStore(root=str(root))
    weights = tmp_path / "v0.pt"
    ultralytics_yolo()("yolov8n.yaml").save(str(weights))
    digest = publish_weights(store, weights, "models/m/m.pt", producer="test")
    store.write_bytes("models/selected_model.json", json.dumps(
        {"model": "m", "key": "models/m/m.pt", "sha256": digest, "imgsz": 160}).encode())

    config = {"ops": {"video_preview": {"config": {"length_s": 1.0, "fps": 4.0, "conf": 0.0}}}}
    result = dg.materialize([video_preview], resources={"store": store}, run_config=config,
                            selection=[video_preview.key])
    assert result.success
    meta = result.asset_materializations_for_node("video_preview")[0].metadata
    prefix = root / "previews/post1/m"
    assert meta["frames"].value == 4 and meta["model_role"].value == "selected"
    assert meta["video"].value == (prefix / "preview.mp4").as_uri()
    assert "data:image/jpeg;base64," in meta["contact_sheet"].value and "confidence" in meta["contact_sheet"].value
    assert meta["video_sha256"].value == sha256_file(prefix / "preview.mp4")
    with av.open(str(prefix / "preview.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 4
    detections = pd.read_parquet(prefix / "detections.parquet")
    assert len(detections) == meta["detections"].value and set(detections["frame"]) <= {0, 1, 2, 3}

    bad = {"ops": {"video_preview": {"config": {"video_id": "nope"}}}}
    with pytest.raises(PipelineInputError, match="video_id.*nope"):
        dg.materialize([video_preview], resources={"store": store}, run_config=bad)


# --------------------------------------------------------------------------- speed per stage


def test_speed_per_stage_is_positive_and_sums_to_the_wall_time(tmp_path):
    from pathlib import Path

    from pipeline.export import export_onnx
    from pipeline.offline import ultralytics_yolo
    from pipeline.speed import backend_speeds

    images = sorted((Path(__file__).resolve().parents[2] / "shared/fixtures/coco8_yolo/images").rglob("*.jpg"))
    assert images, "shared/fixtures/coco8_yolo is missing"
    weights = tmp_path / "m.pt"
    ultralytics_yolo()("yolov8n.yaml").save(str(weights))
    onnx_path = export_onnx(weights, tmp_path / "m.onnx", imgsz=160)
    speeds = backend_speeds(weights, onnx_path, images[:6], imgsz=160)
    assert set(speeds) == {"pytorch", "onnx"}
    for backend, s in speeds.items():
        assert min(s["preprocess"], s["inference"], s["postprocess"]) > 0, (backend, s)
        assert s["images"] == 6
        total = s["preprocess"] + s["inference"] + s["postprocess"]
        assert abs(total - s["wall_ms_per_image"]) <= 0.2 * s["wall_ms_per_image"], (backend, s)
