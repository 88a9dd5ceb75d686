"""Training and export faults: weights are refused before unpickling, INT8 needs calibration, an ONNX
file that does not fit the Jetson side is refused, an engine never meets a device it was not built for,
and an interrupted training run resumes instead of starting over."""
from __future__ import annotations

import os
import pickle
import shutil
import signal
import threading
import time
from pathlib import Path

import dagster as dg
import psutil

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper

from pipeline import training
from pipeline.errors import PipelineInputError
from pipeline.export import inspect_onnx
from pipeline.hashing import sha256_file
from pipeline.training import TrainingRecipe
from resources.base_weights import BaseWeights
from resources.engine import (EngineBuildError, EngineCompatibilityError, LocalTensorRTEngineBuilder,
                              check_engine_compatible)
from resources.storage import LocalArtifactStore
from resources.trainer import PipesSubprocessTrainer


class _Payload:
    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):  # what a hostile .pt does on load: run code
        return (Path(self.target).write_text, ("payload ran\n",))


@pytest.mark.fault("model.unknown_weights")
def test_unknown_pickle_is_refused_before_loading(fault, tmp_path):
    canary = tmp_path / "payload-ran.txt"
    weights = tmp_path / "yolov8n.pt"
    weights.write_bytes(pickle.dumps({"model": _Payload(canary)}))
    before = sha256_file(weights)
    store = LocalArtifactStore(root=str(tmp_path / "store"))
    resource = BaseWeights(setting=str(weights), allow_untrained=False)
    with fault.rejects(PipelineInputError, str(weights), "weights not on the allow-list", "LBZF_BASE_WEIGHTS",
                       before, "LBZF_ALLOWED_WEIGHTS"):
        resource.resolve(store, tmp_path / "cache")
    assert not canary.exists(), "the pickle was loaded"
    fault.source(before, sha256_file(weights))
    # allow-listing it explicitly is the operator's decision, and the resolver then names the hash it used
    allowed = BaseWeights(setting=str(weights), allow_untrained=False, extra_allowed_sha256=[before])
    assert allowed.resolve(store, tmp_path / "cache").sha256 == before
    assert not canary.exists()  # resolving never unpickles


@pytest.mark.fault("model.corrupt_weights")
def test_corrupt_weights_are_refused(fault, tmp_path):
    weights = tmp_path / "best.pt"
    weights.write_bytes(os.urandom(4096))
    store = LocalArtifactStore(root=str(tmp_path / "store"))
    fault.sources(weights)
    with fault.rejects(PipelineInputError, str(weights), "weights not on the allow-list", sha256_file(weights)):
        BaseWeights(setting=str(weights), allow_untrained=True).resolve(store, tmp_path / "cache")


@pytest.mark.fault("model.weights_missing_prod")
def test_missing_weights_without_fallback_is_an_error(fault, tmp_path):
    store = LocalArtifactStore(root=str(tmp_path / "store"))
    fault.sources(store)  # the refusal writes nothing
    with fault.rejects(PipelineInputError, "weights not found", "LBZF_BASE_WEIGHTS", "models/base/yolov8n.pt",
                       "Remedy:"):
        BaseWeights(setting="models/base/yolov8n.pt", allow_untrained=False).resolve(store, tmp_path / "cache")


