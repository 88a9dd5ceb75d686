"""The engine's validation (pure comparison), its blocking check, and the engine_deployment asset
through `dagster.materialize` against a real OpenSSH server on 127.0.0.1.

What is real: sshd, paramiko with host-key checking, SFTP, the remote shell commands, the Dagster
runs and checks, the ONNX exported from a real (tiny) YOLOv8n, the PyTorch predictions, the store.

What is stood in: the Jetson's ``trtexec`` is a Python script (`STANDIN_TRTEXEC`). "Building" wraps
the ONNX bytes in an engine file (header: precision, calibration cache sha256); "running"
(``--loadEngine --loadInputs --exportOutput --exportTimes``) executes that ONNX with onnxruntime on
the raw float32 input and writes trtexec's JSON formats (values printed with 6 significant digits,
as trtexec does). A file ``DEGRADE`` next to it makes every run return zero scores: an engine that
lost its accuracy (say, a bad INT8 calibration). Device version files live under a fake root.

The validation frames' labels are the PyTorch model's own confident boxes (the model is untrained),
so PyTorch scores mAP@0.5 = 1 and any engine deviation shows as a drop.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from pipeline.engine_validation import compare_engine, latency_summary
from pipeline.hashing import sha256_file
from resources.engine import JetsonSSHEngineBuilder, UnavailableEngineBuilder

try:  # tests/ as a package or as a plain rootdir-relative directory
    from tests.ssh_server import openssh_server, sshd_missing_reason
    from tests.test_export import (BOX_TOLERANCE_PX, IMGSZ, MODEL_NAME, coco8_images, seed_model_store,
                                   shared_coco8, shared_onnx, shared_weights)
except ImportError:  # pragma: no cover - depends on how pytest was started
    from ssh_server import openssh_server, sshd_missing_reason
    from test_export import (BOX_TOLERANCE_PX, IMGSZ, MODEL_NAME, coco8_images, seed_model_store, shared_coco8,
                             shared_onnx, shared_weights)

STANDIN_TRTEXEC = r'''#!{python}
"""STAND-IN for NVIDIA trtexec (tests only): no TensorRT, no GPU; onnxruntime runs the wrapped ONNX."""
import hashlib
import json
import os
import sys
import time

HEADER = b"LBZF-STANDIN-ORT-ENGINE v1"
opts, flags = {}, set()
for arg in sys.argv[1:]:
    if arg.startswith("--") and "=" in arg:
        key, value = arg[2:].split("=", 1)
        opts[key] = value
    else:
        flags.add(arg.lstrip("-"))
print("&&&& RUNNING TensorRT.trtexec [TensorRT v8602] # trtexec " + " ".join(sys.argv[1:]))
print("[I] TensorRT version: 8.6.2")
if "onnx" in opts:
    with open(opts["onnx"], "rb") as handle:
        onnx = handle.read()
    precision = "int8" if "int8" in flags else "fp16" if "fp16" in flags else "fp32"
    calib = ""
    if "calib" in opts:
        with open(opts["calib"], "rb") as handle:
            calib = hashlib.sha256(handle.read()).hexdigest()
    with open(opts["saveEngine"], "wb") as handle:
        handle.write(HEADER + (" precision=%s calib_sha256=%s\n" % (precision, calib)).encode() + onnx)
    print("&&&& PASSED TensorRT.trtexec [TensorRT v8602]")
    sys.exit(0)
if "loadEngine" in opts:
    import numpy as np
    import onnxruntime as ort

    with open(opts["loadEngine"], "rb") as handle:
        head, _, onnx = handle.read().partition(b"\n")
    if not head.startswith(HEADER):
        print("[E] Error[1]: not an engine file")
        sys.exit(1)
    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    name, path = opts["loadInputs"].split(":", 1)
    x = np.fromfile(path, dtype=np.float32).reshape(session.get_inputs()[0].shape)
    times = []
    for _ in range(int(opts.get("iterations", "10"))):
        started = time.perf_counter()
        (y,) = session.run(None, {name: x})
        times.append((time.perf_counter() - started) * 1000)
    if os.path.exists(os.path.join(os.path.dirname(os.path.abspath(__file__)), "DEGRADE")):
        y[:, 4:] = 0.0
    with open(opts["exportOutput"], "w") as handle:
        handle.write('[\n  { "name" : "%s"\n  , "dimensions" : "%s"\n  , "values" : [ %s ]\n  }\n]\n'
                     % (session.get_outputs()[0].name, "x".join(str(d) for d in y.shape),
                        ", ".join("%g" % v for v in y.ravel())))
    with open(opts["exportTimes"], "w") as handle:
        json.dump([{"startEnqMs": 0, "computeMs": t, "latencyMs": t} for t in times], handle)
    print("&&&& PASSED TensorRT.trtexec [TensorRT v8602]")
    sys.exit(0)
print("=== Model Options ===")
'''

_SKIP = sshd_missing_reason()
needs_sshd = pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")


# --------------------------------------------------------------------------- engine validation (pure)


def _boxes(n: int, frames: list[str], seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        x, y = rng.uniform(0, 500, 2)
        rows.append({"frame_key": frames[i % len(frames)], "x1": x, "y1": y, "x2": x + 60, "y2": y + 120})
    return pd.DataFrame(rows)


FRAMES = [f"frames/ops/v{i}/000000000.jpg" for i in range(5)]


def test_compare_engine_identical_predictions_pass():
    gt = _boxes(40, FRAMES)
    preds = gt.assign(conf=np.linspace(0.9, 0.5, len(gt)))
    result = compare_engine(FRAMES, gt, preds, preds.copy(), delta=0.0, engine_latency_ms=[2.0, 3.0, 4.0])
    assert result.passed and result.reasons == []
    assert result.map50_pytorch == pytest.approx(1.0) and result.map50_diff == 0.0
    assert result.latency_ms_engine["median"] == 3.0 and result.frames == 5 and result.persons == 40
    assert "within ±0.0" in result.summary
    json.dumps(result.to_metadata())


def test_compare_engine_fails_outside_delta_and_delta_is_configurable():
    gt = _boxes(40, FRAMES)
    reference = gt.assign(conf=np.linspace(0.9, 0.5, len(gt)))
    engine = reference.iloc[:36].copy()  # the engine lost its 4 least confident persons: mAP 0.9
    strict = compare_engine(FRAMES, gt, reference, engine, delta=0.02)
    assert not strict.passed
    assert strict.map50_engine == pytest.approx(0.9, abs=0.011) and strict.map50_diff < -0.02
    assert "outside ±0.02" in strict.reasons[0] and "5 validation frames" in strict.reasons[0]
    assert compare_engine(FRAMES, gt, reference, engine, delta=0.15).passed


def test_compare_engine_fails_when_the_engine_is_much_better_too():
    gt = _boxes(40, FRAMES)
    engine = gt.assign(conf=0.9)
    reference = engine.iloc[:20].copy()
    result = compare_engine(FRAMES, gt, reference, engine, delta=0.05)
    assert not result.passed and result.map50_diff > 0.4


def test_compare_engine_shifted_boxes_lose_matches():
    gt = _boxes(40, FRAMES)
    reference = gt.assign(conf=0.8)
    engine = reference.assign(x1=reference["x1"] + 40, x2=reference["x2"] + 40)  # IoU 0.2 with its own person
    result = compare_engine(FRAMES, gt, reference, engine)
    assert not result.passed and result.map50_engine < 0.05  # (random boxes may overlap another person)


def test_compare_engine_latency_budget():
    gt = _boxes(10, FRAMES)
    preds = gt.assign(conf=0.8)
    slow = compare_engine(FRAMES, gt, preds, preds, max_latency_ms=5.0, engine_latency_ms=[4.0, 7.0, 8.0])
    assert not slow.passed and "exceeds the budget of 5.0 ms" in slow.reasons[0]
    unmeasured = compare_engine(FRAMES, gt, preds, preds, max_latency_ms=5.0)
    assert not unmeasured.passed and "not measured" in unmeasured.reasons[0]
    assert compare_engine(FRAMES, gt, preds, preds, max_latency_ms=10.0, engine_latency_ms=[4.0, 7.0]).passed


def test_compare_engine_refuses_to_pass_on_nothing():
    empty = pd.DataFrame(columns=["frame_key", "x1", "y1", "x2", "y2", "conf"])
    nothing = compare_engine([], empty, empty, empty)
    assert not nothing.passed and "no validation frames" in nothing.reasons[0]
    no_people = compare_engine(FRAMES, empty, empty, empty)
    assert not no_people.passed and "hold no labelled person" in no_people.reasons[0]
    assert no_people.to_metadata()["map50_engine"] is None


def test_compare_engine_refuses_tables_of_other_frames():
    gt = _boxes(10, FRAMES)
    preds = gt.assign(conf=0.8)
    other = preds.assign(frame_key="frames/ops/elsewhere/000000000.jpg")
    with pytest.raises(ValueError, match="not validation frames"):
        compare_engine(FRAMES, gt, preds, other)


def test_latency_summary():
    assert latency_summary([]) == {}
    summary = latency_summary([1.0, 2.0, 3.0, float("nan")])
    assert summary["frames"] == 3 and summary["median"] == 2.0 and summary["max"] == 3.0


# --------------------------------------------------------------------------- fixtures: model, store, device


@pytest.fixture(scope="module")
def coco8(tmp_path_factory) -> Path:
    return shared_coco8(tmp_path_factory)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return shared_weights(tmp_path_factory)


def seed_engine_store(store_root: Path, weights: Path, coco8: Path, *, label_conf: float = 0.005):
    """`seed_model_store` plus the split (coco8 train -> train, val -> val) and labels for the val
    frames: the PyTorch model's own boxes at conf >= label_conf (see the module docstring)."""
    from assets.store_io import write_parquet
    from assets.labels import ANNOTATIONS_KEY, IMAGES_KEY
    from pipeline.keys import BASE_SPLIT
    from pipeline.export import decode, load_torch_model, preprocess, torch_raw

    store, frames = seed_model_store(store_root, weights, coco8)
    frames["split"] = frames["video_id"].str.replace("coco8_", "", regex=False)
    split = frames.assign(operation="coco8", camera=frames["video_id"], recorded_day="2026-01-01",
                          group="g:" + frames["video_id"])
    columns = ["frame_key", "video_id", "operation", "camera", "recorded_day", "group", "split"]
    store.write_bytes(BASE_SPLIT, split[columns].sort_values("frame_key").to_csv(index=False).encode())
    model = load_torch_model(weights)
    boxes = []
    for key in split.loc[split["split"] == "val", "frame_key"]:
        with store.local_copy(key) as local:
            tensor, shape = preprocess(Path(local), IMGSZ)
        det = decode(torch_raw(model, tensor), imgsz=IMGSZ, frame_shape=shape, conf=label_conf)
        boxes += [{"frame_key": key, "annotator": "anna", "class_name": "person", "x1": d[0], "y1": d[1],
                   "x2": d[2], "y2": d[3]} for d in det]
    assert boxes, "the tiny model should find something to label"
    images = split[["frame_key"]].assign(annotator="anna", width=640, height=480)
    write_parquet(store, IMAGES_KEY, images)
    write_parquet(store, ANNOTATIONS_KEY, pd.DataFrame(boxes))
    return store, split


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory) -> Path:
    return shared_onnx(tmp_path_factory)


