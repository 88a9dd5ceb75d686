"""Stage C core: versions, test-split protection, the promotion gate's refusals, the production
pointer (idempotent promotion, rollback with history kept), freshness. Real files in a real local
store; comparisons built with the same paired bootstrap the pipeline uses."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from pipeline import registry
from pipeline.hashing import sha256_bytes
from pipeline.keys import split_key, weights_key
from pipeline.paired import paired_difference
from pipeline.promotion import PromotionThresholds, decide_promotion
from pipeline.shadow import shadow_report
from pipeline.versioning import (TestSplitLeakError, assign_hard_examples, check_training_set, latest_version,
                                 model_name, next_version, parse_version)
from resources.storage import LocalArtifactStore

T0 = datetime(2026, 8, 2, 6, 0, tzinfo=timezone.utc)


# --------------------------------------------------------------------------- versions


def test_versions_bump_v0_to_v0_1_to_v0_2_and_name_every_artifact():
    assert next_version("v0") == "v0.1"
    assert next_version(next_version("v0")) == "v0.2"
    assert next_version("v0.9") == "v0.10"  # minor numbers count, they are not decimals
    assert latest_version(["v0.9", "v0.10", "v0.2", "off-shelf", None]) == "v0.10"
    assert latest_version(["off-shelf"]) == "v0"
    assert parse_version("v1.3") == (1, 3)
    assert weights_key("v0.1") == "models/yolov8n_lbzf_v0.1/yolov8n_lbzf_v0.1.pt"
    assert split_key("v0.2") == "datasets/lbzf_person_v0.2/dataset_split_v0.2.csv"
    assert model_name("v0.2") == "yolov8n_lbzf_v0.2"
    with pytest.raises(ValueError, match="not a model version"):
        next_version("0.1")


def _store(tmp_path) -> LocalArtifactStore:
    return LocalArtifactStore(root=str(tmp_path / "store"))


def _seed_selected_v0(store, imgsz: int = 320) -> dict:
    """What Stage A and Stage B leave: the off-the-shelf weights Stage A measured, and v0 selected."""
    base = b"off-the-shelf weights " * 100
    store.write_bytes("models/base/yolov8n.pt", base)
    store.write_bytes("reports/stage_a/stage_a_report.json", json.dumps({"weights": {
        "source": "yolov8n.pt", "path": "/nowhere/yolov8n.pt", "key": "models/base/yolov8n.pt",
        "sha256": sha256_bytes(base), "official_coco": False, "untrained": False, "note": ""}}).encode())
    weights = b"v0 weights " * 100
    store.write_bytes("models/yolov8n_lbzf_v0/yolov8n_lbzf_v0.pt", weights)
    selected = {"model": "yolov8n_lbzf_v0", "key": "models/yolov8n_lbzf_v0/yolov8n_lbzf_v0.pt",
                "sha256": sha256_bytes(weights), "why": "gate: fine_tune", "version": "v0", "imgsz": imgsz}
    store.write_bytes("models/selected_model.json", json.dumps(selected).encode())
    return selected


def _seed_v0(store, imgsz: int = 320) -> dict:
    """v0 selected and launched (its launch gate passed): production is v0."""
    selected = _seed_selected_v0(store, imgsz)
    registry.promote(store, {"version": "v0", "model": selected["model"], "weights_key": selected["key"],
                             "weights_sha256": selected["sha256"], "imgsz": imgsz}, why="launch of v0",
                     run_id="launch", now=T0 - timedelta(days=30))
    return selected


def _candidate(store, version: str, created: datetime = T0) -> dict:
    data = f"{version} weights".encode() * 50
    store.write_bytes(weights_key(version), data)
    return {"version": version, "model": model_name(version), "weights_key": weights_key(version),
            "weights_sha256": sha256_bytes(data), "engine_key": None, "engine_sha256": None, "imgsz": 160,
            "model_created_at": created.isoformat()}


def test_candidate_versions_are_reserved_once_per_identity(tmp_path):
    store = _store(tmp_path)
    _seed_v0(store)
    first, reused = registry.reserve_version(store, identity="a" * 64, month="2026-07")
    assert (first, reused) == ("v0.1", False)
    assert registry.reserve_version(store, identity="a" * 64, month="2026-07") == ("v0.1", True)
    # another month (or the same month with other data or recipe) gets the next version
    assert registry.reserve_version(store, identity="b" * 64, month="2026-08") == ("v0.2", False)
    # a run that lost the race for a version (someone wrote v0.3 meanwhile) takes the next free one
    store.write_bytes("registry/versions/v0.3.json", json.dumps({"version": "v0.3", "identity": "c" * 64,
                                                                 "month": "2026-09"}).encode())
    assert registry.reserve_version(store, identity="d" * 64, month="2026-09") == ("v0.4", False)


# --------------------------------------------------------------------------- test-split protection


BASE = pd.DataFrame([
    # frame_key, video_id, camera, recorded_day, split
    ("frames/ops/op_a/000000000.jpg", "op_a", "phone_a", "2026-04-10", "train"),
    ("frames/ops/op_b/000000000.jpg", "op_b", "phone_b", "2026-04-11", "val"),
    ("frames/ops/op_c/000000000.jpg", "op_c", "phone_c", "2026-04-12", "test"),
    ("frames/ops/line_a/000000000.jpg", "line_a", "cam1", "2026-07-01", "deployment_test"),
], columns=["frame_key", "video_id", "camera", "recorded_day", "split"])


def _hard(camera: str, day: str, t_ms: int = 0) -> dict:
    return {"frame_key": f"frames/hard/2026-07/{camera}/{day}/080000/{t_ms:09d}.jpg",
            "video_id": f"{camera}_{day}_080000"}


def test_hard_examples_from_protected_camera_days_are_held_out_never_trained():
    hard = pd.DataFrame([_hard("cam1", "2026-07-01"), _hard("cam1", "2026-07-02"), _hard("cam2", "2026-07-02")])
    table = assign_hard_examples(hard, BASE, holdout_fraction=0.0)
    split = dict(zip(table["frame_key"].str.split("/").str[3] + "|" + table["day"], table["split"]))
    assert split == {"cam1|2026-07-01": "held_out", "cam1|2026-07-02": "train", "cam2|2026-07-02": "train"}
    reason = table.loc[table["day"] == "2026-07-01", "reason"].iloc[0]
    assert reason == "camera-day cam1 2026-07-01 is in the v0 deployment_test split"
    # the fixed evaluation share is a stable function of camera and day: the same every month
    again = assign_hard_examples(hard.iloc[::-1], BASE, holdout_fraction=0.5, seed=3)
    once = assign_hard_examples(hard, BASE, holdout_fraction=0.5, seed=3)
    assert dict(zip(again["frame_key"], again["split"])) == dict(zip(once["frame_key"], once["split"]))


def test_a_training_set_with_a_test_frame_is_refused():
    train = BASE[BASE["split"] == "train"]
    check_training_set(train, BASE, version="v0.1")  # the v0 train split itself is fine
    with pytest.raises(TestSplitLeakError) as err:
        check_training_set(pd.concat([train, BASE[BASE["split"] == "test"]]), BASE, version="v0.1")
    message = str(err.value)
    assert "refusing to train on the frozen test split / deployment test set" in message
    assert "frames/ops/op_c/000000000.jpg" in message and "candidate v0.1 training set" in message


def test_a_frame_from_a_deployment_test_camera_day_is_refused_even_under_another_name():
    sneaky = pd.DataFrame([{"frame_key": "frames/hard/2026-07/cam1/2026-07-01/080000/000010000.jpg",
                            "video_id": "cam1_2026-07-01_080000", "camera": "cam1", "recorded_day": "2026-07-01"}])
    with pytest.raises(TestSplitLeakError, match="protected camera-days, e.g. cam1 2026-07-01"):
        check_training_set(sneaky, BASE, version="v0.1", role="validation")


# --------------------------------------------------------------------------- the gate


def _per_frame(videos: int, frames_per_video: int, recall: float, conf: float, seed: int) -> pd.DataFrame:
    """Per-frame measures where the detector finds the person on `recall` of each video's frames."""
    rng = np.random.default_rng(seed)
    rows = []
    for v in range(videos):
        found = round(recall * frames_per_video) + (v % 3) - 1  # videos differ a little
        for f in range(frames_per_video):
            rows.append({"frame_key": f"v{v}/{f}", "video_id": f"v{v}", "n_gt": 1, "recall": float(f < found),
                         "best_conf": conf + rng.normal(0, 0.01)})
    return pd.DataFrame(rows)


