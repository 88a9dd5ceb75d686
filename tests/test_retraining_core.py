"""Stage C's pure functions (pipeline/retraining.py) on small hand-made tables."""
import pandas as pd

from pipeline.retraining import LABEL_TABLE_COLUMNS, all_hard_labels, candidate_split, comparison_frames, \
    hard_label_keys, held_out_buffer_frames


def _buffer(clip: str, offsets: list[float], day: str = "2026-07-01", camera: str = "cam1") -> pd.DataFrame:
    return pd.DataFrame({"frame_key": [f"frames/buffer/{camera}/{day}/{clip}/f_{o:07.1f}.jpg" for o in offsets],
                         "video_id": f"{camera}_{day}_{clip}", "actual_s": offsets})


def test_held_out_buffer_frames_leave_out_what_a_trained_hard_example_shows():
    buffer = pd.concat([_buffer("080000", [0.0, 30.0, 60.0]), _buffer("090000", [0.0], day="2026-08-01")])
    hard_frames = pd.DataFrame({"frame_key": ["frames/hard/a.jpg", "frames/hard/b.jpg"],
                                "video_id": ["cam1_2026-07-01_080000"] * 2, "actual_s": [35.0, 0.0]})
    hard = pd.DataFrame({"frame_key": ["frames/hard/a.jpg", "frames/hard/b.jpg"], "split": ["train", "held_out"]})
    frames = held_out_buffer_frames(buffer, hard, hard_frames, "2026-07", exclude_within_s=20.0)
    # 30 s is 5 s from the trained example; 0 s is near only a held-out one; August is another month
    assert [round(s) for s in frames["actual_s"]] == [0, 60]
    assert list(frames["camera"]) == ["cam1", "cam1"]
    assert frames["captured_at"].iloc[1] == pd.Timestamp("2026-07-01 08:01:00", tz="UTC")
    assert held_out_buffer_frames(buffer.iloc[:0], hard, hard_frames, "2026-07", 20.0).empty


def test_hard_label_tables_up_to_the_month_and_the_candidate_split():
    stored = ["retraining/2026-07/hard_example_labels.parquet", "retraining/2026-08/hard_example_labels.parquet",
              "retraining/2026-07/hard_examples.parquet"]
    assert hard_label_keys(stored, "2026-07") == ["retraining/2026-07/hard_example_labels.parquet"]
    assert list(all_hard_labels([]).columns) == LABEL_TABLE_COLUMNS
    base = pd.DataFrame({"frame_key": ["t1", "s1"], "video_id": ["v1", "v2"], "operation": ["sew", "cut"],
                         "camera": ["c1", "c2"], "recorded_day": ["2026-01-01"] * 2, "group": ["g1", "g2"],
                         "split": ["train", "test"]})
    hard = pd.DataFrame({"frame_key": ["h1"], "video_id": ["b1"], "camera": ["cam1"], "day": ["2026-07-01"],
                         "group": ["cam1|2026-07-01"], "split": ["held_out"], "month": ["2026-07"]})
    table = candidate_split(base, hard)
    assert table.iloc[:2].equals(base[table.columns])  # v0's rows unchanged, the frozen test split included
    assert table.iloc[2].to_dict() == {"frame_key": "h1", "video_id": "b1", "operation": "hard example 2026-07",
                                       "camera": "cam1", "recorded_day": "2026-07-01", "group": "cam1|2026-07-01",
                                       "split": "held_out"}
    chosen = pd.DataFrame({"frame_key": ["s1", "h1"]})
    boxes = pd.DataFrame({"frame_key": ["s1", "h1", "h1"], "class_name": ["person", "person", "chair"]})
    frames, gt = comparison_frames(table, hard, chosen, boxes)
    assert list(zip(frames["frame_key"], frames["subset"])) == [("s1", "test"), ("h1", "hard_held_out")]
    assert len(gt) == 2 and set(gt["class_name"]) == {"person"}