@pytest.mark.fault("model.produced_weights_swapped")
def test_swapped_pipeline_weights_are_refused_before_loading(fault, tmp_path):
    """A model key the pipeline wrote is overwritten out of band with a hostile pickle: the step that
    reads it back (export's `_selected_weights`) refuses it by sha256 before unpickling, removes the
    download, and loads it again once the recorded bytes are restored."""
    from assets.export import _selected_weights
    from pipeline.weights import produced_key, publish_weights

    store = LocalArtifactStore(root=str(tmp_path / "store"))
    key = "models/yolov8n_lbzf_v0/yolov8n_lbzf_v0.pt"
    good = tmp_path / "best.pt"
    good.write_bytes(pickle.dumps({"weights": list(range(64))}))
    digest = publish_weights(store, good, key, producer="stage_b", run_id="r1")
    assert store.exists(produced_key(digest))
    selected = {"model": "yolov8n_lbzf_v0", "key": key, "sha256": digest, "imgsz": 640}
    canary = tmp_path / "payload-ran.txt"
    hostile = tmp_path / "hostile.pt"
    hostile.write_bytes(pickle.dumps({"model": _Payload(canary)}))
    (Path(store.root) / key).write_bytes(hostile.read_bytes())  # out-of-band overwrite, not through the store
    fault.sources(hostile, (store, "registry/"))
    folder = tmp_path / "work"
    folder.mkdir()
    with fault.rejects(PipelineInputError, store.uri(key), "weights sha256 mismatch", sha256_file(hostile),
                       digest, "models/selected_model.json", "Remedy:"):
        _selected_weights(store, selected, folder)
    assert not canary.exists() and list(folder.iterdir()) == []
    # an unrecorded pickle is refused even where no expected hash is known
    with fault.rejects(PipelineInputError, "weights not on the allow-list", sha256_file(hostile)):
        _selected_weights(store, {**selected, "sha256": None}, folder)
    assert not canary.exists() and list(folder.iterdir()) == []
    (Path(store.root) / key).write_bytes(good.read_bytes())
    fault.rerun(digest, sha256_file(_selected_weights(store, selected, folder)))


@pytest.mark.fault("model.checkpoint_tampered")
def test_unrecorded_training_checkpoint_is_not_resumed(fault, tmp_path):
    """A resumable run folder whose weights/last.pt is not the checkpoint the pipeline saved (no pin, or
    another sha256) is refused before Ultralytics unpickles it."""
    canary = tmp_path / "payload-ran.txt"
    run = tmp_path / "runs" / "stage_b"
    (run / "weights").mkdir(parents=True)
    last = run / "weights" / "last.pt"
    last.write_bytes(pickle.dumps({"model": _Payload(canary)}))
    before = sha256_file(last)
    recipe = TrainingRecipe(epochs=1, **TINY)
    with fault.rejects(PipelineInputError, str(last), "unrecorded training checkpoint", before, "missing",
                       "Remedy:", str(run)):
        training.train(recipe, tmp_path / "data.yaml", "yolov8n.yaml", run)
    (run / "weights" / training.CHECKPOINT_PIN).write_text("0" * 64 + "\n")
    with pytest.raises(PipelineInputError, match="unrecorded training checkpoint"):
        training.train(recipe, tmp_path / "data.yaml", "yolov8n.yaml", run)
    assert not canary.exists(), "the checkpoint was unpickled"
    fault.source(before, sha256_file(last))


FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures"
TINY = dict(imgsz=64, batch=4, workers=0, seed=0, device="cpu", extra={"close_mosaic": 0, "warmup_epochs": 0})


def _kill_worker_after_first_epoch(run: Path, killed: dict, stop: threading.Event) -> None:
    """SIGKILL the Pipes training worker (a child of this process) as soon as epoch 1's checkpoint is pinned."""
    pin = run / "weights" / training.CHECKPOINT_PIN
    while not stop.is_set():
        if pin.exists():
            workers = [c for c in psutil.Process().children(recursive=True)
                       if "resources.train_worker" in " ".join(c.cmdline())]
            for worker in workers:
                worker.send_signal(signal.SIGKILL)
                killed["pid"] = worker.pid
                killed["rows"] = len((run / "results.csv").read_text().splitlines()) - 1
            if workers:
                return
        time.sleep(0.01)