def _comparison(candidate_recall: float, production_recall: float = 0.9, candidate_conf: float = 0.6) -> dict:
    """A comparison as candidate_comparison writes it, from the pipeline's paired bootstrap."""
    subsets = {}
    for name, seed in (("test", 1), ("deployment_test", 2), ("hard_held_out", 3)):
        a = _per_frame(8, 12, production_recall, 0.6, seed)
        b = _per_frame(8, 12, candidate_recall, candidate_conf, seed + 10).assign(frame_key=a["frame_key"])
        subsets[name] = paired_difference(a, b, n_boot=300, seed=0).to_dict("records")[0]
    return {"candidate_version": "v0.1", "production_version": "v0", "subsets": subsets}


def _logs(hours: float, *, cam2_candidate_misses: bool = False, n: int = 24) -> pd.DataFrame:
    rows = []
    for i in range(n):
        stamp = T0 + timedelta(hours=hours) * i / (n - 1)
        for camera in ("cam1", "cam2"):
            box = [[100.0, 50.0, 200.0, 250.0]]
            for version in ("v0", "v0.1"):
                missed = cam2_candidate_misses and camera == "cam2" and version == "v0.1" and i % 2 == 0
                rows.append({"timestamp": stamp, "camera": camera, "model_version": version,
                             "boxes": [] if missed else box, "confidences": [] if missed else [0.8],
                             "latency_ms": 20.0 + (1.0 if version == "v0.1" else 0.0)})
    return pd.DataFrame(rows)


