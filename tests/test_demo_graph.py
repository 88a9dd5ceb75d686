"""The whole demo graph once, end to end through Dagster (the small demo configuration).

Real work on real bytes: H.264 videos decoded, JPEGs written, CVAT exports imported, a model trained
on CPU, ONNX exported and run. Takes a few minutes; everything below reads what that run left.
"""
import io
import json
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline.hashing import sha256_bytes, sha256_file
from pipeline.weights import UNTRAINED_BASE_WARNING

pytestmark = pytest.mark.slow
SOURCES = ("raw", "buffer", "annotations/incoming")


def _source_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256_file(p) for s in SOURCES for p in sorted((root / s).rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    home = tmp_path_factory.mktemp("demo")
    saved = {k: os.environ.get(k) for k in ("LBZF_STORAGE_ROOT", "DAGSTER_HOME", "LBZF_TRAIN_DIR")}
    os.environ.update({"LBZF_STORAGE_ROOT": str(home / "store"), "DAGSTER_HOME": str(home / "dagster_home"),
                       "LBZF_TRAIN_DIR": str(home / "train_runs")})
    try:
        from demo.generate import SMALL, generate_demo
        from demo.run import run_demo

        generate_demo(home / "store", SMALL)
        before = _source_hashes(home / "store")
        summary = run_demo(home, small=True)
        after = _source_hashes(home / "store")
        import dagster as dg

        instance = dg.DagsterInstance.get()
        yield {"home": home, "store": home / "store", "summary": summary, "before": before, "after": after,
               "instance": instance}
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _metadata(instance, key: str) -> dict:
    import dagster as dg

    event = instance.get_latest_materialization_event(dg.AssetKey(key))
    assert event is not None, f"{key} was not materialized"
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def test_source_footage_and_exports_are_never_modified(demo):
    kept = {k: v for k, v in demo["after"].items() if k in demo["before"]}
    assert demo["before"] and demo["before"] == kept
    # the only new source is the simulated annotator's CVAT export of the month's hard examples (Stage C)
    assert set(demo["after"]) - set(demo["before"]) == {"annotations/incoming/hard_examples_2026-07/sophia/export_1.zip"}


def test_frames_have_exact_timestamps_and_hashes(demo):
    manifest = pd.read_parquet(demo["store"] / "frames/ops/op_collar_01/manifest.parquet")
    assert list(manifest["target_s"]) == [float(2 * i) for i in range(len(manifest))]
    assert (manifest["actual_s"] == manifest["target_s"]).all()  # constant 5 fps: targets fall on frames
    for row in manifest.head(3).itertuples():
        assert sha256_file(demo["store"] / row.frame_key) == row.jpeg_sha256
    meta = _metadata(demo["instance"], "stage_a_sample")
    assert meta["videos"] == 21 and meta["operations"] == 7


def test_agreement_and_split_checks_passed(demo):
    results = {}
    import dagster as dg

    for asset, check in [("annotations", "annotator_agreement"), ("dataset_split", "split_has_no_leaks"),
                         ("dataset_split", "split_ratios_within_tolerance"), ("onnx_model", "onnx_parity")]:
        records = demo["instance"].event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey(asset), check), limit=1)
        assert records, check
        evaluation = records[0].event.dagster_event.event_specific_data
        results[check] = evaluation.passed
    assert results == {k: True for k in results}, results


def test_split_csv_is_hashed_and_leak_free(demo):
    store = demo["store"]
    data = (store / "datasets/lbzf_person_v0/dataset_split_v0.csv").read_bytes()
    meta = _metadata(demo["instance"], "dataset_split")
    assert meta["split_sha256"] == sha256_bytes(data)
    table = pd.read_csv(io.BytesIO(data))
    assert (table.groupby("video_id")["split"].nunique() == 1).all()
    assert set(table["split"]) == {"train", "val", "test", "deployment_test"}
    assert (table.loc[table["video_id"].str.startswith("line_"), "split"] == "deployment_test").all()


def test_dataset_yaml_is_ultralytics_readable_and_versioned(demo):
    store = demo["store"]
    doc = yaml.safe_load((store / "datasets/lbzf_person_v0/lbzf_person_v0.yaml").read_text())
    assert doc["names"] == {0: "person"} and doc["train"] == "images/train"
    split_sha = sha256_bytes((store / "datasets/lbzf_person_v0/dataset_split_v0.csv").read_bytes())
    assert doc["lbzf_split_sha256"] == split_sha
    images = {p.stem for p in (store / "datasets/lbzf_person_v0/images/train").glob("*.jpg")}
    labels = {p.stem for p in (store / "datasets/lbzf_person_v0/labels/train").glob("*.txt")}
    assert images and images == labels


