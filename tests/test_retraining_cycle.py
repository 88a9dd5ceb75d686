"""One monthly cycle through Dagster on a small store built from real bytes: H.264 buffer clips and
their quality log (the demo generator), rendered and hand-labelled frames, CVAT COCO exports, a real
YOLOv8n checkpoint as v0. The month waits for its labels, resumes when the export is imported, trains
v0.1 from v0, compares, shadows, promotes, is idempotent when re-run, rolls back, and refuses a
training set that holds a frozen test frame."""
from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow
MONTH, PARTITION = "2026-07", "2026-07-01"
W, H = 160, 96
VIDEOS = [  # video_id, operation, camera, recorded_day, post_install
    ("op_a_01", "Collar", "phone_a", "2026-04-10", False), ("op_a_02", "Collar", "phone_b", "2026-04-11", False),
    ("op_b_01", "Cuffs", "phone_c", "2026-04-12", False), ("op_b_02", "Cuffs", "phone_a", "2026-04-13", False),
    ("op_c_01", "Front", "phone_b", "2026-04-14", False), ("line_a_01", "Collar", "cam1", "2026-07-01", True),
]


def _seed(root: Path) -> None:
    """The state Stage A/B leaves behind, in miniature, plus a month of buffer footage."""
    from assets.common import FRAME_COLUMNS
    from pipeline import keys
    from demo.annotators import LabelledImage, careful, coco_export_zip
    from demo.generate import DemoConfig, _write_buffer
    from demo.motion import make_path
    from demo.scene import boxes_in_view, load_photos, render
    from pipeline.hashing import sha256_bytes
    from pipeline.offline import ultralytics_yolo
    from pipeline.weights import publish_weights
    from pipeline.split import assign_splits, frame_splits, split_csv
    from resources.storage import LocalArtifactStore

    store = LocalArtifactStore(root=str(root), allow_source_writes=True)
    rng = np.random.default_rng(5)
    photos = load_photos()
    frames, labelled = [], []
    for i, (video_id, *_rest) in enumerate(VIDEOS):
        path = make_path(photos[i % len(photos)], rng, duration_s=8.0, fps=1.0, out_w=W, out_h=H, active_s=6.0)
        rows = []
        for t in (0.0, 2.0, 4.0, 6.0):
            view = path.view_at(t)
            ok, jpeg = cv2.imencode(".jpg", render(path.photo, view, W, H))
            key = keys.frame_key("ops", video_id, t)
            store.write_bytes(key, jpeg.tobytes())
            rows.append({"frame_key": key, "source": "ops", "video_id": video_id, "video_sha256": "",
                         "target_s": t, "actual_s": t, "frame_index": int(t), "width": W, "height": H,
                         "jpeg_sha256": sha256_bytes(jpeg.tobytes())})
            labelled.append(LabelledImage(keys.package_file_name(key), W, H, boxes_in_view(path.photo, view, W, H)))
        table = pd.DataFrame(rows)[FRAME_COLUMNS]
        buffer = io.BytesIO()
        table.to_parquet(buffer, index=False)
        store.write_bytes(keys.frames_manifest_key("ops", video_id), buffer.getvalue())
        frames.append(table)
    units = pd.DataFrame(VIDEOS, columns=["video_id", "operation", "camera", "recorded_day", "post_install"])
    data, _ = split_csv(frame_splits(pd.concat(frames, ignore_index=True), assign_splits(units)))
    store.write_bytes("datasets/lbzf_person_v0/dataset_split_v0.csv", data)
    for annotator in ("sophia", "armando"):  # the main annotator and a full overlap (agreement check)
        store.write_bytes(f"{keys.INCOMING_ANNOTATIONS}ops_frames/{annotator}/export_1.zip",
                          coco_export_zip(careful(labelled, rng)))
    weights = root.parent / "v0_checkpoint.pt"
    ultralytics_yolo()("yolov8n.yaml").save(str(weights))  # a real checkpoint (random weights) as v0
    publish_weights(store, weights, "models/yolov8n_lbzf_v0/yolov8n_lbzf_v0.pt", producer="stage_b")
    store.write_bytes("models/selected_model.json", json.dumps({
        "model": "yolov8n_lbzf_v0", "key": "models/yolov8n_lbzf_v0/yolov8n_lbzf_v0.pt",
        "sha256": sha256_bytes(weights.read_bytes()), "why": "gate: fine_tune", "version": "v0",
        "imgsz": 64}).encode())
    # the off-the-shelf model Stage A measured, and v0's launch (what v0_launch records when its gate passes)
    base = root.parent / "off_shelf.pt"
    ultralytics_yolo()("yolov8n.yaml").save(str(base))
    publish_weights(store, base, "models/base/yolov8n_untrained_seed0.pt", producer="untrained stand-in")
    store.write_bytes("reports/stage_a/stage_a_report.json", json.dumps({"weights": {
        "source": "yolov8n.pt", "path": str(base), "key": "models/base/yolov8n_untrained_seed0.pt",
        "sha256": sha256_bytes(base.read_bytes()), "official_coco": False, "untrained": True, "note": ""}}).encode())
    from pipeline import registry

    registry.promote(store, {"version": "v0", "model": "yolov8n_lbzf_v0",
                             "weights_key": "models/yolov8n_lbzf_v0/yolov8n_lbzf_v0.pt",
                             "weights_sha256": sha256_bytes(weights.read_bytes()), "imgsz": 64},
                     why="launch of v0", run_id="launch")
    _write_buffer(root, DemoConfig(width=W, height=H, buffer_cameras=("cam1", "cam2"),
                                   buffer_days=("2026-07-01", "2026-07-02"), buffer_clip_starts=("080000",),
                                   buffer_clip_s=30.0, quality_every_s=5.0), rng)


