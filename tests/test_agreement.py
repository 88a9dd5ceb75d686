"""Inter-annotator agreement: Cohen's kappa on a cell grid, object matching, disagreements, CI."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipeline.agreement import box_agreement, cohens_kappa


def boxes(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["frame_key", "x1", "y1", "x2", "y2"])


def sizes_for(frames, width=100.0, height=100.0):
    return {f: (width, height) for f in frames}


# --------------------------------------------------------------------------- cohens_kappa


def test_cohens_kappa_on_a_hand_computed_2x2_table():
    #              B yes  B no
    #   A yes        20     5
    #   A no         10    15        n = 50
    a = np.array([1] * 20 + [1] * 5 + [0] * 10 + [0] * 15)
    b = np.array([1] * 20 + [0] * 5 + [1] * 10 + [0] * 15)
    n = 50
    p_o = (20 + 15) / n  # 0.7
    p_a_yes, p_b_yes = (20 + 5) / n, (20 + 10) / n  # 0.5, 0.6
    p_e = p_a_yes * p_b_yes + (1 - p_a_yes) * (1 - p_b_yes)  # 0.3 + 0.2 = 0.5
    expected = (p_o - p_e) / (1 - p_e)  # 0.4
    assert expected == pytest.approx(0.4)
    assert cohens_kappa(a, b) == pytest.approx(expected)
    assert cohens_kappa(b, a) == pytest.approx(expected)  # symmetric


def test_cohens_kappa_edge_cases():
    assert cohens_kappa(np.array([1, 0, 1]), np.array([1, 0, 1])) == 1.0
    assert cohens_kappa(np.array([0, 0, 0]), np.array([0, 0, 0])) == 1.0  # one class only, full agreement
    assert cohens_kappa(np.array([1, 0]), np.array([0, 1])) == pytest.approx(-1.0)  # p_o 0, p_e 0.5
    assert cohens_kappa(np.ones(4), np.zeros(4)) == 0.0  # p_o 0, p_e 0
    assert math.isnan(cohens_kappa(np.array([]), np.array([])))


# --------------------------------------------------------------------------- box_agreement


def test_identical_annotations_give_kappa_one():
    rows = [("f1", 10, 10, 40, 90), ("f1", 60, 20, 90, 80), ("f2", 0, 0, 50, 50), ("f3", 30, 30, 70, 70)]
    frames = ["f1", "f2", "f3", "f4"]  # f4: nobody, for both annotators
    result = box_agreement(boxes(rows), boxes(rows), frames, sizes=sizes_for(frames), grid=8, n_boot=50)
    assert result.kappa == 1.0
    assert result.frame_kappa == 1.0
    assert result.n_frames == 4
    assert result.n_items == 4 * 8 * 8
    assert result.counts["both"] == 4 and result.counts["only_a"] == 0 and result.counts["only_b"] == 0
    assert result.counts["neither"] == 1
    assert result.counts["object_f1"] == 1.0
    assert result.disagreements.empty
    assert (result.ci_low, result.ci_high) == (1.0, 1.0)


def test_a_missed_person_lowers_kappa_by_the_hand_computed_amount():
    # grid 4 on a 100 x 100 frame: cell centres at 12.5, 37.5, 62.5, 87.5 on each axis (16 cells).
    person_1 = ("f", 0, 0, 50, 100)  # centres x in {12.5, 37.5}, every y  -> 8 cells
    person_2 = ("f", 75, 0, 100, 50)  # centre x 87.5, y in {12.5, 37.5}   -> 2 cells
    a = boxes([person_1, person_2])
    b = boxes([person_1])  # B misses person 2
    # A says person in 10 cells, B in 8; they disagree on person 2's 2 cells.
    p_o = 14 / 16
    p_a, p_b = 10 / 16, 8 / 16
    p_e = p_a * p_b + (1 - p_a) * (1 - p_b)  # 80/256 + 48/256 = 0.5
    expected = (p_o - p_e) / (1 - p_e)  # 0.75
    assert expected == pytest.approx(0.75)

    result = box_agreement(a, b, ["f"], sizes={"f": (100.0, 100.0)}, grid=4, n_boot=10)
    assert result.kappa == pytest.approx(expected)
    assert 1.0 - result.kappa == pytest.approx(0.25)
    assert result.n_items == 16
    assert result.counts["both"] == 1 and result.counts["only_a"] == 1 and result.counts["only_b"] == 0
    assert result.counts["object_f1"] == pytest.approx(round(2 * 1 / (2 * 1 + 1), 4))
    assert result.frame_kappa == 1.0  # both annotators saw somebody in the frame
    assert math.isnan(result.ci_low) and math.isnan(result.ci_high)  # one frame: no bootstrap

    # The disagreements table names the frame, who marked it and the missed box.
    assert result.disagreements.to_dict("records") == [
        {"frame_key": "f", "kind": "only A marked a person", "box": [75.0, 0.0, 100.0, 50.0]}]

    # And the other way round it is B's box that nobody else marked.
    swapped = box_agreement(b, a, ["f"], sizes={"f": (100.0, 100.0)}, grid=4, n_boot=10)
    assert swapped.kappa == pytest.approx(expected)
    assert swapped.disagreements["kind"].tolist() == ["only B marked a person"]


def test_frames_empty_for_both_annotators_are_agreement():
    frames = ["e1", "e2", "e3"]
    empty = boxes([])
    result = box_agreement(empty, empty, frames, sizes=sizes_for(frames), grid=4, n_boot=20)
    assert result.kappa == 1.0
    assert result.frame_kappa == 1.0
    assert result.counts["neither"] == 3
    assert result.counts["object_f1"] == 1.0
    assert result.disagreements.empty

    # Empty frames next to a disagreement raise kappa: their cells are agreed negatives.
    a = boxes([("f", 0, 0, 50, 100), ("f", 75, 0, 100, 50)])
    b = boxes([("f", 0, 0, 50, 100)])
    alone = box_agreement(a, b, ["f"], sizes={"f": (100.0, 100.0)}, grid=4, n_boot=0)
    padded = box_agreement(a, b, ["f", *frames], sizes={"f": (100.0, 100.0), **sizes_for(frames)}, grid=4,
                           n_boot=0)
    # 64 cells: A yes 10, B yes 8, 62 agree. p_e = (10*8 + 54*56) / 64^2.
    p_o, p_e = 62 / 64, (10 * 8 + 54 * 56) / 64 ** 2
    assert padded.kappa == pytest.approx((p_o - p_e) / (1 - p_e))
    assert padded.kappa > alone.kappa


def test_one_annotator_sees_nobody_where_the_other_sees_a_person():
    a = boxes([("f1", 0, 0, 100, 100)])
    b = boxes([])
    result = box_agreement(a, b, ["f1", "f2"], sizes=sizes_for(["f1", "f2"]), grid=2, n_boot=0)
    # 8 cells: A yes on f1's 4, B never; p_o = 4/8, p_e = 0.5 * 1 = 0.5 -> kappa 0.
    assert result.kappa == pytest.approx(0.0)
    assert result.counts["only_a"] == 1 and result.counts["neither"] == 1
    assert result.frame_kappa == pytest.approx(0.0)


def test_a_loosely_drawn_box_is_matched_but_listed():
    a = boxes([("f", 0, 0, 60, 100)])
    b = boxes([("f", 0, 0, 40, 100)])  # IoU 40/60 = 0.667: a match, but a sloppy one
    result = box_agreement(a, b, ["f"], sizes={"f": (100.0, 100.0)}, grid=10, n_boot=0)
    assert result.counts["both"] == 1 and result.counts["only_a"] == 0
    assert result.disagreements.to_dict("records") == [
        {"frame_key": "f", "kind": "boxes differ (IoU 0.67)", "box": [0.0, 0.0, 60.0, 100.0]}]
    # Columns x 40..60 hold two cell centres (45, 55) on 10 rows: 20 of 100 cells disagree.
    p_a, p_b = 0.6, 0.4
    p_e = p_a * p_b + (1 - p_a) * (1 - p_b)
    assert result.kappa == pytest.approx((0.8 - p_e) / (1 - p_e))


def overlap_set(n_frames: int = 12):
    """Two annotators over n frames; B misses the second person in every third frame."""
    a_rows, b_rows = [], []
    for i in range(n_frames):
        frame = f"f{i:02d}"
        a_rows += [(frame, 0, 0, 50, 100), (frame, 75, 0, 100, 50)]
        b_rows.append((frame, 0, 0, 50, 100))
        if i % 3:
            b_rows.append((frame, 75, 0, 100, 50))
    frames = [f"f{i:02d}" for i in range(n_frames)]
    return boxes(a_rows), boxes(b_rows), frames


def test_confidence_interval_is_deterministic_for_a_seed_and_holds_the_estimate():
    a, b, frames = overlap_set()
    sizes = sizes_for(frames)
    first = box_agreement(a, b, frames, sizes=sizes, grid=4, n_boot=300, seed=5)
    again = box_agreement(a, b, frames, sizes=sizes, grid=4, n_boot=300, seed=5)
    assert (first.ci_low, first.ci_high) == (again.ci_low, again.ci_high)
    assert first.ci_low <= first.kappa <= first.ci_high
    assert first.ci_low < first.ci_high  # frames differ, so resampling them moves kappa
    assert first.kappa < 1.0
    others = {(r.ci_low, r.ci_high) for r in
              (box_agreement(a, b, frames, sizes=sizes, grid=4, n_boot=300, seed=s) for s in range(6, 10))}
    assert len(others | {(first.ci_low, first.ci_high)}) > 1  # the seed is really used
    meta = first.to_metadata()
    assert meta["bootstrap_seed"] == 5
    assert meta["ci95"] == [round(first.ci_low, 4), round(first.ci_high, 4)]
    assert meta["only_a"] == 4 and meta["both"] == 20
    assert len(first.disagreements) == 4
    assert set(first.disagreements["frame_key"]) == {"f00", "f03", "f06", "f09"}