def seed_onnx(store, onnx_file: Path) -> None:
    """The ONNX and its record where onnx_model leaves them (for tests that start at the engine)."""
    key = f"models/{MODEL_NAME}/{MODEL_NAME}.onnx"
    store.upload_file(onnx_file, key)
    store.write_bytes(key + ".json", json.dumps({"model": MODEL_NAME, "onnx_sha256": sha256_file(onnx_file),
                                                 "imgsz": IMGSZ, "opset": 17}).encode())


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if _SKIP:
        pytest.skip(_SKIP)
    with openssh_server(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture(scope="module")
def device_root(tmp_path_factory) -> Path:
    """The stood-in Jetson files (JetPack 5.1.2 / L4T 35.4.1 / TensorRT 8.6.2) and trtexec."""
    root = tmp_path_factory.mktemp("jetson_root")
    (root / "etc").mkdir()
    (root / "etc/nv_tegra_release").write_text("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref\n")
    (root / "etc/nv_jetpack_release").write_text("5.1.2-b104\n")
    (root / "usr/local/cuda").mkdir(parents=True)
    (root / "usr/local/cuda/version.json").write_text(json.dumps({"cuda": {"version": "11.4.19"}}))
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson Orin Nano Developer Kit\x00")
    trtexec = root / "usr/src/tensorrt/bin/trtexec"
    trtexec.parent.mkdir(parents=True)
    trtexec.write_text(STANDIN_TRTEXEC.replace("{python}", sys.executable, 1))
    trtexec.chmod(0o755)
    return root


@pytest.fixture
def jetson(sshd, device_root, tmp_path) -> JetsonSSHEngineBuilder:
    (device_root / "usr/src/tensorrt/bin/DEGRADE").unlink(missing_ok=True)
    return JetsonSSHEngineBuilder(host=sshd.host, port=sshd.port, user=sshd.user, key_path=str(sshd.client_key),
                                  known_hosts_path=str(sshd.known_hosts),
                                  remote_dir=str(tmp_path / "device" / "lbzf" / "engines"),
                                  trtexec_path=str(device_root / "usr/src/tensorrt/bin/trtexec"),
                                  probe_root=str(device_root), connect_timeout_s=5, command_timeout_s=120,
                                  retries=2, retry_backoff_s=0.01)


def _meta(result, node: str) -> dict:
    materializations = result.asset_materializations_for_node(node)
    assert materializations, f"{node} was not materialized"
    return {k: v.value for k, v in materializations[-1].metadata.items()}


def _checks(result) -> dict:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def _export_assets():
    from assets.export import engine_deployment, engine_matches_pytorch, onnx_model, onnx_parity, tensorrt_engine

    return onnx_model, onnx_parity, tensorrt_engine, engine_matches_pytorch, engine_deployment


ENGINE_CONFIG = {"validation_frames": 4, "validation_iterations": 3}


# --------------------------------------------------------------------------- running an engine over SSH


@needs_sshd
def test_run_engine_over_ssh_matches_onnxruntime(jetson, onnx_file, coco8, tmp_path):
    import onnxruntime as ort

    from pipeline.export import preprocess

    onnx_path = onnx_file
    built = jetson.build(onnx_path, tmp_path / "out", engine_name="person")
    ok, how = jetson.inference_support()
    assert ok and "trtexec --loadEngine" in how
    tensors = [preprocess(p, IMGSZ)[0] for p in coco8_images(coco8, "val")[:2]]
    run = jetson.run_engine(built.engine_path, tensors, iterations=2)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    for tensor, out in zip(tensors, run.outputs):
        (expected,) = session.run(None, {"images": tensor})
        assert out.shape == expected.shape == (1, 5, 84)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-3)  # trtexec prints 6 significant digits
    assert len(run.latency_ms) == 2 and all(t > 0 for t in run.latency_ms)
    validation_dir = Path(jetson.effective_remote_dir) / "validation"
    assert validation_dir.is_dir() and not any(validation_dir.iterdir())  # the private run folder is removed