def test_stage_a_reports_untrained_baseline_loudly_and_decides(demo):
    report = json.loads((demo["store"] / "reports/stage_a/stage_a_report.json").read_text())
    assert report["weights"]["untrained"] is True
    assert report["warning"] == "baseline is untrained: not a Stage A measurement"
    # an untrained detector finds (almost) nobody: the recall interval lies below the threshold, so the gate
    # must say fine-tune (anything else would mean the gate or the metrics are wrong)
    assert report["gate"]["outcome"] == "fine_tune", report["gate"]
    assert any(r.startswith("recall") and "lies below" in r for r in report["gate"]["reasons"]), report["gate"]
    assert report["ci"]["n_clusters"] >= 10 and report["ci"]["seed"] == 0
    meta = _metadata(demo["instance"], "stage_a_baseline")
    assert meta["WARNING"] == "baseline is untrained: not a Stage A measurement"
    assert meta["official_coco_weights"] is False


def test_stage_b_model_eval_and_selection(demo):
    store = demo["store"]
    model = store / "models/yolov8n_lbzf_v0/yolov8n_lbzf_v0.pt"
    meta = _metadata(demo["instance"], "stage_b_model")
    assert meta["sha256"] == sha256_file(model)
    evaluation = json.loads((store / "models/yolov8n_lbzf_v0/eval_v0.json").read_text())
    assert evaluation["model_sha256"] == meta["sha256"]
    for split in ("val", "test", "deployment_test"):
        entry = evaluation["splits"][split]
        assert entry["n_frames"] > 0 and "per_frame" in entry
        # mAP over IoU 0.5:0.95 averages APs at stricter IoUs than 0.5: it cannot exceed mAP50
        assert entry["map50_95"] <= entry["map50"] + 1e-9
        assert demo["summary"]["stage_b"][split]["map50"] == entry["map50"]
        # the confusion matrix agrees with the evaluation's own counts (seed views, item 1)
        totals = entry["confusion_matrix"]["totals"]
        sweep = {row["conf"]: row for row in entry["conf_sweep"]}
        assert totals["false_positives"] == entry["per_frame"]["false_positives"]
        assert totals["gt_boxes"] - totals["misses"] == sweep[0.25]["tp"] and totals["gt_boxes"] == sweep[0.25]["n_gt"]
        assert (store / f"models/yolov8n_lbzf_v0/figures/confusion_{split}.png").stat().st_size > 5000
    # Stage B started from the untrained fallback (no official weights here): its figures say so as loudly
    assert demo["summary"]["stage_b_warning"] == UNTRAINED_BASE_WARNING
    gap = evaluation["domain_shift"]
    assert gap["direction"] == "deployment_test - test" and set(gap["gap"]) == {"recall", "median_best_conf", "map50"}
    eval_meta = _metadata(demo["instance"], "evaluation")
    for label in ("confusion_matrix_test", "pr_f1_curves_test", "conf_sweep_test", "domain_shift_gap"):
        assert "data:image/png;base64," in eval_meta[label], label
    assert "data:image/png;base64," in meta["training_curves"]
    for backend in ("pytorch", "onnx"):
        speed = evaluation["speed_per_stage"][backend]
        assert min(speed["preprocess"], speed["inference"], speed["postprocess"]) > 0
    selected = json.loads((store / "models/selected_model.json").read_text())
    assert selected["model"] == "yolov8n_lbzf_v0" and selected["sha256"] == meta["sha256"]


def test_onnx_exported_checked_and_runs(demo):
    import numpy as np
    import onnx
    import onnxruntime as ort

    path = demo["store"] / "models/yolov8n_lbzf_v0/yolov8n_lbzf_v0.onnx"
    onnx.checker.check_model(onnx.load(str(path)))
    meta = _metadata(demo["instance"], "onnx_model")
    assert meta["onnx_sha256"] == sha256_file(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"images": np.zeros((1, 3, 320, 320), np.float32)})
    assert out.shape[:2] == (1, 5)


def test_engine_reports_why_it_did_not_build(demo):
    from resources.engine import LocalTensorRTEngineBuilder

    available, how = LocalTensorRTEngineBuilder().availability()
    if available:
        pytest.skip(f"this host builds TensorRT engines ({how}): the local demo's engine is built, not refused")
    meta = _metadata(demo["instance"], "tensorrt_engine")
    assert meta["status"] == "unavailable" and "TensorRT" in meta["reason"]


