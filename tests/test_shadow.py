"""Shadow logs: the schema is enforced, rows pair on camera and timestamp, and the report measures
per-camera agreement, detection-rate and confidence differences, latency and the period covered."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from pipeline.shadow import (ShadowLogError, frame_agreement, pair_logs, read_log_file, shadow_report,
                             to_parquet_bytes, validate_logs)

T0 = datetime(2026, 8, 2, 6, 0, tzinfo=timezone.utc)
PERSON = [100.0, 40.0, 180.0, 260.0]


def row(minutes: float, camera: str, version: str, boxes: list, confidences: list, latency: float) -> dict:
    return {"timestamp": T0 + timedelta(minutes=minutes), "camera": camera, "model_version": version,
            "boxes": boxes, "confidences": confidences, "latency_ms": latency}


def test_agreement_counts_matched_boxes_over_the_larger_count():
    assert frame_agreement([], [], [], []) == 1.0  # nobody, and both say so
    assert frame_agreement([PERSON], [0.9], [PERSON], [0.8]) == 1.0
    shifted = [PERSON[0] + 60, PERSON[1], PERSON[2] + 60, PERSON[3]]  # IoU well below 0.5
    assert frame_agreement([PERSON], [0.9], [shifted], [0.9]) == 0.0
    second = [300.0, 40.0, 380.0, 260.0]
    assert frame_agreement([PERSON, second], [0.9, 0.9], [PERSON], [0.9]) == 0.5
    assert frame_agreement([PERSON], [0.9], [PERSON], [0.1], conf=0.25) == 0.0  # below the operating threshold


def test_report_per_camera_agreement_rates_confidence_latency_and_period():
    rows = []
    for i in range(10):
        # cam1: the models agree on every frame; the candidate is a little more confident and slower
        rows.append(row(i * 60, "cam1", "v0", [PERSON], [0.70], 20.0))
        rows.append(row(i * 60, "cam1", "v0.1", [PERSON], [0.80], 30.0))
        # cam2: the candidate misses the person on 4 of 10 frames
        rows.append(row(i * 60, "cam2", "v0", [PERSON], [0.60], 20.0))
        rows.append(row(i * 60, "cam2", "v0.1", [] if i < 4 else [PERSON], [] if i < 4 else [0.60], 30.0))
    rows.append(row(5, "cam1", "v0.0-old", [PERSON], [0.5], 10.0))  # another version's row: ignored, counted
    rows.append(row(7, "cam2", "v0.1", [PERSON], [0.5], 10.0))  # no production row at that time: unpaired
    report = shadow_report(validate_logs(pd.DataFrame(rows), "test"), candidate="v0.1", production="v0")
    cams = {c["camera"]: c for c in report["per_camera"]}
    assert cams["cam1"]["agreement"] == 1.0 and cams["cam1"]["detection_rate_diff"] == 0.0
    assert cams["cam1"]["conf_diff"] == pytest.approx(0.10)
    assert cams["cam2"]["agreement"] == pytest.approx(0.6)
    assert cams["cam2"]["detection_rate_candidate"] == pytest.approx(0.6)
    assert cams["cam2"]["detection_rate_diff"] == pytest.approx(-0.4)
    assert cams["cam2"]["conf_diff"] == pytest.approx(-0.24)  # 4 frames at 0 instead of 0.6
    overall = report["overall"]
    assert overall["frames"] == 20 and overall["latency_p95_ratio"] == pytest.approx(1.5)
    assert overall["latency_p50_candidate_ms"] == 30.0 and overall["latency_p50_production_ms"] == 20.0
    assert report["period_h"] == 9.0  # frames from minute 0 to minute 540
    assert report["rows_other_versions"] == 1 and report["other_versions"] == ["v0.0-old"]
    assert report["unpaired_candidate"] == 1 and report["paired_frames"] == 20


def test_duplicate_rows_for_one_frame_are_counted_once():
    rows = [row(0, "cam1", "v0", [PERSON], [0.7], 20.0), row(0, "cam1", "v0.1", [PERSON], [0.7], 20.0),
            row(0, "cam1", "v0.1", [PERSON], [0.7], 20.0)]
    paired, info = pair_logs(validate_logs(pd.DataFrame(rows), "t"), candidate="v0.1", production="v0")
    assert len(paired) == 1 and info["duplicates_dropped"] == 1


def test_logs_round_trip_as_parquet_and_json_lines():
    rows = [row(0, "cam1", "v0", [PERSON], [0.7], 20.0), row(0, "cam1", "v0.1", [], [], 21.5)]
    table = read_log_file("a.parquet", to_parquet_bytes(pd.DataFrame(rows)))
    assert table["boxes"].tolist() == [[PERSON], []] and table["timestamp"].dt.tz is not None
    lines = "\n".join(json.dumps({**r, "timestamp": r["timestamp"].isoformat()}) for r in rows).encode()
    again = read_log_file("device-2026-08-02.jsonl", lines)
    assert again["timestamp"].tolist() == table["timestamp"].tolist()
    assert again["latency_ms"].tolist() == [20.0, 21.5]


def test_logs_that_break_the_schema_are_refused_with_the_fix():
    good = pd.DataFrame([row(0, "cam1", "v0", [PERSON], [0.7], 20.0)])
    with pytest.raises(ShadowLogError, match="missing columns in field 'latency_ms'"):
        validate_logs(good.drop(columns="latency_ms"), "x.parquet")
    with pytest.raises(ShadowLogError, match="boxes and confidences differ in length"):
        validate_logs(good.assign(confidences=[[0.7, 0.2]]), "x.parquet")
    with pytest.raises(ShadowLogError, match="box without 4 numbers"):
        validate_logs(good.assign(boxes=[[[1.0, 2.0, 3.0]]]), "x.parquet")
    with pytest.raises(ShadowLogError, match="missing or negative latency"):
        validate_logs(good.assign(latency_ms=[-1.0]), "x.parquet")
    with pytest.raises(ShadowLogError, match="unknown format"):
        read_log_file("x.csv", b"a,b")