# --------------------------------------------------------------------------- build, validate, deploy


@needs_sshd
def test_build_validate_and_deploy_through_dagster(jetson, weights, coco8, tmp_path):
    store, _ = seed_engine_store(tmp_path / "store", weights, coco8)
    instance = dg.DagsterInstance.ephemeral()
    resources = {"store": store, "engine_builder": jetson}
    remote = Path(jetson.effective_remote_dir)
    shadow = remote / "shadow" / f"{MODEL_NAME}.engine"
    engine_file = tmp_path / "store" / f"models/{MODEL_NAME}/{MODEL_NAME}.engine"

    # 1. ONNX -> engine built on the "Jetson" -> validated there -> deployed in shadow mode.
    first = dg.materialize(list(_export_assets()), resources=resources, instance=instance,
                           run_config={"ops": {"tensorrt_engine": {"config": ENGINE_CONFIG},
                                               "onnx_model": {"config": {"box_tolerance_px": BOX_TOLERANCE_PX}}}})
    assert first.success
    checks = _checks(first)
    assert checks["onnx_parity"].passed and checks["engine_matches_pytorch"].passed
    check_meta = {k: v.value for k, v in checks["engine_matches_pytorch"].metadata.items()}
    assert check_meta["built"] is True and check_meta["frames"] == 4
    assert check_meta["map50_pytorch"] == pytest.approx(1.0) and abs(check_meta["map50_diff"]) <= 0.02
    engine_meta = _meta(first, "tensorrt_engine")
    assert engine_meta["status"] == "built" and engine_meta["validated"] is True
    assert engine_meta["validation"]["ran_on"] == "127.0.0.1" and engine_meta["validation"]["split"] == "val"
    assert engine_meta["validation"]["latency_ms_engine"]["frames"] == 4
    sha_a = sha256_file(engine_file)
    assert engine_meta["engine_sha256"] == sha_a
    sidecar = json.loads(engine_file.with_name(engine_file.name + ".json").read_text())
    assert sidecar["builder"] == "jetson-ssh" and sidecar["validation"]["passed"] is True
    assert sidecar["versions"]["tensorrt"] == "8.6.2" and sidecar["versions"]["jetpack"] == "5.1.2-b104"

    deployed = _meta(first, "engine_deployment")
    assert deployed["deployed"] is True and deployed["mode"] == "shadow" and deployed["changed"] is True
    assert deployed["remote_path"] == str(shadow) and deployed["engine_sha256"] == sha_a == sha256_file(shadow)
    assert "previous_path" not in deployed  # nothing was there before
    on_device = json.loads(shadow.with_name(shadow.name + ".json").read_text())
    assert on_device["engine_sha256"] == sha_a and on_device["deploy_mode"] == "shadow"
    assert on_device["validation"]["passed"] is True

    # 2. A new engine (fp32) may not go to production before it has run in shadow mode.
    rebuilt = dg.materialize([_export_assets()[2], _export_assets()[3], _export_assets()[4]], resources=resources,
                             instance=instance,
                             run_config={"ops": {"tensorrt_engine": {"config": {**ENGINE_CONFIG, "precision": "fp32",
                                                                                 "validation_frames": 2}},
                                                 "engine_deployment": {"config": {"mode": "production"}}}})
    assert rebuilt.success
    sha_b = sha256_file(engine_file)
    assert sha_b != sha_a
    refused = _meta(rebuilt, "engine_deployment")
    assert refused["deployed"] is False and "has not run in shadow mode" in refused["reason"]
    assert not (remote / "production").exists()

    # 3. Shadow: the new engine replaces the old one, which is kept as .previous.
    shadowed = dg.materialize([_export_assets()[4]], resources=resources, instance=instance)
    meta = _meta(shadowed, "engine_deployment")
    assert meta["deployed"] is True and meta["engine_sha256"] == sha_b == sha256_file(shadow)
    assert meta["previous_path"] == str(shadow) + ".previous" and meta["previous_sha256"] == sha_a
    assert sha256_file(str(shadow) + ".previous") == sha_a

    # 4. Production only after v0 passed its launch gate (v0_launch writes the production pointer).
    gated = dg.materialize([_export_assets()[4]], resources=resources, instance=instance,
                           run_config={"ops": {"engine_deployment": {"config": {"mode": "production"}}}})
    refused = _meta(gated, "engine_deployment")
    assert refused["deployed"] is False and "has not passed its launch gate" in refused["reason"]
    assert not (remote / "production").exists()
    selected = json.loads((tmp_path / "store" / "models/selected_model.json").read_text())
    store.write_bytes("registry/production.json", json.dumps({  # what v0_launch records when its gate passes
        "version": selected["version"], "weights_sha256": selected["sha256"], "action": "promote",
        "history": []}).encode())
    promoted = dg.materialize([_export_assets()[4]], resources=resources, instance=instance,
                              run_config={"ops": {"engine_deployment": {"config": {"mode": "production"}}}})
    meta = _meta(promoted, "engine_deployment")
    production = remote / "production" / f"{MODEL_NAME}.engine"
    assert meta["deployed"] is True and meta["remote_path"] == str(production)
    assert sha256_file(production) == sha_b and meta["device_versions"]["l4t"] == "35.4.1"
    history = json.loads((tmp_path / "store" / f"models/{MODEL_NAME}/{MODEL_NAME}.engine.deployments.json").read_text())
    assert [(h["mode"], h["engine_sha256"]) for h in history] == [("shadow", sha_a), ("shadow", sha_b),
                                                                  ("production", sha_b)]