RUN_CONFIG = {"ops": {
    "hard_examples": {"config": {"min_gap_s": 5.0}},
    "candidate_model": {"config": {"imgsz": 64, "epochs": 1, "batch": 8,
                                   "extra": {"close_mosaic": 0, "warmup_epochs": 0, "workers": 0}}},
    "candidate_comparison": {"config": {"n_boot": 100}},
    "shadow_report": {"config": {"simulate": True, "exclude_within_s": 2.0}},
    # the gate's refusals are unit-tested (test_registry.py); here it is opened so the pointer moves
    "production_model": {"config": {"max_recall_drop": 1.0, "max_conf_drop": 1.0, "refuse_significantly_worse": False,
                                    "min_shadow_frames": 1, "min_agreement": 0.0, "max_detection_rate_diff": 1.0,
                                    "max_shadow_conf_drop": 1.0, "max_latency_ratio": 100.0}},
}}


def cfg(*steps: str) -> dict:
    """RUN_CONFIG for the steps a job (or a subselection) runs: Dagster refuses config for others."""
    return {"ops": {k: v for k, v in RUN_CONFIG["ops"].items() if not steps or k in steps}}


RESUME = ("hard_example_labels", "candidate_model", "candidate_comparison", "shadow_report", "production_model")


def _events(result, kind: str) -> list:
    return [e for e in result.all_events if e.event_type_value == kind]


def _meta(result, step: str) -> dict:
    found = [e for e in _events(result, "ASSET_MATERIALIZATION") if e.step_key == step]
    assert found, f"{step} did not materialize"
    return {k: v.value for k, v in found[-1].event_specific_data.materialization.metadata.items()}


def _waiting_for(result) -> str:
    observed = _events(result, "ASSET_OBSERVATION")
    assert observed, "hard_example_labels should say what it waits for"
    return observed[-1].event_specific_data.asset_observation.metadata["waiting_for"].value


