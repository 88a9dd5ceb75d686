"""Detection metrics, the clustered bootstrap, the gate and COCO mAP on constructed and real cases."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.boxes import greedy_match, iou_matrix
from pipeline.coco_map import average_precision
from pipeline.detection_metrics import cluster_bootstrap, per_frame, summary
from pipeline.gate import GateThresholds, decide_fine_tuning

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


def boxes(rows):
    return pd.DataFrame(rows, columns=["frame_key", "x1", "y1", "x2", "y2"])


def preds(rows):
    return pd.DataFrame(rows, columns=["frame_key", "x1", "y1", "x2", "y2", "conf"])


def test_iou_known_values():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    assert iou_matrix(a, b).round(4).tolist() == [[1.0, 0.3333, 0.0]]


def test_greedy_match_takes_highest_score_first():
    gt = np.array([[0, 0, 10, 10]])
    pred = np.array([[0, 0, 10, 9], [0, 0, 10, 10]])
    matches = greedy_match(gt, pred, np.array([0.9, 0.5]))
    assert matches == [(0, 0, pytest.approx(0.9))]


def test_per_frame_recall_confidence_and_false_positives():
    frames = pd.DataFrame({"frame_key": ["a", "b", "c"], "video_id": ["v1", "v1", "v2"]})
    gt = boxes([("a", 0, 0, 10, 10), ("a", 20, 20, 30, 30), ("b", 0, 0, 10, 10)])
    pr = preds([("a", 0, 0, 10, 10, 0.9), ("a", 50, 50, 60, 60, 0.8), ("a", 50, 50, 60, 60, 0.1),
                ("c", 0, 0, 5, 5, 0.3)])
    table = per_frame(frames, gt, pr).set_index("frame_key")
    assert table.loc["a", "recall"] == 0.5 and table.loc["a", "n_fp"] == 1  # 0.1 is below fp_conf 0.25
    assert table.loc["a", "best_conf"] == 0.9
    assert table.loc["b", "recall"] == 0.0 and table.loc["b", "best_conf"] == 0.0
    assert np.isnan(table.loc["c", "recall"]) and table.loc["c", "n_fp"] == 1
    s = summary(table.reset_index())
    assert s["recall"] == 0.25 and s["n_frames_with_person"] == 2 and s["false_positives"] == 2
    assert s["median_best_conf"] == pytest.approx(0.45)


def test_cluster_bootstrap_resamples_videos_not_frames():
    # Video A: 10 frames all found; video B: 10 frames none found. Resampling videos gives a recall of
    # 0, 0.5 or 1 only; resampling frames would give values near 0.5.
    table = pd.DataFrame({"frame_key": [f"f{i}" for i in range(20)], "video_id": ["A"] * 10 + ["B"] * 10,
                          "n_gt": 1, "recall": [1.0] * 10 + [0.0] * 10, "best_conf": [0.9] * 10 + [0.1] * 10,
                          "n_fp": 0})
    ci = cluster_bootstrap(table, n_boot=400, seed=3)
    assert ci["recall_ci"] == [0.0, 1.0]
    assert ci["n_clusters"] == 2 and ci["seed"] == 3
    assert cluster_bootstrap(table, n_boot=400, seed=3) == ci  # deterministic for a seed


@pytest.mark.parametrize("recall_ci, conf_ci, outcome, fine_tune", [
    ([0.96, 0.99], [0.60, 0.70], "skip_fine_tuning", False),
    ([0.80, 0.90], [0.60, 0.70], "fine_tune", True),
    ([0.92, 0.98], [0.60, 0.70], "inconclusive", True),
])
def test_gate_outcomes(recall_ci, conf_ci, outcome, fine_tune):
    decision = decide_fine_tuning(float(np.mean(recall_ci)) - 0.01, recall_ci, 0.65, conf_ci, 250)
    assert decision.outcome == outcome and decision.fine_tune is fine_tune
    if outcome == "inconclusive":
        assert decision.extra_frames_needed and decision.extra_frames_needed > 0


def test_gate_inconclusive_action_is_configurable():
    decision = decide_fine_tuning(0.95, [0.92, 0.98], 0.65, [0.6, 0.7], 250, GateThresholds(inconclusive_action="skip"))
    assert decision.outcome == "inconclusive" and decision.fine_tune is False


def test_average_precision_known_answer():
    gt = boxes([("a", 0, 0, 10, 10), ("b", 0, 0, 10, 10)])
    # one perfect hit at high score, one false positive, the second person found at a low score
    pr = preds([("a", 0, 0, 10, 10, 0.9), ("a", 50, 50, 60, 60, 0.8), ("b", 0, 0, 10, 10, 0.7)])
    ap = average_precision(gt, pr)
    # precision envelope: 1.0 up to recall 0.5, 2/3 up to recall 1.0 -> 101-point mean
    expected = (51 * 1.0 + 50 * (2 / 3)) / 101
    assert ap["ap50"] == pytest.approx(expected)


def _coco8_person_boxes():
    root = FIXTURES / "coco8_yolo"
    if not root.exists():
        pytest.skip(f"real fixtures not found at {root} (shared/ is absent)")
    import cv2

    rows = []
    for label in sorted((root / "labels").rglob("*.txt")):
        image = root / "images" / label.parent.name / f"{label.stem}.jpg"
        h, w = cv2.imread(str(image)).shape[:2]
        for line in label.read_text().split("\n"):
            if line.strip():
                c, cx, cy, bw, bh = map(float, line.split())
                if int(c) == 0:
                    rows.append((label.stem, (cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w,
                                 (cy + bh / 2) * h, w, h))
    return pd.DataFrame(rows, columns=["frame_key", "x1", "y1", "x2", "y2", "w", "h"])


def test_average_precision_agrees_with_pycocotools_on_real_labels():
    """Real coco8 person labels; predictions are perturbed copies plus false alarms with scores."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = _coco8_person_boxes()
    assert len(gt) >= 10
    rng = np.random.default_rng(0)
    rows = []
    for r in gt.itertuples():
        w, h = r.x2 - r.x1, r.y2 - r.y1
        if rng.random() < 0.85:
            d = rng.normal(0, 0.08, 4) * [w, h, w, h]
            rows.append((r.frame_key, r.x1 + d[0], r.y1 + d[1], r.x2 + d[2], r.y2 + d[3], float(rng.uniform(0.2, 1))))
        if rng.random() < 0.4:
            x, y = rng.uniform(0, r.w - 40), rng.uniform(0, r.h - 60)
            rows.append((r.frame_key, x, y, x + 40, y + 60, float(rng.uniform(0, 0.6))))
    pr = preds(rows)
    ours = average_precision(gt, pr)

    images = sorted(gt["frame_key"].unique())
    ids = {k: i + 1 for i, k in enumerate(images)}
    sizes = gt.drop_duplicates("frame_key").set_index("frame_key")
    coco = COCO()
    coco.dataset = {
        "images": [{"id": ids[k], "width": int(sizes.loc[k, "w"]), "height": int(sizes.loc[k, "h"])} for k in images],
        "categories": [{"id": 1, "name": "person"}],
        "annotations": [{"id": i + 1, "image_id": ids[r.frame_key], "category_id": 1, "iscrowd": 0,
                         "bbox": [r.x1, r.y1, r.x2 - r.x1, r.y2 - r.y1], "area": (r.x2 - r.x1) * (r.y2 - r.y1)}
                        for i, r in enumerate(gt.itertuples())]}
    coco.createIndex()
    detections = coco.loadRes([{"image_id": ids[r.frame_key], "category_id": 1, "score": r.conf,
                                "bbox": [r.x1, r.y1, r.x2 - r.x1, r.y2 - r.y1]} for r in pr.itertuples()])
    evaluator = COCOeval(coco, detections, "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert ours["ap50_95"] == pytest.approx(evaluator.stats[0], abs=0.005)
    assert ours["ap50"] == pytest.approx(evaluator.stats[1], abs=0.005)