def test_buffer_frames_and_hard_examples(demo):
    store = demo["store"]
    assert len(list((store / "frames/buffer").rglob("manifest.parquet"))) == 8
    sample = json.loads((store / "retraining/2026-07/sample.json").read_text())
    assert 0 < sample["taken"] <= 200 and sample["seed"] == 0
    assert (store / "retraining/2026-07/cvat_task_package.zip").exists()


SMOKE = {"epochs": 1, "imgsz": 64, "batch": 8, "workers": 0, "extra": {"close_mosaic": 0, "warmup_epochs": 0}}


def test_training_profiles_run_in_one_job_with_failures_isolated(demo):
    from orchestration.definitions import build_definitions

    overrides = {"plan_yolov8n_640": SMOKE, "yolov8s_800": SMOKE, "yolo11n_adamw": {**SMOKE, "optimizer": "Nope"}}
    run_config = {"ops": {f"profile_{name}": {"config": {"overrides": o}} for name, o in overrides.items()}}
    result = build_definitions("local").resolve_job_def("profiles_job").execute_in_process(
        instance=demo["instance"], run_config=run_config, raise_on_error=False)
    assert not result.success
    assert result.is_node_success("profile_plan_yolov8n_640") and result.is_node_success("profile_yolov8s_800")
    assert result.is_node_failed("profile_yolo11n_adamw")
    meta = _metadata(demo["instance"], "profile_yolov8s_800")
    assert meta["model"] == "yolov8s" and meta["recipe"]["imgsz"] == 64 and 0.0 <= meta["val_map50"] <= 1.0


def test_flip_ablation_reports_a_paired_difference(demo):
    import dagster as dg

    from assets.experiments import flip_ablation
    from orchestration.deployments import resources_for

    result = dg.materialize([flip_ablation], instance=demo["instance"], resources=resources_for("local"),
                            run_config={"ops": {"flip_ablation": {"config": {
                                "epochs": 1, "imgsz": 64, "n_boot": 200,
                                "extra": {"batch": 8, "workers": 0, "close_mosaic": 0, "warmup_epochs": 0}}}}})
    assert result.success
    report = json.loads((demo["store"] / "reports/experiments/flip_ablation.json").read_text())
    assert report["arms"]["flip_off"]["fliplr"] == 0.0 and report["arms"]["flip_on"]["fliplr"] == 0.5
    paired = report["paired_flip_on_minus_off"]
    assert paired["frames"] > 0 and paired["videos"] >= 2 and len(paired["recall_diff_ci"]) == 2


def test_monthly_cycle_promotes_then_rolls_back(demo):
    """The demo's Stage C month: labels came back, v0.1 was trained, compared, shadowed and
    promoted, and the operator's rollback put v0 back, with the history kept."""
    from pipeline import registry
    from resources.storage import LocalArtifactStore

    store = LocalArtifactStore(root=str(demo["store"]))
    actions = [(e["action"], e["version"]) for e in registry.history(store)]
    assert ("promote", "v0.1") in actions and actions[-1] == ("rollback", "v0")
    assert registry.current_model_version(store) == "v0"
    assert (demo["store"] / "models/yolov8n_lbzf_v0.1/yolov8n_lbzf_v0.1.pt").exists()
    meta = _metadata(demo["instance"], "production_model")
    assert meta["decision"] == "promoted" and meta["candidate"] == "v0.1"
    # the demo has no Jetson: its shadow runs are simulated, and every record of them says so
    history = registry.history(store)
    assert actions[:3] == [("bootstrap", "off-shelf"), ("promote", "v0"), ("promote", "v0.1")]
    for entry in history[1:3]:
        assert "SIMULATED shadow logs" in entry["why"], entry["why"]
    assert meta["WARNING"].startswith("SIMULATED shadow run")
    assert _metadata(demo["instance"], "v0_shadow_report")["source"] == "simulated"
    assert demo["summary"]["launch"] == {"outcome": "launched", "shadow_source": "simulated", "reasons": []}


@pytest.mark.seed_views
def test_video_preview_of_the_selected_model(demo):
    import av

    meta = _metadata(demo["instance"], "video_preview")
    (video,) = (demo["store"] / "previews").glob("*/yolov8n_lbzf_v0/preview.mp4")
    with av.open(str(video)) as container:
        assert sum(1 for _ in container.decode(video=0)) == meta["frames"] == 20  # 4 s at 5 fps
    assert "data:image/jpeg;base64," in meta["contact_sheet"] and (video.parent / "contact_sheet.jpg").exists()