@pytest.fixture(scope="module")
def cycle(tmp_path_factory):
    import dagster as dg

    home = tmp_path_factory.mktemp("cycle")
    root = home / "store"
    _seed(root)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LBZF_STORAGE_ROOT", str(root))
        patch.setenv("LBZF_TRAIN_DIR", str(home / "train_runs"))
        from orchestration.sensors import hard_example_labels_sensor
        from orchestration.definitions import build_definitions
        from demo.run import annotate_hard_examples
        from orchestration.sensors import annotation_exports_sensor

        defs = build_definitions("local", env={"LBZF_STORAGE_ROOT": str(root),
                                               "LBZF_TRAIN_DIR": str(home / "train_runs")})
        store = defs.resources["store"]
        instance = dg.DagsterInstance.ephemeral()
        run = lambda job, **kw: defs.resolve_job_def(job).execute_in_process(instance=instance, **kw)  # noqa: E731
        sensor_context = lambda cursor=None: dg.build_sensor_context(  # noqa: E731
            instance=instance, cursor=cursor, resources={"store": store})
        out = {"root": root, "store": store, "instance": instance}

        run("annotations_job")  # Stage A/B's import of the ops labels
        clips = [f"{c}|{d}|080000" for c in ("cam1", "cam2") for d in ("2026-07-01", "2026-07-02")]
        instance.add_dynamic_partitions("buffer_clips", clips)
        for clip in clips:
            run("buffer_frames_job", partition_key=clip, run_config={"ops": {"buffer_frames": {"config": {
                "step_s": 5.0}}}})

        # 1. The scheduled monthly run: hard examples go out, the labels step waits, the rest is skipped.
        out["first"] = run("monthly_retraining_job", partition_key=PARTITION, run_config=RUN_CONFIG)
        out["sensor_before"] = hard_example_labels_sensor(sensor_context())
        # 2. The annotator's export lands; before it is imported the month still waits (and says so).
        out["export_key"] = annotate_hard_examples(store, MONTH)
        out["landed"] = run("retraining_resume_job", partition_key=PARTITION, run_config=cfg(*RESUME))
        # 3. The export sensor imports it; the labels sensor resumes the month.
        cursor, imports = None, 0
        for _ in range(2):
            result = annotation_exports_sensor(sensor_context(cursor))
            cursor = result.cursor
            for _request in result.run_requests:
                run("annotations_job")
                imports += 1
        out["imports"] = imports
        out["requests"] = hard_example_labels_sensor(sensor_context()).run_requests
        out["resumed"] = [run("retraining_resume_job", partition_key=r.partition_key, run_config=cfg(*RESUME),
                              tags=r.tags) for r in out["requests"]]
        out["pointer_after_promotion"] = json.loads((root / "registry/production.json").read_text())
        # 4. Re-running the month changes nothing: same version, no retraining, no second promotion.
        out["rerun"] = run("retraining_resume_job", partition_key=PARTITION, run_config=cfg(*RESUME))
        out["pointer_after_rerun"] = json.loads((root / "registry/production.json").read_text())
        # 5. One operator action rolls production back to v0.
        out["rollback"] = run("rollback_production_job")
        out["pointer_after_rollback"] = json.loads((root / "registry/production.json").read_text())
        # 6. A re-run of the month's gate does not quietly promote the rolled-back version again.
        out["regate"] = run("retraining_resume_job", partition_key=PARTITION, run_config=cfg("production_model"),
                            asset_selection=[dg.AssetKey("production_model")])
        # 7. A training set that holds a frozen test frame is refused before any training.
        split = pd.read_csv(root / "datasets/lbzf_person_v0/dataset_split_v0.csv")
        test_frame = split.loc[split["split"] == "test"].iloc[0]
        bad = pd.DataFrame([{"frame_key": test_frame["frame_key"], "video_id": test_frame["video_id"],
                             "camera": "cam9", "day": "2026-06-30", "group": "cd:cam9|2026-06-30", "split": "train",
                             "reason": "edited by hand", "n_boxes": 1, "width": W, "height": H,
                             "annotator": "sophia", "month": "2026-06"}])
        buffer = io.BytesIO()
        bad.to_parquet(buffer, index=False)
        store.write_bytes("retraining/2026-06/hard_example_labels.parquet", buffer.getvalue())
        out["test_frame"] = test_frame["frame_key"]
        out["leak"] = run("retraining_resume_job", partition_key=PARTITION, run_config=cfg("candidate_model"),
                          asset_selection=[dg.AssetKey("candidate_model")], raise_on_error=False)
        store.delete("retraining/2026-06/hard_example_labels.parquet")
        yield out


def test_without_labels_the_month_waits_visibly_and_skips_the_rest(cycle):
    first = cycle["first"]
    assert first.success
    assert _meta(first, "hard_examples")["frames_extracted"] > 0
    assert "hard_example_labels" not in {e.step_key for e in _events(first, "ASSET_MATERIALIZATION")}
    skipped = {e.step_key for e in _events(first, "STEP_SKIPPED")}
    assert skipped == {"candidate_model", "candidate_comparison", "shadow_report", "production_model"}
    assert _waiting_for(first).startswith("waiting for labels of task hard_examples_2026-07: ")
    assert "annotations/incoming/hard_examples_2026-07/<annotator>/" in _waiting_for(first)
    assert not cycle["sensor_before"].run_requests  # nothing imported yet: nothing to resume
    landed = cycle["landed"]
    assert "has landed but is not imported yet" in _waiting_for(landed)
    assert {e.step_key for e in _events(landed, "STEP_SKIPPED")} >= {"candidate_model", "production_model"}


