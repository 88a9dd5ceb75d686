"""Labels in two waves: the gate's settings, and a split that is re-made openly before training and
frozen after (pipeline/split_revisions.py)."""
import pandas as pd
import pydantic
import pytest

from pipeline.errors import PipelineInputError, SplitError
from pipeline.gate import GateThresholds, decide_fine_tuning as decide
from pipeline.split import split_csv
from pipeline.split_revisions import check_not_frozen, compare_splits, next_record


def _csv(rows):
    table = pd.DataFrame(rows, columns=["frame_key", "video_id", "split"]).assign(
        operation="Collar", camera="c", recorded_day="2026-04-10", group=lambda t: "g:" + t["video_id"])
    return split_csv(table)


def test_unknown_inconclusive_action_is_refused_when_the_config_loads():
    from assets.models import StageAConfig

    with pytest.raises(pydantic.ValidationError, match="inconclusive_action"):
        StageAConfig(inconclusive_action="fine-tune")  # a typo must not silently skip fine-tuning
    with pytest.raises(pydantic.ValidationError, match="unknown gate setting"):
        StageAConfig(gate_rule="strict")
    with pytest.raises(PipelineInputError, match="use one of fine_tune, skip"):
        GateThresholds(inconclusive_action="maybe")


def test_point_rule_follows_the_plan_words_and_ci_rule_stays_three_way():
    # recall 0.96 with a CI straddling 0.95: the CI rule calls it inconclusive, the plan's rule skips
    args = (0.96, [0.93, 0.99], 0.60, [0.57, 0.63], 250)
    assert decide(*args).outcome == "inconclusive"
    point = decide(*args, GateThresholds(rule="point"))
    assert (point.outcome, point.fine_tune) == ("skip_fine_tuning", False)
    assert all("point-estimate rule" in r for r in point.reasons)
    below = decide(0.94, [0.93, 0.99], 0.60, [0.57, 0.63], 250, GateThresholds(rule="point"))
    assert (below.outcome, below.fine_tune) == ("fine_tune", True)
    low_conf = decide(0.99, [0.98, 1.0], 0.54, [0.50, 0.58], 250, GateThresholds(rule="point"))
    assert low_conf.fine_tune and "median best-box confidence 0.540" in low_conf.reasons[1]


def test_second_wave_adds_frames_and_the_record_says_why():
    wave1, sha1 = _csv([("frames/stage_a/a/1.jpg", "a", "train"), ("frames/stage_a/b/1.jpg", "b", "test")])
    wave2, sha2 = _csv([("frames/stage_a/a/1.jpg", "a", "train"), ("frames/stage_a/b/1.jpg", "b", "test"),
                        ("frames/ops/a/2.jpg", "a", "train"), ("frames/ops/c/2.jpg", "c", "val")])
    first = compare_splits(None, wave1)
    record = next_record(None, sha256=sha1, change=first, at="t1", run_id="r1", revision_key="k1")
    change = compare_splits(wave1, wave2)
    assert (change.added, change.removed, change.moved) == (2, 0, 0)
    check_not_frozen(None, sha1, sha2, change, "dataset_split_v0.csv")  # no model yet: allowed
    record = next_record(record, sha256=sha2, change=change, at="t2", run_id="r2", revision_key="k2")
    assert [r["revision"] for r in record["revisions"]] == [1, 2]
    assert record["revisions"][0]["why"] == "first split"
    assert record["revisions"][1]["why"] == "re-made before any training: 2 newly labelled frame(s) added (2 -> 4 frames)"
    assert record["current_sha256"] == sha2


def test_a_split_a_model_was_trained_from_is_never_rewritten():
    before, sha1 = _csv([("f/a/1.jpg", "a", "train"), ("f/b/1.jpg", "b", "test")])
    moved, sha2 = _csv([("f/a/1.jpg", "a", "test"), ("f/b/1.jpg", "b", "test")])
    change = compare_splits(before, moved)
    assert change.moved == 1
    lock = {"split_sha256": sha1, "model": "yolov8n_lbzf_v0", "run_id": "abc", "at": "2026-06-01T00:00:00+00:00"}
    with pytest.raises(SplitError) as err:
        check_not_frozen(lock, sha1, sha2, change, "s3://b/datasets/lbzf_person_v0/dataset_split_v0.csv")
    assert err.value.problem == "split frozen by a trained model"
    assert "yolov8n_lbzf_v0" in err.value.remedy and "v0.1" in err.value.remedy
    assert err.value.file.endswith("dataset_split_v0.csv")
    check_not_frozen(lock, sha1, sha1, compare_splits(before, before), "x")  # the same split again is fine
