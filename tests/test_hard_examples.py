"""Monthly hard examples: red/yellow only, spread over camera-days, near-duplicates removed, seeded;
flags mapped onto buffer clips."""
from __future__ import annotations

import pandas as pd
import pytest

from pipeline.hard_examples import HardExampleSampling, attach_clips, clip_table, sample

T0 = pd.Timestamp("2025-03-01 08:00:00", tz="UTC")


def flags(rows) -> pd.DataFrame:
    """rows: (camera, day, seconds after `day` 08:00 UTC, quality)."""
    records = []
    for camera, day, seconds, quality in rows:
        ts = pd.Timestamp(f"{day} 08:00:00", tz="UTC") + pd.Timedelta(seconds=seconds)
        records.append({"camera": camera, "ts": ts, "quality": quality, "model_version": "m1", "day": day,
                        "clip_key": f"buffer/{camera}/{day}/080000.mp4", "offset_s": float(seconds)})
    return pd.DataFrame(records)


def spaced(camera, day, n, quality="red", every_s=60, start_s=0):
    return [(camera, day, start_s + i * every_s, quality) for i in range(n)]


# --------------------------------------------------------------------------- sample


def test_fewer_flagged_than_asked_takes_all_and_says_so():
    table = flags(spaced("cam1", "2025-03-01", 3) + spaced("cam2", "2025-03-02", 2, quality="yellow"))
    chosen, info = sample(table, HardExampleSampling(n=10))
    assert len(chosen) == 5
    assert info["taken"] == 5 and info["asked"] == 10 and info["flagged"] == 5
    assert info["shortfall"] == 5
    assert info["note"] == "only 5 usable flagged frames (asked 10); took all of them"
    assert sorted(chosen["ts"]) == sorted(table["ts"])


def test_a_full_sample_reports_no_shortfall():
    chosen, info = sample(flags(spaced("cam1", "2025-03-01", 30)), HardExampleSampling(n=10))
    assert len(chosen) == 10
    assert info["shortfall"] == 0
    assert info["note"] == "full sample"


def test_near_duplicates_on_one_camera_are_removed_and_counted():
    rows = [("cam1", "2025-03-01", s, "red") for s in (0, 5, 10)]  # one moment, three flags
    rows += [("cam1", "2025-03-01", 100, "yellow")]  # a different moment on the same camera
    rows += [("cam2", "2025-03-01", 5, "red")]  # the same instant on another camera is not a duplicate
    chosen, info = sample(flags(rows), HardExampleSampling(n=50, min_gap_s=20))
    assert info["near_duplicates_removed"] == 2
    assert len(chosen) == 3
    cam1 = chosen[chosen["camera"] == "cam1"]["ts"].sort_values().tolist()
    assert len(cam1) == 2 and (cam1[1] - cam1[0]).total_seconds() >= 20
    assert (chosen["camera"] == "cam2").sum() == 1
    # No two sampled frames on one camera are closer than min_gap_s, whatever the seed.
    for seed in range(5):
        picked, _ = sample(flags(rows), HardExampleSampling(n=50, min_gap_s=20, seed=seed))
        for _, group in picked.groupby("camera"):
            gaps = group["ts"].sort_values().diff().dropna().dt.total_seconds()
            assert (gaps >= 20).all()


def test_min_gap_zero_keeps_every_flag():
    rows = [("cam1", "2025-03-01", s, "red") for s in (0, 5, 10)]
    chosen, info = sample(flags(rows), HardExampleSampling(n=10, min_gap_s=0))
    assert len(chosen) == 3 and info["near_duplicates_removed"] == 0


def test_sample_spreads_over_camera_days_and_keeps_the_small_stratum():
    big = spaced("cam1", "2025-03-01", 100)  # a busy camera-day
    small = spaced("cam2", "2025-03-02", 2)  # a quiet one
    chosen, _ = sample(flags(big + small), HardExampleSampling(n=10))
    assert len(chosen) == 10
    per_stratum = chosen.groupby(["camera", "day"]).size().to_dict()
    assert per_stratum == {("cam1", "2025-03-01"): 8, ("cam2", "2025-03-02"): 2}

    # Equal strata share equally: 3 camera-days (two cameras, two days) x 50 flags, 9 asked -> 3 each.
    even = spaced("cam1", "2025-03-01", 50) + spaced("cam1", "2025-03-02", 50) + spaced("cam2", "2025-03-01", 50)
    chosen, _ = sample(flags(even), HardExampleSampling(n=9))
    assert chosen.groupby(["camera", "day"]).size().tolist() == [3, 3, 3]