def test_after_the_export_is_imported_the_sensor_resumes_the_month(cycle):
    assert cycle["imports"] == 1
    assert [r.partition_key for r in cycle["requests"]] == [PARTITION]
    (resumed,) = cycle["resumed"]
    assert resumed.success
    labels = _meta(resumed, "hard_example_labels")
    assert labels["status"] == "labelled" and labels["frames_labelled"] == labels["frames_sent"] > 0
    # cam1 2026-07-01 is the deployment test set's camera-day: held out, never trained on
    table = pd.read_parquet(cycle["root"] / f"retraining/{MONTH}/hard_example_labels.parquet")
    cam1_day1 = table[(table["camera"] == "cam1") & (table["day"] == "2026-07-01")]
    assert len(cam1_day1) and (cam1_day1["split"] == "held_out").all()
    assert labels["train"] == int((table["split"] == "train").sum()) > 0


def test_the_candidate_is_v0_1_trained_from_production_and_never_on_the_test_split(cycle):
    (resumed,) = cycle["resumed"]
    meta = _meta(resumed, "candidate_model")
    assert meta["version"] == "v0.1" and meta["parent_version"] == "v0" and meta["trained"] is True
    root = cycle["root"]
    card = json.loads((root / "models/yolov8n_lbzf_v0.1/model_card.json").read_text())
    from pipeline.hashing import sha256_file

    assert card["weights_sha256"] == sha256_file(root / "models/yolov8n_lbzf_v0.1/yolov8n_lbzf_v0.1.pt")
    selected = json.loads((root / "models/selected_model.json").read_text())
    assert card["parent_weights_sha256"] == selected["sha256"] and card["dataset_version"] == "v0.1"
    assert card["recipe"]["imgsz"] == 64 and card["recipe"]["epochs"] == 1
    split = pd.read_csv(root / "datasets/lbzf_person_v0.1/dataset_split_v0.1.csv")
    base = pd.read_csv(root / "datasets/lbzf_person_v0/dataset_split_v0.csv")
    kept = split.merge(base, on="frame_key", suffixes=("", "_v0"))
    assert len(kept) == len(base) and (kept["split"] == kept["split_v0"]).all()  # v0 rows unchanged
    train = split[split["split"] == "train"]
    protected = base[base["split"].isin(["test", "deployment_test"])]
    assert not set(train["frame_key"]) & set(protected["frame_key"])
    assert not set(zip(train["camera"], train["recorded_day"])) & set(zip(protected["camera"],
                                                                          protected["recorded_day"]))
    assert train["frame_key"].str.startswith("frames/hard/").sum() == card["train_frames"]["hard_examples"] > 0


def test_comparison_and_shadow_reports(cycle):
    (resumed,) = cycle["resumed"]
    root = cycle["root"]
    comparison = json.loads((root / "models/yolov8n_lbzf_v0.1/comparison_v0.1.json").read_text())
    assert comparison["candidate_version"] == "v0.1" and comparison["production_version"] == "v0"
    assert {"test", "deployment_test"} <= set(comparison["subsets"])
    test = comparison["subsets"]["test"]
    assert test["frames"] > 0 and len(test["recall_diff_ci"]) == 2 and test["n_boot"] == 100
    assert "| subset" in _meta(resumed, "candidate_comparison")["comparison"]
    shadow = json.loads((root / "models/yolov8n_lbzf_v0.1/shadow_report_v0.1.json").read_text())
    assert shadow["source"] == "simulated" and shadow["period_h"] == 24.0
    assert shadow["paired_frames"] == shadow["simulated_frames"] > 0
    assert {c["camera"] for c in shadow["per_camera"]} == {"cam1", "cam2"}
    logs = pd.read_parquet(root / "shadow/v0.1/logs/simulated.parquet")
    assert {"timestamp", "camera", "model_version", "boxes", "confidences", "latency_ms"} <= set(logs.columns)
    assert set(logs["model_version"]) == {"v0", "v0.1"} and (logs["latency_ms"] > 0).all()
    # how each model's replay ran: the fastest backend proven against PyTorch on these frames
    for record in shadow["simulated_inference"].values():
        assert record["backend"] in ("onnxruntime", "torch") and record["proof_frames"]
        assert record["backend"] == "torch" or record["parity"]["passed"]
    for role in ("production", "candidate"):
        assert comparison["inference"][role]["backend"] in ("onnxruntime", "torch")
    from resources.engine import LocalTensorRTEngineBuilder

    available, how = LocalTensorRTEngineBuilder().availability()
    if available:
        pytest.skip(f"this host builds TensorRT engines ({how}): the shadow step builds the engine instead of "
                    "reporting why it cannot")
    assert shadow["deployment"]["status"] == "not deployed" and "TensorRT" in shadow["deployment"]["reason"]


