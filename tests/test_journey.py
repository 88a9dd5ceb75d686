"""The training plan's journey, in the plan's order, through Dagster as the UI and the daemon drive it,
with the clock as an input:

wave 1 labels -> Stage A -> gate -> wave 2 labels -> split -> Stage B -> v0 -> v0 in shadow beside the
off-the-shelf model (logs written by the device-side runner, ONNX Runtime on CPU) -> launch gate ->
production -> two monthly cycles (one promoted, one refused with its reason) -> rollback.

Nothing is written into the store by hand between steps except what the world outside the pipeline
supplies: the operator's uploads (videos, photos), CVAT's label exports, the cameras' clips and the
Jetson's shadow logs. Everything else is a run launched the way the UI launches it, a sensor tick
evaluated the way the daemon evaluates it, or a schedule tick at a given time.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

pytestmark = [pytest.mark.journey, pytest.mark.slow]

BOGOTA = ZoneInfo("America/Bogota")
JULY = ("2026-07-01", "2026-07-02")
AUGUST = ("2026-08-03", "2026-08-04")


# --------------------------------------------------------------------------- the world outside the pipeline


class Plant:
    """The factory, CVAT and the Jetson: what they hand to the pipeline, copied from a generated world."""

    def __init__(self, world: Path, store_root: Path):
        from resources.storage import LocalArtifactStore

        self.world = world
        self.truth = LocalArtifactStore(root=str(world))
        self.uploads = LocalArtifactStore(root=str(store_root), allow_source_writes=True)  # the outside's rights

    def _copy(self, prefix: str) -> list[str]:
        copied = []
        start = self.world / prefix
        for path in [start] if start.is_file() else sorted(start.rglob("*")):
            if path.is_file():
                key = path.relative_to(self.world).as_posix()
                self.uploads.write_bytes(key, path.read_bytes())
                copied.append(key)
        assert copied, f"nothing under {prefix} in the generated world"
        return copied

    def operator_uploads_footage(self) -> None:
        self._copy("raw/")

    def cvat_exports(self, task: str) -> list[str]:
        return self._copy(f"annotations/incoming/{task}/")

    def cameras_record(self, day: str) -> None:
        for camera in sorted(p.name for p in (self.world / "buffer").iterdir() if p.name != "quality"):
            self._copy(f"buffer/{camera}/{day}/")
        self._copy(f"buffer/quality/{day}.parquet")

    def clips(self, days: tuple[str, ...]) -> list[Path]:
        return sorted(p for day in days for p in (self.world / "buffer").glob(f"*/{day}/*.mp4"))

    def jetson_uploads_shadow_logs(self, log_dir: Path, version: str) -> list[str]:
        keys = []
        for path in sorted(log_dir.glob("*.jsonl")):
            key = f"shadow/{version}/logs/{path.name}"
            self.uploads.write_bytes(key, path.read_bytes())
            keys.append(key)
        return keys


# --------------------------------------------------------------------------- Dagster, as the UI and the daemon


class Daemon:
    """Launches runs as the UI does (a job, a selection, launchpad config) and evaluates sensors and
    schedules as the daemon does, launching what they request."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance):
        self.defs, self.instance = defs, instance
        self.cursors: dict[str, str | None] = {}
        self.runs: list[tuple[str, str]] = []

    def launch(self, job: str, *, selection: list[str] | None = None, run_config: dict | None = None,
               partition_key: str | None = None, tags: dict | None = None) -> dg.ExecuteInProcessResult:
        kwargs = {"asset_selection": [dg.AssetKey(a) for a in selection]} if selection else {}
        result = self.defs.resolve_job_def(job).execute_in_process(
            instance=self.instance, run_config=run_config or {}, partition_key=partition_key, tags=tags,
            raise_on_error=True, **kwargs)
        self.runs.append((job, partition_key or ""))
        return result

    def tick(self, sensor: str, run_config: dict | None = None) -> list[dg.ExecuteInProcessResult]:
        definition = self.defs.resolve_sensor_def(sensor)
        context = dg.build_sensor_context(instance=self.instance, cursor=self.cursors.get(sensor),
                                          resources=self.defs.resources, definitions=self.defs)
        result = definition(context)
        if isinstance(result, dg.SkipReason) or result is None:
            return []
        self.cursors[sensor] = result.cursor if result.cursor is not None else self.cursors.get(sensor)
        for request in result.dynamic_partitions_requests or []:
            self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        return [self.launch(definition.job_name, partition_key=run.partition_key, tags=run.tags,
                            run_config=run_config) for run in (result.run_requests or [])]

    def schedule(self, name: str, at: datetime, run_config: dict) -> list[dg.ExecuteInProcessResult]:
        definition = self.defs.resolve_schedule_def(name)
        data = definition.evaluate_tick(dg.build_schedule_context(instance=self.instance, scheduled_execution_time=at))
        return [self.launch(definition.job_name, partition_key=run.partition_key, run_config=run_config)
                for run in data.run_requests or []]


