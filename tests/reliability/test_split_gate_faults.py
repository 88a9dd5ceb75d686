"""Split and gate faults: a split that cannot be made or leaks is refused or flagged; a gate without
evidence never says 'skip fine-tuning'."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from pipeline.detection_metrics import per_frame, summary
from pipeline.errors import SplitError
from pipeline.gate import decide_fine_tuning
from pipeline.split import SplitConfig, assign_splits, frame_splits, leaks


def units(n_days: int, videos_per_day: int = 2, post_install: bool = False) -> pd.DataFrame:
    rows = []
    for d in range(n_days):
        for v in range(videos_per_day):
            rows.append({"video_id": f"op{d}_{v}", "operation": "collar", "camera": "cam1",
                         "recorded_day": f"2026-06-{d + 1:02d}", "post_install": post_install})
    return pd.DataFrame(rows)


@pytest.mark.fault("split.too_few_groups")
def test_too_few_groups(fault):
    table = units(1, videos_per_day=5)  # five videos, one camera-day: one group
    before = table.copy()
    fault.sources(table)
    with fault.rejects(SplitError, "too few groups", "field 'groups'", "value 1", "by_camera_day=false"):
        assign_splits(table)
    pd.testing.assert_frame_equal(table, before)


@pytest.mark.fault("split.empty_test_set")
def test_empty_test_set(fault):
    table = units(3)
    fault.sources(table)
    with fault.rejects(SplitError, "too few groups", "value 3", "targets [2, 1, 0]"):
        assign_splits(table)  # three camera-days for 70/15/15: the test split would get none


@pytest.mark.fault("split.missing_columns")
def test_manifest_missing_columns(fault):
    table = units(6).drop(columns="recorded_day")
    fault.sources(table)
    with fault.rejects(SplitError, "missing columns", "recorded_day", "raw/videos/manifest.csv"):
        assign_splits(table)


@pytest.mark.fault("split.mixed_post_install")
def test_pre_and_post_install_in_one_camera_day(fault):
    table = units(6)
    table.loc[1, "post_install"] = True  # same camera-day as row 0
    fault.sources(table)
    with fault.rejects(SplitError, "mixed group", "post_install", "Remedy:"):
        assign_splits(table)


@pytest.mark.fault("split.frames_without_split")
def test_frames_of_unknown_videos(fault):
    assignment = assign_splits(units(8))
    frames = pd.DataFrame({"frame_key": ["f/a.jpg", "f/b.jpg"], "video_id": ["op0_0", "ghost_video"]})
    fault.sources(frames, assignment)
    with fault.rejects(SplitError, "frames without a split", "ghost_video", "manifest"):
        frame_splits(frames, assignment)


@pytest.mark.fault("split.duplicate_video_id")
def test_duplicate_video_id_in_assignment(fault):
    assignment = assign_splits(units(8))
    assignment = pd.concat([assignment, assignment.iloc[[0]]])
    frames = pd.DataFrame({"frame_key": ["f/a.jpg"], "video_id": ["op0_0"]})
    fault.sources(frames, assignment)
    with fault.rejects(SplitError, "duplicate video id", "op0_0"):
        frame_splits(frames, assignment)


@pytest.mark.fault("split.leak_detected")
def test_leaky_split_is_detected(fault):
    assignment = assign_splits(units(10))
    frames = frame_splits(pd.DataFrame({"frame_key": [f"f/{i}.jpg" for i in range(20)],
                                        "video_id": [f"op{i // 2}_{i % 2}" for i in range(20)]}), assignment)
    assert leaks(frames).empty and leaks(frames, ("camera", "recorded_day")).empty  # the real split is clean
    leaked = frames.copy()
    victim = leaked.loc[0, "video_id"]
    other = next(s for s in ("train", "val", "test") if s != leaked.loc[0, "split"])
    leaked.loc[len(leaked)] = {**leaked.loc[0].to_dict(), "frame_key": "f/leak.jpg", "split": other}
    fault.sources(leaked)
    found = leaks(leaked)
    assert found["video_id"].tolist() == [victim] and int(found["n_splits"].iloc[0]) == 2
    day_leaks = leaks(leaked, ("camera", "recorded_day"))
    assert len(day_leaks) == 1
    fault.observed("flagged", f"video {victim} in 2 splits (split_has_no_leaks check fails)")


@pytest.mark.fault("gate.no_persons_labelled")
def test_no_persons_labelled_never_skips_fine_tuning(fault):
    frames = pd.DataFrame({"frame_key": ["a", "b"], "video_id": ["v1", "v2"]})
    gt = pd.DataFrame(columns=["frame_key", "x1", "y1", "x2", "y2"])
    preds = pd.DataFrame(columns=["frame_key", "x1", "y1", "x2", "y2", "conf"])
    fault.sources(frames, gt, preds)
    table = per_frame(frames, gt, preds)
    s = summary(table)
    assert math.isnan(s["recall"]) and math.isnan(s["median_best_conf"])
    decision = decide_fine_tuning(s["recall"], [math.nan, math.nan], s["median_best_conf"], [math.nan, math.nan], n_frames=2)
    assert decision.outcome == "inconclusive" and decision.fine_tune  # the plan's default action
    assert any("no interval could be computed" in r for r in decision.reasons)
    fault.observed("flagged", "; ".join(decision.reasons))


@pytest.mark.fault("gate.ci_straddles")
def test_ci_straddling_the_threshold_is_inconclusive(fault):
    recall_ci, conf_ci = [0.93, 0.97], [0.65, 0.75]
    fault.sources(recall_ci, conf_ci)
    d = decide_fine_tuning(0.951, recall_ci, 0.70, conf_ci, n_frames=120)
    assert d.outcome == "inconclusive" and d.fine_tune
    assert any("straddles 0.95" in r for r in d.reasons) and d.extra_frames_needed and d.extra_frames_needed > 0
    fault.observed("flagged", "; ".join(d.reasons))