def test_promotion_writes_the_pointer_and_a_rerun_is_idempotent(cycle):
    (resumed,) = cycle["resumed"]
    meta = _meta(resumed, "production_model")
    assert meta["decision"] == "promoted" and meta["production_after"] == "v0.1"
    pointer = cycle["pointer_after_promotion"]
    assert pointer["version"] == "v0.1" and pointer["previous"] == "v0" and pointer["run_id"] == resumed.run_id
    assert pointer["weights_key"] == "models/yolov8n_lbzf_v0.1/yolov8n_lbzf_v0.1.pt"
    assert [(e["action"], e["version"]) for e in pointer["history"]] == [("bootstrap", "off-shelf"), ("promote", "v0"),
                                                                         ("promote", "v0.1")]
    rerun = cycle["rerun"]
    assert _meta(rerun, "candidate_model")["trained"] is False and _meta(rerun, "candidate_model")["version"] == "v0.1"
    assert _meta(rerun, "production_model")["decision"] == "already production"
    assert cycle["pointer_after_rerun"] == pointer
    assert sorted(p.name for p in (cycle["root"] / "registry/versions").iterdir()) == ["v0.1.json"]


def test_rollback_is_one_job_and_keeps_the_history(cycle):
    from pipeline.registry import current_model_version

    rollback = cycle["rollback"]
    assert rollback.success
    pointer = cycle["pointer_after_rollback"]
    assert pointer["version"] == "v0" and pointer["rolled_back_from"] == "v0.1"
    assert pointer["why"] == "operator rollback"
    assert [(e["action"], e["version"]) for e in pointer["history"]] == [
        ("bootstrap", "off-shelf"), ("promote", "v0"), ("promote", "v0.1"), ("rollback", "v0")]
    assert current_model_version(cycle["store"]) == "v0"
    checks = [e.event_specific_data for e in _events(rollback, "ASSET_CHECK_EVALUATION")]
    assert [(c.check_name, c.passed) for c in checks] == [("production_model_fresh", True)]
    regate = _meta(cycle["regate"], "production_model")
    assert regate["decision"] == "refused" and regate["production_after"] == "v0"
    assert "rolled back: this version was rolled back from production" in regate["reasons"]


def test_a_candidate_training_set_with_a_test_frame_is_refused(cycle):
    leak = cycle["leak"]
    assert not leak.success
    (failure,) = [e for e in _events(leak, "STEP_FAILURE") if e.step_key == "candidate_model"]
    message = failure.event_specific_data.error.to_string()
    assert "refusing to train on the frozen test split / deployment test set" in message
    assert cycle["test_frame"] in message
    assert sorted(p.name for p in (cycle["root"] / "registry/versions").iterdir()) == ["v0.1.json"]


