"""The weights allow-list: the pipeline's own outputs are recorded when written and checked when read."""
from __future__ import annotations

import json
import pickle

import pytest

from pipeline.errors import PipelineInputError
from pipeline.hashing import sha256_file
from pipeline.weights import (PRODUCED_PREFIX, accept_weights, check_weights, fetch_weights, produced_key,
                              publish_weights)
from resources.storage import LocalArtifactStore


@pytest.fixture
def store(tmp_path):
    return LocalArtifactStore(root=str(tmp_path / "store"))


def pt(path, payload) -> object:
    path.write_bytes(pickle.dumps(payload))
    return path


def test_publish_records_then_uploads_and_fetch_accepts(store, tmp_path):
    local = pt(tmp_path / "best.pt", {"w": [1, 2, 3]})
    digest = publish_weights(store, local, "models/m/m.pt", producer="stage_b", run_id="run-1")
    assert digest == sha256_file(local)
    record = json.loads(store.read_bytes(produced_key(digest)))
    assert record == {"sha256": digest, "first_key": "models/m/m.pt", "producer": "stage_b", "run_id": "run-1"}
    fetched = fetch_weights(store, "models/m/m.pt", tmp_path / "out" / "m.pt", expected_sha256=digest)
    assert sha256_file(fetched) == digest
    # the same bytes published again under another key (a re-run) keep the first record
    publish_weights(store, local, "models/m2/m2.pt", producer="profile_x", run_id="run-2")
    assert json.loads(store.read_bytes(produced_key(digest)))["first_key"] == "models/m/m.pt"
    assert [i.key for i in store.list_keys(PRODUCED_PREFIX)] == [produced_key(digest)]


def test_unrecorded_weights_are_refused_and_removed(store, tmp_path):
    store.upload_file(pt(tmp_path / "x.pt", {"w": 0}), "models/x/x.pt")
    target = tmp_path / "out" / "x.pt"
    with pytest.raises(PipelineInputError, match=r"s3://|file://") as err:
        fetch_weights(store, "models/x/x.pt", target)
    assert "weights not on the allow-list" in str(err.value) and "LBZF_ALLOWED_WEIGHTS" in str(err.value)
    assert not target.exists()
    digest = sha256_file(tmp_path / "x.pt")
    assert check_weights(store, tmp_path / "x.pt", extra=[digest]) == digest  # the operator's allow-list


def test_expected_hash_is_checked_before_the_allow_list(store, tmp_path):
    a = publish_weights(store, pt(tmp_path / "a.pt", {"w": "a"}), "models/a/a.pt", producer="stage_b")
    b = publish_weights(store, pt(tmp_path / "b.pt", {"w": "b"}), "models/b/b.pt", producer="stage_b")
    with pytest.raises(PipelineInputError, match="weights sha256 mismatch") as err:
        fetch_weights(store, "models/b/b.pt", tmp_path / "out.pt", expected_sha256=a, recorded_by="the model card")
    assert b in str(err.value) and a in str(err.value) and "the model card" in str(err.value)


def test_accepted_base_weights_are_recorded_for_later_steps(store, tmp_path):
    local = pt(tmp_path / "custom.pt", {"w": "custom"})
    digest = sha256_file(local)
    with pytest.raises(PipelineInputError):
        check_weights(store, local)
    accept_weights(store, digest, source="models/base/custom.pt", producer="stage_a_baseline")
    assert check_weights(store, local) == digest
    assert json.loads(store.read_bytes(produced_key(digest)))["producer"] == "stage_a_baseline"
