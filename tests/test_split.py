"""Leak-free group split: determinism, no leaks, post-install hold-out, ratios, clear errors."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import SplitError
from pipeline.split import (DEPLOYMENT_TEST, SPLITS, SplitConfig, assign_splits, frame_splits, leaks, ratio_report,
                            split_csv)

OPERATIONS = [f"op{k}" for k in range(7)]


def realistic_manifest(seed: int = 7) -> pd.DataFrame:
    """7 operations x 3-6 videos on 4 cameras over 12 days; some videos share a camera-day."""
    rng = np.random.default_rng(seed)
    rows = []
    for k, operation in enumerate(OPERATIONS):
        for j in range(int(rng.integers(3, 7))):
            rows.append({"video_id": f"{operation}_v{j}", "operation": operation,
                         "camera": f"cam{int(rng.integers(0, 4))}",
                         "recorded_day": f"2025-03-{int(rng.integers(1, 13)):02d}", "post_install": False})
    return pd.DataFrame(rows)


def one_group_per_video(n_per_operation: list[int], post_install: int = 0) -> pd.DataFrame:
    """Every video on its own camera-day, so groups == videos."""
    rows = []
    for k, n in enumerate(n_per_operation):
        for j in range(n):
            rows.append({"video_id": f"op{k}_v{j}", "operation": f"op{k}", "camera": f"cam{k}",
                         "recorded_day": f"2025-01-{j + 1:02d}", "post_install": False})
    for j in range(post_install):
        rows.append({"video_id": f"post_v{j}", "operation": "op0", "camera": "cam0",
                     "recorded_day": f"2025-06-{j + 1:02d}", "post_install": True})
    return pd.DataFrame(rows)


def frames_for(units: pd.DataFrame, per_video: int = 5) -> pd.DataFrame:
    """Frame manifest rows (FRAME_COLUMNS-like) for every unit."""
    rows = [{"frame_key": f"frames/ops/{v}/{i:09d}.jpg", "source": "ops", "video_id": v, "frame_index": i,
             "width": 1920, "height": 1080}
            for v in units["video_id"] for i in range(per_video)]
    return pd.DataFrame(rows)


def per_frame(units: pd.DataFrame, config: SplitConfig = SplitConfig()) -> pd.DataFrame:
    return frame_splits(frames_for(units), assign_splits(units, config))


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_split_bytes_and_sha():
    units = realistic_manifest()
    data_1, sha_1 = split_csv(per_frame(units, SplitConfig(seed=3)))
    # Same manifest in another row order, assigned afresh: the data version must not move.
    shuffled = units.sample(frac=1.0, random_state=11).reset_index(drop=True)
    data_2, sha_2 = split_csv(per_frame(shuffled, SplitConfig(seed=3)))
    assert data_1 == data_2
    assert sha_1 == sha_2
    assert len(sha_1) == 64
    assert data_1.startswith(b"frame_key,video_id,operation,camera,recorded_day,group,split\n")


def test_a_different_seed_can_give_a_different_assignment():
    units = realistic_manifest()
    base = assign_splits(units, SplitConfig(seed=0)).set_index("video_id")["split"]
    shas = {split_csv(per_frame(units, SplitConfig(seed=s)))[1] for s in range(5)}
    differing = [s for s in range(1, 5)
                 if not assign_splits(units, SplitConfig(seed=s)).set_index("video_id")["split"].equals(base)]
    assert differing, "every seed produced the seed-0 assignment: the seed is not used"
    assert len(shas) > 1


# --------------------------------------------------------------------------- leaks


def test_realistic_manifest_has_no_video_or_camera_day_in_two_splits():
    units = realistic_manifest()
    assert units.groupby(["camera", "recorded_day"]).size().max() > 1, "the fixture should share camera-days"
    table = per_frame(units)
    for columns in [("video_id",), ("camera", "recorded_day"), ("group",)]:
        found = leaks(table, columns)
        assert found.empty, f"{columns} leak: {found}"
    # The same fact, checked without `leaks`: each camera-day maps to exactly one split.
    assert table.groupby(["camera", "recorded_day"])["split"].nunique().max() == 1
    assert set(table["split"]) <= set(SPLITS)
    assert table["split"].notna().all()


def test_leak_check_fails_on_a_hand_made_leaky_split():
    table = per_frame(realistic_manifest())
    video = table["video_id"].iloc[0]
    rows = table.index[table["video_id"] == video]
    original = table.loc[rows[0], "split"]
    other = next(s for s in SPLITS if s != original)
    leaky = table.copy()
    leaky.loc[rows[: len(rows) // 2], "split"] = other  # half of one video's frames moved to another split

    by_video = leaks(leaky, ("video_id",))
    assert by_video.columns.tolist() == ["video_id", "n_splits"]
    assert by_video.to_dict("records") == [{"video_id": video, "n_splits": 2}]

    camera, day = table.loc[rows[0], ["camera", "recorded_day"]]
    by_camera_day = leaks(leaky, ("camera", "recorded_day"))
    assert by_camera_day.to_dict("records") == [{"camera|recorded_day": f"{camera}|{day}", "n_splits": 2}]
    assert len(leaks(leaky, ("group",))) == 1


def test_leak_check_sees_two_videos_of_one_camera_day_split_apart():
    table = per_frame(realistic_manifest())
    shared = table.groupby(["camera", "recorded_day"])["video_id"].nunique()
    camera, day = shared[shared > 1].index[0]
    videos = sorted(table.loc[(table["camera"] == camera) & (table["recorded_day"] == day), "video_id"].unique())
    leaky = table.copy()
    current = leaky.loc[leaky["video_id"] == videos[0], "split"].iloc[0]
    leaky.loc[leaky["video_id"] == videos[0], "split"] = next(s for s in SPLITS if s != current)
    assert leaks(leaky, ("video_id",)).empty  # each video is still whole...
    assert len(leaks(leaky, ("camera", "recorded_day"))) == 1  # ...but the operator session leaks


# --------------------------------------------------------------------------- post-install


def test_post_install_rows_go_to_deployment_test_and_out_of_the_ratios():
    units = one_group_per_video([6] * 7, post_install=4)
    assignment = assign_splits(units)
    post = assignment[assignment["post_install"]]
    assert len(post) == 4
    assert (post["split"] == DEPLOYMENT_TEST).all()
    assert (assignment.loc[~assignment["post_install"], "split"] != DEPLOYMENT_TEST).all()

    report = ratio_report(assignment, SplitConfig())
    assert report["groups"].sum() == 42  # the 4 post-install groups are not counted
    assert report["groups"].tolist() == [30, 6, 6]
    # Same result as the manifest without them: post-install rows do not shift the pre-install deal.
    without = assign_splits(units[~units["post_install"]])
    merged = assignment[~assignment["post_install"]].reset_index(drop=True)
    assert merged["split"].tolist() == without["split"].tolist()


def test_camera_day_with_pre_and_post_install_recordings_is_refused():
    units = one_group_per_video([6] * 3)
    units.loc[len(units)] = {"video_id": "post_x", "operation": "op0", "camera": "cam0",
                             "recorded_day": "2025-01-01", "post_install": True}  # same camera-day as op0_v0
    with pytest.raises(SplitError) as error:
        assign_splits(units)
    assert error.value.field == "post_install"
    assert "fix recorded_day or post_install" in error.value.remedy


# --------------------------------------------------------------------------- ratios


def test_41_videos_split_29_6_6_within_tolerance():
    units = one_group_per_video([6, 6, 6, 6, 6, 6, 5], post_install=3)
    assert (~units["post_install"]).sum() == 41
    assignment = assign_splits(units)
    report = ratio_report(assignment, SplitConfig())
    assert report["split"].tolist() == list(SPLITS)
    assert report["groups"].tolist() == [29, 6, 6]
    assert report["share"].tolist() == [round(29 / 41, 4), round(6 / 41, 4), round(6 / 41, 4)]
    assert report["within_tolerance"].all()


def test_ratio_report_flags_a_share_outside_tolerance():
    assignment = assign_splits(one_group_per_video([6] * 7))
    skewed = assignment.copy()
    skewed.loc[skewed["split"] == "val", "split"] = "train"  # val emptied by hand
    report = ratio_report(skewed, SplitConfig()).set_index("split")
    assert not report.loc["val", "within_tolerance"]
    assert not report.loc["train", "within_tolerance"]
    assert report.loc["test", "within_tolerance"]


# --------------------------------------------------------------------------- clear errors


def test_two_videos_for_three_splits_is_a_clear_error():
    units = one_group_per_video([2])
    with pytest.raises(SplitError) as error:
        assign_splits(units)
    assert error.value.field == "groups"
    assert error.value.value == 2
    assert "add videos" in error.value.remedy
    assert "Remedy:" in str(error.value) and "'groups'" in str(error.value)


def test_everything_on_one_camera_day_is_a_clear_error_unless_grouping_by_video():
    units = pd.DataFrame({"video_id": [f"v{i}" for i in range(10)], "operation": "op0", "camera": "cam0",
                          "recorded_day": "2025-01-01", "post_install": False})
    with pytest.raises(SplitError) as error:
        assign_splits(units, SplitConfig(by_camera_day=True))
    assert error.value.field == "groups"
    assert error.value.value == 1
    assert "by_camera_day=false" in error.value.remedy

    by_video = assign_splits(units, SplitConfig(by_camera_day=False))
    assert by_video["group"].nunique() == 10
    assert by_video.groupby("split").size().to_dict() == {"train": 7, "val": 2, "test": 1}


def test_missing_manifest_columns_are_named():
    units = one_group_per_video([6]).drop(columns=["recorded_day", "post_install"])
    with pytest.raises(SplitError) as error:
        assign_splits(units)
    assert error.value.field == "post_install, recorded_day"


# --------------------------------------------------------------------------- grouping and strata


def test_videos_sharing_camera_and_day_form_one_group():
    units = one_group_per_video([6] * 3)
    units.loc[units["video_id"] == "op1_v2", ["camera", "recorded_day"]] = ["cam0", "2025-01-04"]  # joins op0_v3
    units.loc[units["video_id"] == "op2_v5", ["camera", "recorded_day"]] = ["cam0", "2025-01-04"]  # and a third
    merged = assign_splits(units).set_index("video_id")
    assert merged.loc["op0_v3", "group"] == merged.loc["op1_v2", "group"] == merged.loc["op2_v5", "group"]
    assert merged.loc[["op0_v3", "op1_v2", "op2_v5"], "split"].nunique() == 1
    assert merged["group"].nunique() == 18 - 2

    separate = assign_splits(units, SplitConfig(by_camera_day=False)).set_index("video_id")
    assert separate["group"].nunique() == 18
    assert separate.loc["op0_v3", "group"] != separate.loc["op1_v2", "group"]


def test_every_split_holds_several_operations():
    for seed in range(5):
        assignment = assign_splits(one_group_per_video([6] * 7), SplitConfig(seed=seed))
        per_split = assignment.groupby("split")["operation"].nunique()
        assert per_split["train"] == 7, seed
        assert per_split["val"] >= 5, (seed, per_split.to_dict())
        assert per_split["test"] >= 5, (seed, per_split.to_dict())
        # No operation sits in a single split.
        assert assignment.groupby("operation")["split"].nunique().min() >= 2, seed


# --------------------------------------------------------------------------- per-frame table


def test_frame_splits_keeps_frame_order_and_takes_the_assignment_columns():
    units = realistic_manifest()
    assignment = assign_splits(units)
    frames = frames_for(units).sample(frac=1.0, random_state=2).reset_index(drop=True)
    frames["camera"] = "stale"  # a column both tables hold: the assignment wins
    table = frame_splits(frames, assignment)
    assert table["frame_key"].tolist() == frames["frame_key"].tolist()
    assert len(table) == len(frames)
    expected = assignment.set_index("video_id")
    assert table["split"].tolist() == expected.loc[table["video_id"], "split"].tolist()
    assert table["camera"].tolist() == expected.loc[table["video_id"], "camera"].tolist()
    assert table.columns.tolist().count("camera") == 1


def test_frames_of_an_unknown_video_are_a_clear_error():
    units = realistic_manifest()
    frames = pd.concat([frames_for(units), frames_for(pd.DataFrame({"video_id": ["cam1_2025-05-01_120000"]}))],
                       ignore_index=True)
    with pytest.raises(SplitError) as error:
        frame_splits(frames, assign_splits(units))
    assert error.value.field == "video_id"
    assert error.value.value == ["cam1_2025-05-01_120000"]
    assert "manifest" in error.value.remedy