def _meta(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _json(root: Path, key: str) -> dict:
    return json.loads((root / key).read_text())


# --------------------------------------------------------------------------- the Jetson's shadow mode


def run_on_device(plant: Plant, *, candidate: tuple[str, Path], production: tuple[str, Path],
                  days: tuple[str, ...], out: Path, imgsz: int) -> list[str]:
    """`python -m pipeline.shadow_device` on the Jetson, once per recorded clip of the line's cameras
    (ONNX Runtime on CPU here), both models on every frame; then the Jetson uploads its logs."""
    from pipeline.shadow_device import main as shadow_device

    for clip in plant.clips(days):
        camera, day, name = clip.parts[-3], clip.parts[-2], clip.stem
        start = f"{day}T{name[:2]}:{name[2:4]}:{name[4:6]}Z"  # buffer clips are named by their start time
        shadow_device(["--production", str(production[1]), "--production-version", production[0],
                       "--candidate", str(candidate[1]), "--candidate-version", candidate[0],
                       "--video", str(clip), "--start", start, "--every-s", "10", "--camera", camera,
                       "--out", str(out), "--imgsz", str(imgsz), "--device", "cpu"])
    return plant.jetson_uploads_shadow_logs(out, candidate[0])


def _onnx(store_root: Path, key: str, folder: Path, *, weights_key: str | None = None, imgsz: int = 320) -> Path:
    """An ONNX the deploy step pushes to the Jetson: from the store, or exported from stored weights."""
    folder.mkdir(parents=True, exist_ok=True)
    if weights_key is None:
        target = folder / Path(key).name
        shutil.copyfile(store_root / key, target)
        return target
    from pipeline.export import export_onnx

    return export_onnx(store_root / weights_key, folder / (Path(weights_key).stem + ".onnx"), imgsz=imgsz)


# --------------------------------------------------------------------------- the journey


@pytest.fixture(scope="module")
def journey(tmp_path_factory: pytest.TempPathFactory, monkeypatch_module) -> dict:
    from demo.generate import SMALL, generate_demo
    from demo.run import DEMO_GATE, annotate_hard_examples, cycle_run_config, demo_run_config

    base = tmp_path_factory.mktemp("journey")
    world, store_root = base / "world", base / "store"
    config = dataclasses.replace(SMALL, buffer_days=JULY + AUGUST)
    generate_demo(world, config)
    monkeypatch_module.setenv("LBZF_STORAGE_ROOT", str(store_root))
    monkeypatch_module.setenv("LBZF_TRAIN_DIR", str(base / "train_runs"))
    monkeypatch_module.setenv("DAGSTER_DEPLOYMENT", "local")
    from orchestration.definitions import build_definitions

    defs = build_definitions("local")
    instance = dg.DagsterInstance.ephemeral()
    daemon, plant, seen = Daemon(defs, instance), Plant(world, store_root), {}
    train_config = demo_run_config(True, config.stage_a_window_s)
    cycle = cycle_run_config()
    cycle["ops"]["shadow_report"] = {"config": {"simulate": False}}  # the device's logs, never simulated here

    # May: the operator uploads the operation videos and plant photos; frames are extracted per video.
    plant.operator_uploads_footage()
    daemon.launch("training_job", selection=["video_manifest", "plant_photo_frames"])
    for video in sorted(instance.get_dynamic_partitions("videos")):
        daemon.launch("frames_job", partition_key=video)
    daemon.launch("stage_a_job", selection=["stage_a_sample"], run_config={"ops": {
        "stage_a_sample": train_config["ops"]["stage_a_sample"]}})

    # Wave 1: the Stage A task comes back from CVAT (two annotators on an overlap); the export sensor imports it.
    plant.cvat_exports("stage_a")
    plant.cvat_exports("stage_a_overlap")
    assert daemon.tick("annotation_exports_sensor") == []  # first sight: the upload may still be going on
    [imported] = daemon.tick("annotation_exports_sensor")
    seen["wave1_checks"] = {c.check_name: c.passed for c in imported.get_asset_check_evaluations()}
    seen["split_before_stage_a"] = (store_root / "datasets/lbzf_person_v0/dataset_split_v0.csv").exists()
    stage_a = daemon.launch("stage_a_job", selection=["stage_a_baseline"], run_config={"ops": {
        "stage_a_baseline": train_config["ops"]["stage_a_baseline"]}})
    seen["stage_a"] = _meta(stage_a, "stage_a_baseline")
    # the operator looks at a first split of what is labelled so far (nothing has been trained from it)
    seen["split_wave1"] = _meta(daemon.launch("training_job", selection=["dataset_split"]), "dataset_split")

    # Wave 2: the gate asked for fine-tuning, so the Stage B frames are labelled and imported.
    plant.cvat_exports("ops_frames")
    daemon.tick("annotation_exports_sensor")
    daemon.tick("annotation_exports_sensor")
    trained = daemon.launch("training_job", run_config=train_config)
    seen["split_wave2"] = _meta(trained, "dataset_split")
    seen["stage_b"] = _meta(trained, "stage_b_model")
    seen["split_record"] = _json(store_root, "datasets/lbzf_person_v0/split_record.json")
    seen["split_lock"] = _json(store_root, "datasets/lbzf_person_v0/split_lock.json")
    seen["production_before_launch"] = _current(store_root)

    # July: the cameras record; the buffer sensor registers each clip and extracts its frames.
    for day in JULY:
        plant.cameras_record(day)
    for _ in range(2):
        daemon.tick("buffer_footage_sensor")

    # v0 in shadow beside the off-the-shelf model for the plan's 24 h, on the Jetson; then its launch gate.
    onnx_dir = base / "jetson"
    v0 = _onnx(store_root, "models/yolov8n_lbzf_v0/yolov8n_lbzf_v0.onnx", onnx_dir)
    stage_a_weights = _json(store_root, "reports/stage_a/stage_a_report.json")["weights"]
    offshelf = _onnx(store_root, "", onnx_dir / "offshelf", weights_key=stage_a_weights["key"], imgsz=320)
    seen["v0_logs"] = run_on_device(plant, candidate=("v0", v0), production=("off-shelf", offshelf), days=JULY,
                                    out=base / "device_v0", imgsz=320)
    launched = daemon.launch("launch_job", run_config={"ops": {"v0_launch": {"config": DEMO_GATE}}})
    seen["v0_shadow"] = _meta(launched, "v0_shadow_report")
    seen["v0_launch"] = _meta(launched, "v0_launch")
    seen["production_after_launch"] = _current(store_root)

    # August 1st, 06:00 in Bogota: the monthly schedule starts July's cycle; hard examples go to CVAT.
    for day in AUGUST:
        plant.cameras_record(day)
    for _ in range(2):
        daemon.tick("buffer_footage_sensor")
    [july] = daemon.schedule("monthly_retraining_job_schedule", datetime(2026, 8, 1, 6, 0, tzinfo=BOGOTA), cycle)
    seen["july_partition"] = july.dagster_run.tags.get("dagster/partition")
    seen["july_waiting"] = [e.asset_observation_data.asset_observation.metadata["status"].value
                            for e in july.get_asset_observation_events()]
    annotate_hard_examples(plant.uploads, "2026-07", truth_store=plant.truth)
    daemon.tick("annotation_exports_sensor")
    daemon.tick("annotation_exports_sensor")
    [resumed] = daemon.tick("hard_example_labels_sensor", run_config=cycle)
    seen["v0.1_first_decision"] = _meta(resumed, "production_model")
    # v0.1 runs in shadow on the Jetson (its ONNX from candidate_model) beside v0; the operator re-runs the gate
    v01 = _onnx(store_root, "models/yolov8n_lbzf_v0.1/yolov8n_lbzf_v0.1.onnx", onnx_dir)
    run_on_device(plant, candidate=("v0.1", v01), production=("v0", v0), days=AUGUST, out=base / "device_v0.1",
                  imgsz=160)
    gate = daemon.launch("retraining_resume_job", selection=["shadow_report", "production_model"],
                         partition_key="2026-07-01", run_config=cycle)
    seen["v0.1_shadow"] = _meta(gate, "shadow_report")
    seen["v0.1_decision"] = _meta(gate, "production_model")
    seen["production_after_july"] = _current(store_root)

    # September 1st: August's cycle; v0.2's shadow run on the device lasts only one shift, and is refused.
    [august] = daemon.schedule("monthly_retraining_job_schedule", datetime(2026, 9, 1, 6, 0, tzinfo=BOGOTA), cycle)
    seen["august_partition"] = august.dagster_run.tags.get("dagster/partition")
    annotate_hard_examples(plant.uploads, "2026-08", truth_store=plant.truth)
    daemon.tick("annotation_exports_sensor")
    daemon.tick("annotation_exports_sensor")
    daemon.tick("hard_example_labels_sensor", run_config=cycle)
    v02 = _onnx(store_root, "models/yolov8n_lbzf_v0.2/yolov8n_lbzf_v0.2.onnx", onnx_dir)
    run_on_device(plant, candidate=("v0.2", v02), production=("v0.1", v01), days=AUGUST[1:],
                  out=base / "device_v0.2", imgsz=160)
    gate = daemon.launch("retraining_resume_job", selection=["shadow_report", "production_model"],
                         partition_key="2026-08-01", run_config=cycle)
    seen["v0.2_decision"] = _meta(gate, "production_model")
    seen["production_after_august"] = _current(store_root)

    # The operator rolls production back (one job).
    daemon.launch("rollback_production_job", run_config={"ops": {"production_pointer": {"config": {
        "action": "rollback", "reason": "journey: false alarms on cam2 after the swap"}}}})
    seen["pointer"] = _json(store_root, "registry/production.json")
    return {"seen": seen, "store": store_root, "daemon": daemon}


def _current(store_root: Path) -> str:
    from pipeline import registry
    from resources.storage import LocalArtifactStore

    return registry.current_model_version(LocalArtifactStore(root=str(store_root)))


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


# --------------------------------------------------------------------------- what the operator sees


def test_wave_one_labels_are_enough_for_stage_a_and_its_gate(journey):
    seen = journey["seen"]
    assert seen["wave1_checks"] == {"annotator_agreement": True}
    assert seen["split_before_stage_a"] is False  # Stage A needed no split
    stage_a = seen["stage_a"]
    assert stage_a["gate_outcome"] == "fine_tune" and stage_a["fine_tune"] is True
    assert stage_a["WARNING"] == "baseline is untrained: not a Stage A measurement"
    assert stage_a["n_frames"] > 0 and "lies below 0.95" in stage_a["gate_reasons"]


def test_the_split_is_remade_openly_with_wave_two_then_frozen_by_training(journey):
    seen = journey["seen"]
    assert seen["split_wave1"]["revision"] == 1 and seen["split_wave1"]["revision_why"] == "first split"
    assert seen["split_wave2"]["revision"] == 2
    assert seen["split_wave2"]["revision_why"].startswith("re-made before any training: ")
    assert "newly labelled frame(s) added" in seen["split_wave2"]["revision_why"]
    record = seen["split_record"]
    assert [r["revision"] for r in record["revisions"]] == [1, 2]
    assert record["revisions"][1]["change"]["moved"] == 0  # Stage A's frames kept their video's split
    assert seen["split_lock"]["model"] == "yolov8n_lbzf_v0"
    assert seen["split_lock"]["split_sha256"] == record["current_sha256"] == seen["split_wave2"]["split_sha256"]
    assert seen["stage_b"]["train_run_files"] > 0 and "map50" in seen["stage_b"]["fitness"]


def test_v0_reaches_production_only_through_its_own_shadow_test_and_gate(journey):
    seen = journey["seen"]
    assert seen["production_before_launch"] == "off-shelf"  # Stage B selecting v0 did not put it on the line
    shadow = seen["v0_shadow"]
    assert shadow["source"] == "device" and shadow["candidate"] == "v0" and shadow["production"] == "off-shelf"
    assert shadow["period_h"] >= 24.0 and shadow["paired_frames"] >= 10  # the duration comes from the logs
    assert "WARNING" not in shadow
    launch = seen["v0_launch"]
    assert launch["decision"] == "launched" and launch["production_before"] == "off-shelf"
    assert seen["production_after_launch"] == "v0"


def test_two_months_pass_one_candidate_promoted_one_refused_with_its_reason(journey):
    seen = journey["seen"]
    assert seen["july_partition"] == "2026-07-01" and seen["august_partition"] == "2026-08-01"
    assert seen["july_waiting"] == ["waiting"]  # the month waits visibly for its labels
    first = seen["v0.1_first_decision"]  # before the device's logs arrived
    assert first["decision"] == "refused" and "missing shadow logs" in first["reasons"]
    assert seen["v0.1_shadow"]["source"] == "device" and seen["v0.1_shadow"]["period_h"] >= 24.0
    assert seen["v0.1_decision"]["decision"] == "promoted" and seen["production_after_july"] == "v0.1"
    refused = seen["v0.2_decision"]
    assert refused["decision"] == "refused" and seen["production_after_august"] == "v0.1"
    assert "shadow too short: the shadow logs span" in refused["reasons"] and "at least 24 h required" in refused[
        "reasons"]


def test_rollback_returns_to_the_version_before_with_the_whole_history(journey):
    pointer = journey["seen"]["pointer"]
    assert pointer["version"] == "v0" and pointer["rolled_back_from"] == "v0.1"
    assert [(e["action"], e["version"]) for e in pointer["history"]] == [
        ("bootstrap", "off-shelf"), ("promote", "v0"), ("promote", "v0.1"), ("rollback", "v0")]
    assert "simulated" not in json.dumps(pointer).lower()  # every shadow run of the journey came from the device