def _shadow(**kwargs) -> dict:
    return shadow_report(_logs(**kwargs), candidate="v0.1", production="v0")


def test_a_candidate_that_passes_everything_is_promoted():
    decision = decide_promotion(_comparison(0.92), _shadow(hours=26.0))
    assert decision.promote and decision.reasons == []
    assert {c["kind"] for c in decision.checks} >= {"comparison worse", "shadow too short", "shadow disagreement",
                                                    "shadow latency"}


def test_refused_when_the_comparison_is_worse():
    decision = decide_promotion(_comparison(0.55), _shadow(hours=26.0))
    assert not decision.promote
    assert any(r.startswith("comparison worse: on the frozen test split the candidate's recall is") for r in
               decision.reasons), decision.reasons
    assert any("significantly worse" in r for r in decision.reasons)


def test_refused_when_the_shadow_run_disagrees():
    decision = decide_promotion(_comparison(0.92), _shadow(hours=26.0, cam2_candidate_misses=True))
    assert not decision.promote
    assert all(r.startswith("shadow disagreement: on cam2") for r in decision.reasons), decision.reasons
    assert any("agree on 0.50 of boxes" in r for r in decision.reasons)


def test_refused_when_the_shadow_run_is_too_short():
    decision = decide_promotion(_comparison(0.92), _shadow(hours=6.0))
    assert not decision.promote
    assert decision.reasons == [decision.reasons[0]] and decision.reasons[0].startswith(
        "shadow too short: the shadow logs span 6.0 h")
    assert "at least 24 h required" in decision.reasons[0]
    # the period is configurable
    assert decide_promotion(_comparison(0.92), _shadow(hours=6.0), PromotionThresholds(min_shadow_hours=4)).promote