def test_sample_is_deterministic_for_a_seed():
    table = flags(spaced("cam1", "2025-03-01", 60) + spaced("cam2", "2025-03-01", 60)
                  + spaced("cam2", "2025-03-02", 60, quality="yellow"))
    first, info_1 = sample(table, HardExampleSampling(n=20, seed=4))
    again, info_2 = sample(table.sample(frac=1.0, random_state=1), HardExampleSampling(n=20, seed=4))
    pd.testing.assert_frame_equal(first, again)
    assert info_1 == info_2 and info_1["seed"] == 4
    assert first[["camera", "ts"]].equals(first.sort_values(["camera", "ts"])[["camera", "ts"]])  # sorted output
    picks = {tuple(sample(table, HardExampleSampling(n=20, seed=s))[0]["ts"]) for s in range(4)}
    assert len(picks) > 1  # the seed is really used


def test_green_frames_are_never_sampled():
    rows = spaced("cam1", "2025-03-01", 40, quality="green") + spaced("cam1", "2025-03-01", 5, start_s=30)
    rows += spaced("cam2", "2025-03-01", 40, quality="green") + [("cam2", "2025-03-01", 10_000, "yellow")]
    chosen, info = sample(flags(rows), HardExampleSampling(n=100, min_gap_s=5))
    assert set(chosen["quality"]) == {"red", "yellow"}
    assert len(chosen) == 6
    assert info["flagged"] == 6


def test_no_flags_gives_an_empty_sample_with_a_note():
    chosen, info = sample(flags(spaced("cam1", "2025-03-01", 5, quality="green")), HardExampleSampling(n=10))
    assert chosen.empty and info["taken"] == 0 and info["shortfall"] == 10
    assert info["note"].startswith("only 0 usable flagged frames")


# --------------------------------------------------------------------------- clips


def test_clip_table_parses_clip_keys_and_ignores_the_rest():
    keys = ["buffer/cam1/2025-03-01/080000.mp4", "buffer/cam2/2025-03-02/235930.mp4",
            "buffer/quality/2025-03-01.parquet",  # quality log
            "buffer/quality/2025-03-01/080000.mp4",  # under the quality prefix, not a camera
            "buffer/cam1/2025-03-01/080000.json",  # sidecar, not a clip
            "buffer/cam1/20250301/080000.mp4",  # malformed day
            "buffer/cam1/2025-03-01/notes.mp4",  # a stray video that is not HHMMSS
            "buffer/cam1/2025-03-01/250000.mp4",  # not a time of day
            "raw/videos/cam1/2025-03-01/080000.mp4",  # not the buffer
            "buffer/cam1/extra/2025-03-01/080000.mp4"]  # too deep
    table = clip_table(keys)
    assert table.columns.tolist() == ["camera", "day", "key", "start"]
    assert table.to_dict("records") == [
        {"camera": "cam1", "day": "2025-03-01", "key": keys[0], "start": pd.Timestamp("2025-03-01 08:00:00", tz="UTC")},
        {"camera": "cam2", "day": "2025-03-02", "key": keys[1], "start": pd.Timestamp("2025-03-02 23:59:30", tz="UTC")},
    ]
    assert clip_table([]).columns.tolist() == ["camera", "day", "key", "start"]


def quality_log(rows) -> pd.DataFrame:
    return pd.DataFrame([{"camera": c, "ts": ts, "quality": q, "model_version": "m1"} for c, ts, q in rows])