def test_on_a_device_the_candidate_goes_to_the_shadow_slot_then_to_production(cycle, tmp_path):
    """The production path with a stand-in Jetson (build = copy, deploy = files in a device folder):
    the candidate's ONNX is exported for real, its engine kept beside its weights, deployed in shadow
    mode, and on promotion the same engine goes to the production slot."""
    import logging
    import shutil
    from types import SimpleNamespace

    from assets.candidate_engine import deploy_candidate_to_shadow, deploy_production_engine, with_engine
    from pipeline.retraining import month_candidate
    from pipeline.hashing import sha256_file
    from resources.engine import EngineBuilder, EngineBuildError, EngineBuildResult, EngineDeployResult, \
        EngineRunResult

    class StandInJetson(EngineBuilder):
        """Builds an "engine" that is its ONNX behind a marker and runs it with ONNX Runtime, so the on-device
        validation against PyTorch is real; with `corrupt` the device cannot load the engine."""
        device_dir: str
        corrupt: bool = False

        def availability(self):
            return True, "stand-in Jetson"

        def inference_support(self):
            return True, "stand-in: ONNX Runtime on the ONNX inside the engine"

        def run_engine(self, engine_path, inputs, *, input_name="images", output_name="output0", iterations=10):
            import onnxruntime as ort

            if self.corrupt:
                raise EngineBuildError("the engine does not deserialize on the device (TensorRT 8.5 vs 8.6).",
                                       remedy="rebuild it on this device", host="stand-in")
            session = ort.InferenceSession(Path(engine_path).read_bytes()[len(b"ENGINE"):],
                                           providers=["CPUExecutionProvider"])
            outputs = [session.run(None, {input_name: x})[0] for x in inputs]
            return EngineRunResult(outputs=outputs, latency_ms=[1.0] * len(inputs), host="stand-in")

        def build(self, onnx_path, out_dir, *, engine_name, precision="fp16", int8_calib_cache=None,
                  workspace_mb=2048):
            out = Path(out_dir)
            out.mkdir(parents=True, exist_ok=True)
            engine = out / f"{engine_name}.engine"
            engine.write_bytes(b"ENGINE" + Path(onnx_path).read_bytes())
            sidecar = out / f"{engine_name}.engine.json"
            sidecar.write_text(json.dumps({"engine_sha256": sha256_file(engine), "versions": {"tensorrt": "8.6.2"}}))
            return EngineBuildResult(status="built", engine_path=engine, engine_sha256=sha256_file(engine),
                                     onnx_sha256=sha256_file(onnx_path), precision=precision, metadata_path=sidecar)

        def deploy_support(self):
            return True, f"stand-in device folder {self.device_dir}"

        def deploy_engine(self, engine_path, *, mode="shadow", metadata_path=None, check_compat=True):
            target = Path(self.device_dir) / mode / Path(engine_path).name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(engine_path, target)
            shutil.copyfile(metadata_path, str(target) + ".json")
            return EngineDeployResult(mode=mode, host="stand-in", remote_path=str(target),
                                      engine_sha256=sha256_file(target), changed=True)

    store, root = cycle["store"], cycle["root"]
    device = tmp_path / "jetson"
    jetson = StandInJetson(device_dir=str(device))
    context = SimpleNamespace(log=logging.getLogger("test"))
    card = month_candidate(store, MONTH)
    # an engine that fails its on-device validation against PyTorch never reaches the shadow slot
    broken = deploy_candidate_to_shadow(context, store, StandInJetson(device_dir=str(device), corrupt=True), card)
    assert broken["status"] == "built, not deployed" and "failed on-device validation" in broken["reason"]
    assert not (device / "shadow").exists()
    for stale in ("models/yolov8n_lbzf_v0.1/yolov8n_lbzf_v0.1.engine", "models/yolov8n_lbzf_v0.1/yolov8n_lbzf_v0.1.engine.json"):
        (root / stale).unlink()  # the failed build is replaced by a fresh one below
    shadow = deploy_candidate_to_shadow(context, store, jetson, card)
    assert shadow["status"] == "deployed" and shadow["mode"] == "shadow"
    validation = json.loads((root / "models/yolov8n_lbzf_v0.1/yolov8n_lbzf_v0.1.engine.json").read_text())["validation"]
    assert validation["status"] == "validated" and validation["passed"] is True
    stored = root / "models/yolov8n_lbzf_v0.1/yolov8n_lbzf_v0.1.engine"
    assert (root / "models/yolov8n_lbzf_v0.1/yolov8n_lbzf_v0.1.onnx").read_bytes()[:8]  # exported for real
    assert (device / "shadow/yolov8n_lbzf_v0.1.engine").read_bytes() == stored.read_bytes()
    entry = with_engine(store, card)
    assert entry["engine_sha256"] == sha256_file(stored) and entry["engine_key"].endswith("v0.1.engine")
    production = deploy_production_engine(context, store, jetson, entry)
    assert production["status"] == "deployed" and production["mode"] == "production"
    assert (device / "production/yolov8n_lbzf_v0.1.engine").read_bytes() == stored.read_bytes()
    # a version with no engine in the store is not promoted on a device: the pointer would lie
    with pytest.raises(RuntimeError, match="no TensorRT engine for v0 in the store"):
        deploy_production_engine(context, store, jetson, {"version": "v0", "engine_key": None})
