"""A training run kept in the store (pipeline.train_runs): whole checkpoints only, restored only when
the bytes are the ones the pipeline pinned, and nothing placed when they are not."""
import json

import pytest

from pipeline import keys
from pipeline.errors import PipelineInputError
from pipeline.hashing import sha256_file
from pipeline.train_runs import CHECKPOINT_PIN, clear_run, manifest_key, restore_run, save_run
from resources.storage import LocalArtifactStore

RUN = "lbzf_person_test"


def _run(folder, checkpoint: bytes, epochs: int):
    (folder / "weights").mkdir(parents=True, exist_ok=True)
    (folder / "weights" / "last.pt").write_bytes(checkpoint)
    (folder / "weights" / CHECKPOINT_PIN).write_text(sha256_file(folder / "weights" / "last.pt") + "\n")
    (folder / "results.csv").write_text("epoch,loss\n" + "".join(f"{e},0.{e}\n" for e in range(1, epochs + 1)))
    (folder / "args.yaml").write_text("epochs: 5\n")
    return folder


@pytest.fixture
def store(tmp_path):
    return LocalArtifactStore(root=str(tmp_path / "store"))


def test_each_checkpoint_replaces_the_last_and_a_new_pod_gets_it_back(store, tmp_path):
    pod = _run(tmp_path / "pod1" / RUN, b"checkpoint after epoch 1", 1)
    save_run(store, pod, RUN)
    _run(pod, b"checkpoint after epoch 2", 2)
    manifest = save_run(store, pod, RUN)
    stored = sorted(i.key for i in store.list_keys(keys.train_run_prefix(RUN)))
    assert stored == sorted([manifest_key(RUN), *(e["key"] for e in manifest["files"].values())])  # epoch 1's gone

    fresh = tmp_path / "pod2" / RUN
    assert restore_run(store, fresh, RUN) is True
    assert (fresh / "weights" / "last.pt").read_bytes() == b"checkpoint after epoch 2"
    assert (fresh / "weights" / CHECKPOINT_PIN).read_text().strip() == sha256_file(fresh / "weights" / "last.pt")
    assert (fresh / "results.csv").read_text() == (pod / "results.csv").read_text()
    assert restore_run(store, fresh, RUN) is False  # a local checkpoint wins
    assert [p.name for p in fresh.parent.iterdir()] == [RUN]  # no staging folder left

    assert clear_run(store, RUN) == 4
    assert not list(store.list_keys(keys.TRAIN_RUNS_PREFIX))
    assert restore_run(store, tmp_path / "pod3" / RUN, RUN) is False


def test_an_unpinned_checkpoint_is_never_copied(store, tmp_path):
    pod = _run(tmp_path / "pod1" / RUN, b"pinned", 1)
    (pod / "weights" / "last.pt").write_bytes(b"swapped after the pin")
    with pytest.raises(PipelineInputError, match="unpinned checkpoint"):
        save_run(store, pod, RUN)
    assert not list(store.list_keys(keys.TRAIN_RUNS_PREFIX))


def test_a_damaged_or_foreign_stored_checkpoint_is_refused_and_nothing_is_placed(store, tmp_path):
    manifest = save_run(store, _run(tmp_path / "pod1" / RUN, b"the real checkpoint", 1), RUN)
    blob = manifest["files"]["weights/last.pt"]["key"]
    store.write_bytes(blob, b"a pickle someone else wrote")
    fresh = tmp_path / "pod2" / RUN
    with pytest.raises(PipelineInputError, match="damaged training checkpoint") as error:
        restore_run(store, fresh, RUN)
    assert blob in str(error.value) and "Remedy" in str(error.value)
    assert not fresh.exists() and list((tmp_path / "pod2").iterdir()) == []

    manifest["files"]["../../outside.pt"] = manifest["files"]["weights/last.pt"]
    store.write_bytes(manifest_key(RUN), json.dumps(manifest).encode())
    with pytest.raises(PipelineInputError, match="unexpected file"):
        restore_run(store, fresh, RUN)
    store.write_bytes(manifest_key(RUN), b"{not json")
    with pytest.raises(PipelineInputError, match="unreadable training run manifest"):
        restore_run(store, fresh, RUN)
