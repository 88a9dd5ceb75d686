"""The storage layout and the model record: one spelling, and the stored documents unchanged."""
from __future__ import annotations

import pytest

from pipeline import keys
from pipeline.model_record import OFF_SHELF, ModelRecord


def test_per_version_keys_spell_the_documented_layout():
    v = keys.version_keys("v0.1")
    assert v.weights == keys.weights_key("v0.1") == "models/yolov8n_lbzf_v0.1/yolov8n_lbzf_v0.1.pt"
    assert v.engine == "models/yolov8n_lbzf_v0.1/yolov8n_lbzf_v0.1.engine"
    assert v.model_card == "models/yolov8n_lbzf_v0.1/model_card.json"
    assert v.report("shadow_report") == "models/yolov8n_lbzf_v0.1/shadow_report_v0.1.json"
    assert keys.dataset_keys("v0.2").yaml == "datasets/lbzf_person_v0.2/lbzf_person_v0.2.yaml"
    assert keys.BASE_SPLIT == "datasets/lbzf_person_v0/dataset_split_v0.csv"
    assert keys.model_keys("yolov8n_offshelf").calibration_cache == "models/yolov8n_offshelf/calibration/calib.cache"
    assert keys.month_keys("2026-08").hard_labels == "retraining/2026-08/hard_example_labels.parquet"
    assert keys.hard_labels_month("retraining/2026-08/hard_example_labels.parquet") == "2026-08"
    assert keys.hard_labels_month("retraining/2026-08/candidate.json") is None
    with pytest.raises(ValueError, match="not a model version"):
        keys.version_keys("0.1")
    with pytest.raises(ValueError, match="need the model's version"):
        keys.model_keys("yolov8n_offshelf").report("eval")


def test_selected_model_document_round_trips_in_both_shapes():
    trained = {"model": "yolov8n_lbzf_v0", "key": keys.weights_key("v0"), "sha256": "a" * 64, "why": "gate: fail",
               "version": "v0", "imgsz": 640}
    off_shelf = {"model": OFF_SHELF, "key": None, "path": "/w/yolov8n.pt", "sha256": None, "why": "gate: pass",
                 "version": OFF_SHELF, "imgsz": 640}
    for doc in (trained, off_shelf):
        assert list(ModelRecord.from_selected(doc).to_selected().items()) == list(doc.items())
    entry = ModelRecord.from_selected(trained).entry_fields()
    assert entry["weights_key"] == trained["key"] and entry["weights_sha256"] == trained["sha256"]
    assert ModelRecord.from_entry({**entry, "action": "promote"}).entry_fields() == entry
