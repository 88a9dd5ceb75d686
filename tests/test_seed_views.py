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