def test_refused_without_shadow_logs():
    empty = shadow_report(_logs(hours=26.0).iloc[0:0], candidate="v0.1", production="v0")
    for shadow in (None, empty):
        decision = decide_promotion(_comparison(0.92), shadow)
        assert not decision.promote
        assert decision.reasons and decision.reasons[0].startswith("missing shadow logs: no shadow logs")
    only_candidate = _logs(hours=26.0)
    only_candidate = only_candidate[only_candidate["model_version"] == "v0.1"]
    decision = decide_promotion(_comparison(0.92), shadow_report(only_candidate, candidate="v0.1", production="v0"))
    assert decision.reasons == ["missing shadow logs: 48 candidate and 0 production rows, but no frame logged by "
                                "both (rows pair on camera and timestamp)"]


def test_refused_without_a_comparison_and_when_superseded():
    decision = decide_promotion(None, _shadow(hours=26.0))
    assert decision.reasons[0].startswith("comparison missing")
    decision = decide_promotion(_comparison(0.92), _shadow(hours=26.0), candidate="v0.1", production="v0.2")
    assert decision.reasons == ["superseded: production is already v0.2, newer than v0.1"]


# --------------------------------------------------------------------------- the pointer


def test_before_v0_is_launched_production_is_the_off_the_shelf_model(tmp_path):
    store = _store(tmp_path)
    assert registry.current_model_version(store) == "unknown"
    selected = _seed_selected_v0(store)
    assert registry.current_model_version(store) == "off-shelf"  # Stage B selecting v0 does not put it on the line
    entry = registry.production(store)
    assert entry["weights_key"] == "models/base/yolov8n.pt" and "until v0 passes its launch gate" in entry["why"]
    assert registry.read_pointer(store) is None
    with pytest.raises(registry.RegistryError, match="no previous version to roll back to"):
        registry.rollback(store, why="x", run_id="r0")
    registry.promote(store, {"version": "v0", "model": selected["model"], "weights_key": selected["key"],
                             "weights_sha256": selected["sha256"], "imgsz": 320}, why="launch", run_id="l")
    assert registry.current_model_version(store) == "v0"
    assert [(e["action"], e["version"]) for e in registry.history(store)] == [("bootstrap", "off-shelf"),
                                                                             ("promote", "v0")]


def test_without_a_stage_a_record_the_off_the_shelf_model_is_unknown_and_says_so(tmp_path):
    store = _store(tmp_path)
    _seed_selected_v0(store)
    store.delete("reports/stage_a/stage_a_report.json")
    with pytest.raises(registry.RegistryError, match="run stage_a_baseline"):
        registry.production(store)


def test_promotion_writes_pointer_and_history_together_and_is_idempotent(tmp_path):
    store = _store(tmp_path)
    _seed_v0(store)
    candidate = _candidate(store, "v0.1")
    pointer, changed = registry.promote(store, candidate, why="monthly cycle 2026-07", run_id="run-1", now=T0)
    assert changed and registry.current_model_version(store) == "v0.1"
    on_disk = json.loads((tmp_path / "store" / "registry/production.json").read_text())
    assert on_disk == json.loads(json.dumps(pointer))
    assert on_disk["weights_sha256"] == candidate["weights_sha256"] and on_disk["run_id"] == "run-1"
    assert on_disk["previous"] == "v0" and on_disk["why"] == "monthly cycle 2026-07"
    assert [(e["action"], e["version"]) for e in on_disk["history"]] == [("bootstrap", "off-shelf"), ("promote", "v0"),
                                                                         ("promote", "v0.1")]
    assert {k: on_disk[k] for k in registry.ENTRY_FIELDS} == {k: on_disk["history"][-1][k]
                                                              for k in registry.ENTRY_FIELDS}
    before = (tmp_path / "store" / "registry/production.json").read_bytes()
    # retried (the same run, or a re-run of the month): nothing changes, nothing is appended
    assert registry.promote(store, candidate, why="retry", run_id="run-1")[1] is False
    assert registry.promote(store, candidate, why="re-run", run_id="run-2")[1] is False
    assert (tmp_path / "store" / "registry/production.json").read_bytes() == before