@needs_sshd
def test_engine_outside_delta_fails_the_check_and_is_never_deployed(jetson, device_root, weights, onnx_file, coco8,
                                                                  tmp_path):
    store, _ = seed_engine_store(tmp_path / "store", weights, coco8)
    seed_onnx(store, onnx_file)
    (device_root / "usr/src/tensorrt/bin/DEGRADE").write_text("scores lost\n")
    try:
        resources = {"store": store, "engine_builder": jetson}
        result = dg.materialize(list(_export_assets())[2:], resources=resources, raise_on_error=False,
                                run_config={"ops": {"tensorrt_engine": {"config": ENGINE_CONFIG}}})
    finally:
        (device_root / "usr/src/tensorrt/bin/DEGRADE").unlink()
    assert not result.success
    check = _checks(result)["engine_matches_pytorch"]
    assert not check.passed
    meta = {k: v.value for k, v in check.metadata.items()}
    assert meta["map50_pytorch"] == pytest.approx(1.0) and meta["map50_engine"] == 0.0
    assert "outside ±0.02" in meta["result"]
    assert not result.asset_materializations_for_node("engine_deployment")  # the blocking check stopped it
    assert not (Path(jetson.effective_remote_dir) / "shadow").exists()

    # Asked for on its own later, the deployment still refuses the engine, without failing the run.
    alone = dg.materialize([_export_assets()[4]], resources=resources)
    meta = _meta(alone, "engine_deployment")
    assert alone.success and meta["deployed"] is False
    assert "not validated against PyTorch" in meta["reason"] and "outside ±0.02" in meta["reason"]
    assert not (Path(jetson.effective_remote_dir) / "shadow").exists()


def test_unavailable_builder_passes_the_check_as_not_built_and_deploys_nothing(tmp_path):
    from resources.storage import LocalArtifactStore

    store = LocalArtifactStore(root=str(tmp_path / "store"))
    store.write_bytes("models/selected_model.json", json.dumps(
        {"model": MODEL_NAME, "key": f"models/{MODEL_NAME}/{MODEL_NAME}.pt", "sha256": "0" * 64, "version": "v0",
         "imgsz": IMGSZ}).encode())
    builder = UnavailableEngineBuilder(reason="no TensorRT here (test)")
    result = dg.materialize(list(_export_assets())[2:], resources={"store": store, "engine_builder": builder})
    assert result.success
    assert _meta(result, "tensorrt_engine")["status"] == "unavailable"
    check = _checks(result)["engine_matches_pytorch"]
    assert check.passed and check.metadata["result"].value == "not built: no TensorRT here (test)"
    assert check.metadata["built"].value is False
    deployed = _meta(result, "engine_deployment")
    assert deployed["deployed"] is False and deployed["reason"] == "engine not built: no TensorRT here (test)"
