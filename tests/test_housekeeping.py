"""store_housekeeping_job: removes writes killed before they finished, and nothing else."""
from __future__ import annotations

import os
import time

from orchestration.housekeeping import store_housekeeping_job
from resources.storage import LocalArtifactStore


def test_sweep_removes_only_old_orphans_outside_sources(tmp_path):
    root = tmp_path / "store"
    store = LocalArtifactStore(root=str(root))
    store.write_bytes("models/m/m.onnx", b"complete")
    old = root / "models/m/.tmp-abc123.part"
    young = root / "models/m/.tmp-def456.part"
    source = root / "raw/videos/.tmp-ghi789.part"
    source.parent.mkdir(parents=True)
    for path in (old, young, source):
        path.write_bytes(b"half a model")
    two_days_ago = time.time() - 2 * 86400
    for path in (old, source):
        os.utime(path, (two_days_ago, two_days_ago))

    result = store_housekeeping_job.execute_in_process(resources={"store": store})

    assert result.success
    assert result.output_for_node("sweep_incomplete_writes") == ["models/m/.tmp-abc123.part"]
    assert not old.exists() and young.exists() and source.exists()
    assert store.read_bytes("models/m/m.onnx") == b"complete"
    assert [i.key for i in store.list_keys("")] == ["models/m/m.onnx"]
    (event,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    assert event.event_specific_data.metadata["removed"].value == 1