@pytest.mark.fault("model.training_interrupted")
def test_interrupted_training_resumes_from_last_checkpoint(fault, tmp_path):
    """A real (tiny) Ultralytics run in the Pipes worker process is SIGKILLed after epoch 1: the crash fails
    that step only (the run worker, this process, goes on to the next asset), and the re-run resumes from
    weights/last.pt and runs epoch 2 only, keeping epoch 1's row of results.csv as it was."""
    source = FIXTURES / "coco8_yolo"
    if not source.exists():
        pytest.skip(f"real fixtures not found at {source} (shared/ is absent)")
    fault.sources(source)
    root = tmp_path / "coco8"
    shutil.copytree(source, root)
    names = yaml.safe_load((source / "coco8.yaml").read_text())["names"]
    data = tmp_path / "coco8.yaml"
    data.write_text(yaml.safe_dump({"path": str(root), "train": "images/train", "val": "images/val", "names": names}))
    run = tmp_path / "runs" / "stage_b"
    recipe = TrainingRecipe(epochs=2, **TINY)

    @dg.asset(required_resource_keys={"trainer"})
    def stage_b_profile(context):  # (annotations are strings here: `from __future__ import annotations`)
        result = context.resources.trainer.fit(recipe, data, "yolov8n.yaml", run, context=context)
        return dg.MaterializeResult(metadata={"resumed": result.resumed, "epochs": result.epochs_run})

    @dg.asset
    def unrelated_step():
        return 1

    killed: dict = {}
    stop = threading.Event()
    watcher = threading.Thread(target=_kill_worker_after_first_epoch, args=(run, killed, stop), daemon=True)
    watcher.start()
    try:
        crashed = dg.materialize([stage_b_profile, unrelated_step], resources={"trainer": PipesSubprocessTrainer()},
                                 raise_on_error=False)
    finally:
        stop.set()
        watcher.join()
    assert killed.get("pid") and killed["rows"] == 1, killed
    assert not psutil.pid_exists(killed["pid"]) or psutil.Process(killed["pid"]).status() == psutil.STATUS_ZOMBIE
    # contained: the step failed naming the crash, the run worker lived on and ran the next asset
    assert crashed.is_node_failed("stage_b_profile") and crashed.is_node_success("unrelated_step")
    failure = next(e for e in crashed.all_events if e.is_step_failure and e.step_key == "stage_b_profile")
    assert "training process failed (crash)" in failure.event_specific_data.error.to_string()
    assert (run / "weights" / "last.pt").exists() and not (run / "finished").exists()
    epoch1 = (run / "results.csv").read_text().splitlines()
    assert len(epoch1) == 2  # header + epoch 1
    resumed = dg.materialize([stage_b_profile], resources={"trainer": PipesSubprocessTrainer()})
    meta = resumed.asset_materializations_for_node("stage_b_profile")[0].metadata
    assert meta["resumed"].value is True and meta["epochs"].value == 2 and (run / "finished").exists()
    after = (run / "results.csv").read_text().splitlines()
    assert after[:2] == epoch1 and len(after) == 3  # epoch 1 not repeated, epoch 2 appended
    fault.observed("survived", f"worker SIGKILLed after epoch 1: step failed, run went on; re-run resumed from "
                   f"weights/last.pt; epochs in results.csv: {len(after) - 1}")