def test_promotion_refuses_weights_that_changed_after_the_candidate_was_recorded(tmp_path):
    store = _store(tmp_path)
    _seed_v0(store)
    candidate = _candidate(store, "v0.1")
    store.write_bytes(candidate["weights_key"], b"tampered")
    before = registry.read_pointer(store)
    with pytest.raises(registry.RegistryError, match="weights sha256 is not the recorded"):
        registry.promote(store, candidate, why="x", run_id="r")
    assert registry.read_pointer(store) == before and registry.current_model_version(store) == "v0"


def test_rollback_returns_to_the_previous_version_and_keeps_the_history(tmp_path):
    store = _store(tmp_path)
    _seed_v0(store)
    registry.promote(store, _candidate(store, "v0.1"), why="2026-07", run_id="r1")
    registry.promote(store, _candidate(store, "v0.2"), why="2026-08", run_id="r2")
    pointer, changed = registry.rollback(store, why="operator: false alarms on cam2", run_id="r3")
    assert changed and pointer["version"] == "v0.1" and pointer["rolled_back_from"] == "v0.2"
    assert pointer["weights_key"] == weights_key("v0.1")
    assert registry.rollback(store, why="retry of the same run", run_id="r3")[1] is False  # not twice
    pointer, _ = registry.rollback(store, why="again", run_id="r4")
    assert pointer["version"] == "v0" and pointer["weights_key"] == "models/yolov8n_lbzf_v0/yolov8n_lbzf_v0.pt"
    assert [(e["action"], e["version"]) for e in pointer["history"]] == [
        ("bootstrap", "off-shelf"), ("promote", "v0"), ("promote", "v0.1"), ("promote", "v0.2"),
        ("rollback", "v0.1"), ("rollback", "v0")]
    pointer, _ = registry.rollback(store, why="back to the off-the-shelf model", run_id="r5")
    assert pointer["version"] == "off-shelf" and pointer["weights_key"] == "models/base/yolov8n.pt"
    with pytest.raises(registry.RegistryError, match="no previous version"):
        registry.rollback(store, why="nothing left", run_id="r6")
    # a rolled-back version is not quietly promoted again by a re-run of its month
    entry = registry.rolled_back(store, "v0.2")
    assert entry["why"] == "operator: false alarms on cam2"
    decision = decide_promotion(_comparison(0.92), _shadow(hours=26.0), rolled_back_entry=entry)
    assert not decision.promote and decision.reasons[0].startswith("rolled back: this version was rolled back")
    assert decide_promotion(_comparison(0.92), _shadow(hours=26.0), PromotionThresholds(allow_rolled_back=True),
                  rolled_back_entry=entry).promote


def test_rollback_to_a_named_version(tmp_path):
    store = _store(tmp_path)
    _seed_v0(store)
    for i, version in enumerate(("v0.1", "v0.2", "v0.3")):
        registry.promote(store, _candidate(store, version), why="m", run_id=f"r{i}")
    pointer, _ = registry.rollback(store, why="back to the first fine-tune", run_id="rb", to_version="v0.1")
    assert pointer["version"] == "v0.1" and pointer["rolled_back_from"] == "v0.3"
    with pytest.raises(registry.RegistryError, match="version was never production"):
        registry.rollback(store, why="x", run_id="rc", to_version="v0.9")


def test_freshness_flags_a_production_model_older_than_35_days(tmp_path):
    store = _store(tmp_path)
    _seed_v0(store)
    registry.promote(store, _candidate(store, "v0.1", created=T0), why="m", run_id="r1", now=T0)
    entry = registry.production(store)
    fresh = registry.freshness(entry, now=T0 + timedelta(days=34))
    assert fresh["passed"] and fresh["age_days"] == 34.0
    stale = registry.freshness(entry, now=T0 + timedelta(days=36))
    assert not stale["passed"] and stale["reason"].startswith("STALE: production model v0.1 is 36.0 days old")
    assert not registry.freshness(None)["passed"]