def test_attach_clips_maps_a_timestamp_to_its_clip_and_offset():
    clips = clip_table(["buffer/cam1/2025-03-01/080000.mp4", "buffer/cam1/2025-03-01/081000.mp4",
                        "buffer/cam2/2025-03-01/080000.mp4"]).assign(duration_s=[300.0, 300.0, 600.0])
    log = quality_log([
        ("cam1", pd.Timestamp("2025-03-01 08:02:30", tz="UTC"), "red"),  # first cam1 clip, 150 s in
        ("cam1", pd.Timestamp("2025-03-01 08:12:00.5", tz="UTC"), "yellow"),  # second cam1 clip, 120.5 s in
        ("cam1", pd.Timestamp("2025-03-01 08:07:00", tz="UTC"), "red"),  # the gap between cam1 clips: no footage
        ("cam1", pd.Timestamp("2025-03-01 08:05:00", tz="UTC"), "red"),  # exactly at a clip's end: not inside
        ("cam2", pd.Timestamp("2025-03-01 09:09:59", tz="Europe/Berlin"), "red"),  # CET: 08:09:59 UTC, 599 s in
        ("cam2", pd.Timestamp("2025-03-01 08:00:00"), "green"),  # naive time is UTC: the clip's first frame
        ("cam3", pd.Timestamp("2025-03-01 08:01:00", tz="UTC"), "red"),  # a camera without buffer clips
    ])
    attached = attach_clips(log, clips)
    assert attached.columns.tolist() == ["camera", "ts", "quality", "model_version", "day", "clip_key", "offset_s"]
    got = [(r.camera, r.clip_key, r.offset_s, r.quality) for r in attached.itertuples()]
    assert got == [
        ("cam1", "buffer/cam1/2025-03-01/080000.mp4", 150.0, "red"),
        ("cam1", "buffer/cam1/2025-03-01/081000.mp4", 120.5, "yellow"),
        ("cam2", "buffer/cam2/2025-03-01/080000.mp4", 599.0, "red"),
        ("cam2", "buffer/cam2/2025-03-01/080000.mp4", 0.0, "green"),
    ]
    assert (attached["day"] == "2025-03-01").all()
    assert str(attached["ts"].iloc[2].tz) == "UTC"
    assert attached["ts"].iloc[2] == pd.Timestamp("2025-03-01 08:09:59", tz="UTC")


def test_attach_then_sample_end_to_end():
    clips = clip_table([f"buffer/cam{c}/2025-03-0{d}/080000.mp4" for c in (1, 2) for d in (1, 2)])
    clips = clips.assign(duration_s=3600.0)
    rows = [(f"cam{c}", pd.Timestamp(f"2025-03-0{d} 08:00:00", tz="UTC") + pd.Timedelta(seconds=s), "red")
            for c in (1, 2) for d in (1, 2) for s in range(0, 3600, 30)]
    rows.append(("cam1", pd.Timestamp("2025-03-03 08:00:00", tz="UTC"), "red"))  # no clip that day: dropped
    attached = attach_clips(quality_log(rows), clips)
    assert len(attached) == 4 * 120
    chosen, info = sample(attached, HardExampleSampling(n=40, min_gap_s=20))
    assert len(chosen) == 40 and info["shortfall"] == 0
    assert chosen.groupby(["camera", "day"]).size().tolist() == [10, 10, 10, 10]
    assert ((chosen["offset_s"] >= 0) & (chosen["offset_s"] < 3600)).all()
    assert chosen["clip_key"].str.endswith("/080000.mp4").all()


@pytest.mark.parametrize("n", [0, 1])
def test_n_is_respected(n):
    chosen, info = sample(flags(spaced("cam1", "2025-03-01", 5) + spaced("cam2", "2025-03-01", 5)),
                          HardExampleSampling(n=n))
    assert len(chosen) == n and info["taken"] == n


def test_attach_clips_with_overlapping_clips_takes_the_latest_clip_that_holds_the_time():
    clips = clip_table(["buffer/cam1/2025-03-01/080000.mp4", "buffer/cam1/2025-03-01/081000.mp4"])
    clips = clips.assign(duration_s=[1800.0, 60.0])  # a long clip with a short one inside it
    log = quality_log([("cam1", pd.Timestamp("2025-03-01 08:10:30", tz="UTC"), "red"),  # both hold it
                       ("cam1", pd.Timestamp("2025-03-01 08:20:00", tz="UTC"), "red"),  # only the long one
                       ("cam1", pd.Timestamp("2025-03-01 08:30:00", tz="UTC"), "red")])  # neither
    attached = attach_clips(log, clips)
    assert [(r.clip_key, r.offset_s) for r in attached.itertuples()] == [
        ("buffer/cam1/2025-03-01/081000.mp4", 30.0), ("buffer/cam1/2025-03-01/080000.mp4", 1200.0)]


def test_attach_clips_with_no_clips_or_no_flags_is_empty():
    log = quality_log([("cam1", pd.Timestamp("2025-03-01 08:00:10", tz="UTC"), "red")])
    no_clips = clip_table([]).assign(duration_s=[])
    assert attach_clips(log, no_clips).empty
    clips = clip_table(["buffer/cam1/2025-03-01/080000.mp4"]).assign(duration_s=[60.0])
    assert attach_clips(log.iloc[0:0], clips).empty
    assert attach_clips(log, clips)["offset_s"].tolist() == [10.0]