@pytest.fixture
def onnx_file(tmp_path):
    def make(size: int, channels_out: int, name="m.onnx") -> Path:
        shape = helper.make_tensor("shape", TensorProto.INT64, [3], [1, channels_out, -1])
        graph = helper.make_graph(
            [helper.make_node("Reshape", ["images", "shape"], ["output0"])], "detector",
            [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
            [helper.make_tensor_value_info("output0", TensorProto.FLOAT,
                                           [1, channels_out, 3 * size * size // channels_out])],
            initializer=[shape])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        path = tmp_path / name
        onnx.save(model, str(path))
        return path
    return make


@pytest.mark.fault("model.onnx_shape_mismatch")
def test_onnx_input_shape_mismatch_is_refused(fault, onnx_file):
    assert inspect_onnx(onnx_file(640, 5, "ok.onnx"), imgsz=640, n_classes=1).input_shape == [1, 3, 640, 640]
    bad = onnx_file(320, 5)
    before = sha256_file(bad)
    with fault.rejects(PipelineInputError, str(bad), "graph.input", "[320, 320]", "imgsz=640"):
        inspect_onnx(bad, imgsz=640, n_classes=1)
    fault.source(before, sha256_file(bad))


@pytest.mark.fault("model.onnx_class_mismatch")
def test_onnx_class_count_mismatch_is_refused(fault, onnx_file):
    bad = onnx_file(640, 84)
    fault.sources(bad)
    with fault.rejects(PipelineInputError, str(bad), "graph.output", "80 classes", "expected 1"):
        inspect_onnx(bad, imgsz=640, n_classes=1)


@pytest.mark.fault("model.int8_without_calibration")
def test_int8_without_calibration_is_refused(fault, onnx_file, tmp_path):
    out = tmp_path / "engines"
    model = onnx_file(640, 5)
    fault.sources(model)
    with fault.rejects(EngineBuildError, "INT8 engine refused", "calibration", "Remedy:") as seen:
        LocalTensorRTEngineBuilder().build(model, out, engine_name="yolov8n_lbzf_v0", precision="int8")
    error = seen["error"]
    assert (error.file, error.field, error.value) == (str(model), "int8_calib_cache", None)
    fault.partial(len(list(out.rglob("*"))) if out.exists() else 0)


@pytest.mark.fault("model.int8_calibration_missing")
def test_int8_with_missing_calibration_cache_is_refused(fault, onnx_file, tmp_path):
    cache = tmp_path / "calib.cache"
    model = onnx_file(640, 5)
    fault.sources(model)
    with fault.rejects(EngineBuildError, "INT8 engine refused", str(cache), "Remedy:") as seen:
        LocalTensorRTEngineBuilder().build(model, tmp_path / "e", engine_name="yolov8n_lbzf_v0",
                                           precision="int8", int8_calib_cache=cache)
    error = seen["error"]
    assert (error.file, error.field, error.value) == (str(cache), "int8_calib_cache", str(cache))


SIDECAR = {"versions": {"tensorrt": "8.5.2.2", "cuda": "11.4", "l4t": "35.3.1", "jetpack": "5.1.1"}}
SIDECAR_FILE = "engines/yolov8n_lbzf_v0.engine.json"


@pytest.mark.fault("model.engine_trt_mismatch")
def test_engine_tensorrt_mismatch_is_refused(fault):
    fault.sources(SIDECAR)
    check_engine_compatible(SIDECAR, {**SIDECAR["versions"], "hostname": "jetson-line-3"})  # same: accepted
    with fault.rejects(EngineCompatibilityError, "TensorRT differs", "8.5.2", "8.6.1", "jetson-line-3",
                       "rebuild") as seen:
        check_engine_compatible(SIDECAR, {**SIDECAR["versions"], "tensorrt": "8.6.1", "hostname": "jetson-line-3"},
                                sidecar=SIDECAR_FILE)
    error = seen["error"]
    assert (error.file, error.field, error.value) == (SIDECAR_FILE, "versions.tensorrt", "8.5.2.2")


@pytest.mark.fault("model.engine_l4t_mismatch")
def test_engine_l4t_mismatch_is_refused(fault):
    fault.sources(SIDECAR)
    with fault.rejects(EngineCompatibilityError, "L4T differs", "35.3.1", "35.4.1") as seen:
        check_engine_compatible(SIDECAR, {**SIDECAR["versions"], "l4t": "35.4.1", "hostname": "jetson-line-3"},
                                sidecar=SIDECAR_FILE)
    error = seen["error"]
    assert (error.file, error.field, error.value) == (SIDECAR_FILE, "versions.l4t", "35.3.1")


@pytest.mark.fault("model.engine_version_unknown")
def test_engine_without_known_tensorrt_version_is_refused(fault):
    sidecar = {"versions": {"l4t": "35.3.1"}}
    fault.sources(sidecar, SIDECAR)
    with fault.rejects(EngineCompatibilityError, "cannot be verified") as seen:
        check_engine_compatible({**sidecar, "engine_file": "yolov8n_lbzf_v0.engine"},
                                {**SIDECAR["versions"], "hostname": "j"})
    error = seen["error"]  # the sidecar named after its engine_file; the JetPack the device knows differs too
    assert error.file == "yolov8n_lbzf_v0.engine.json"
    assert error.field == "versions.tensorrt, versions.jetpack"
    assert error.value == {"versions.tensorrt": "unknown", "versions.jetpack": "unknown"}
