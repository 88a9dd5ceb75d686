"""Run the whole pipeline on the embedded demo, headless, through Dagster, on this machine.

Usage: python -m demo.run [--small] [--home .lbzf/demo]
Generates the demo raw store (once), then materializes every asset with the local deployment on a
persistent Dagster instance, so `dagster dev` with the same DAGSTER_HOME shows the same runs.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def demo_run_config(small: bool, window_s: float) -> dict:
    """Stage B is forced so the whole graph runs; a CPU-sized recipe (the plan's is the default)."""
    imgsz = 320
    return {"ops": {
        "stage_a_sample": {"config": {"window_s": window_s}},
        "stage_a_baseline": {"config": {"imgsz": imgsz, "n_boot": 1000}},
        "stage_b": {"config": {"force": True, "imgsz": imgsz, "epochs": 1 if small else 2, "batch": 16,
                               "extra": {"close_mosaic": 0}}},
        "evaluation": {"config": {"imgsz": imgsz, "n_boot": 500}},
    }}


def _execute(defs, job: str, instance, log: list, **kwargs):
    started = time.monotonic()
    result = defs.resolve_job_def(job).execute_in_process(instance=instance, raise_on_error=True, **kwargs)
    log.append((job, kwargs.get("partition_key", ""), round(time.monotonic() - started, 1)))
    return result


def run_demo(home: Path, small: bool = False) -> dict:
    home = home.resolve()
    store_root = home / "store"
    os.environ.setdefault("LBZF_STORAGE_ROOT", str(store_root))
    os.environ.setdefault("DAGSTER_HOME", str(home / "dagster_home"))
    os.environ.setdefault("LBZF_TRAIN_DIR", str(home / "train_runs"))
    dagster_home = Path(os.environ["DAGSTER_HOME"])
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO / "dagster.yaml", dagster_home / "dagster.yaml")

    import dagster as dg

    from orchestration.definitions import build_definitions
    from demo.generate import SMALL, DemoConfig, generate_demo
    from orchestration.sensors import buffer_footage_sensor

    config = SMALL if small else DemoConfig()
    if not (Path(os.environ["LBZF_STORAGE_ROOT"]) / "raw" / "videos" / "manifest.csv").exists():
        print("generating the demo raw store ...", flush=True)
        generate_demo(Path(os.environ["LBZF_STORAGE_ROOT"]), config)
    defs = build_definitions("local")
    instance = dg.DagsterInstance.get()
    log: list = []
    run_config = demo_run_config(small, config.stage_a_window_s)

    _execute(defs, "training_job", instance, log, asset_selection=[dg.AssetKey("video_manifest")])
    for video_id in sorted(instance.get_dynamic_partitions("videos")):
        _execute(defs, "frames_job", instance, log, partition_key=video_id)

    # The buffer sensor, evaluated as the daemon would: the first tick sees the clips, the second
    # finds them stable and asks for one run per clip.
    store = defs.resources["store"]
    cursor = None
    for _ in range(2):
        context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={
            "store": store, "buffer_sensor_settings": defs.resources["buffer_sensor_settings"]})
        result = buffer_footage_sensor(context)
        cursor = result.cursor
        for request in result.dynamic_partitions_requests:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        for run in result.run_requests:
            _execute(defs, "buffer_frames_job", instance, log, partition_key=run.partition_key)

    _execute(defs, "training_job", instance, log, run_config=run_config)
    # v0's launch: in shadow beside the off-the-shelf model, then its gate. No Jetson here, so the shadow
    # run is simulated (replayed on this machine), and every record of it says "simulated".
    _execute(defs, "launch_job", instance, log, run_config=launch_run_config())
    _execute(defs, "preview_job", instance, log, run_config={"ops": {"video_preview": {"config": {
        "length_s": 4.0 if small else 10.0, "fps": 5.0, "imgsz": run_config["ops"]["evaluation"]["config"]["imgsz"],
        "conf": 0.05}}}})
    run_monthly_cycle(defs, instance, store, log, month="2026-07")
    return _summary(store, log)


# Both demo models are barely trained on CPU, so their differences are noise: the demo loosens the
# promotion thresholds to show a launch, a promotion and a rollback; production keeps the defaults
# (pipeline.promotion.PromotionThresholds), and tests/test_retraining_cycle.py checks every refusal reason.
DEMO_GATE = {"max_recall_drop": 1.0, "max_conf_drop": 1.0, "refuse_significantly_worse": False, "min_agreement": 0.0,
             "max_detection_rate_diff": 1.0, "max_shadow_conf_drop": 1.0, "max_latency_ratio": 10.0}


def launch_run_config() -> dict:
    return {"ops": {"v0_shadow_report": {"config": {"simulate": True, "max_frames": 60}},
                    "v0_launch": {"config": DEMO_GATE}}}


def cycle_run_config() -> dict:
    """Stage C on CPU: a tiny recipe from the production weights and a simulated shadow run (the
    defaults are the plan's recipe and the logs the Jetson uploads)."""
    return {"ops": {
        "candidate_model": {"config": {"imgsz": 160, "epochs": 1, "batch": 16,
                                       "extra": {"close_mosaic": 0, "warmup_epochs": 0}}},
        # v0 was trained at 320 px, the demo's candidate at 160 px to save time: compare both at 160
        # (the default, 0, compares each model at the size it is deployed with)
        "candidate_comparison": {"config": {"n_boot": 300, "imgsz": 160}},
        "shadow_report": {"config": {"simulate": True}},
        "production_model": {"config": DEMO_GATE},
    }}


def annotate_hard_examples(store, month: str, annotator: str = "sophia", seed: int = 11, truth_store=None) -> str:
    """The simulated annotator: labels the month's CVAT task from the demo ground truth
    (`_demo_truth/`, in `truth_store`, default the store itself) and drops a COCO 1.0 export where CVAT
    exports land. Returns its key."""
    import numpy as np

    from assets.store_io import read_parquet
    from pipeline import keys
    from demo.annotators import LabelledImage, careful, coco_export_zip
    from demo.generate import TRUTH_PREFIX
    from resources.storage import LocalArtifactStore

    images = []
    for row in read_parquet(store, f"frames/hard/{month}/manifest.parquet").itertuples():
        camera, day, clip = row.frame_key.split("/")[3:6]
        truth = json.loads((truth_store or store).read_bytes(f"{TRUTH_PREFIX}buffer/{camera}/{day}/{clip}.json"))
        frame = truth["frames"][int(row.frame_index)]
        if abs(frame["t"] - float(row.actual_s)) > 1e-6:
            raise ValueError(f"{row.frame_key}: frame {row.frame_index} is at {frame['t']} s in the truth, "
                             f"{row.actual_s} s in the manifest")
        images.append(LabelledImage(keys.package_file_name(row.frame_key), int(row.width), int(row.height),
                                    [tuple(b) for b in frame["boxes"]]))
    key = f"{keys.INCOMING_ANNOTATIONS}hard_examples_{month}/{annotator}/export_1.zip"
    cvat = LocalArtifactStore(root=store.root, allow_source_writes=True)  # CVAT's side of the hand-off
    cvat.write_bytes(key, coco_export_zip(careful(images, np.random.default_rng(seed))))
    return key


def run_monthly_cycle(defs, instance, store, log: list, month: str) -> None:
    """Stage C for one month as production runs it: the scheduled run sends hard examples to CVAT and
    waits; the annotator's export lands; the export sensor imports it; the labels sensor resumes the
    month (candidate, comparison, shadow, promotion gate); then an operator rolls production back."""
    import dagster as dg

    from pipeline import registry
    from orchestration.sensors import annotation_exports_sensor
    from orchestration.sensors import hard_example_labels_sensor

    partition = f"{month}-01"
    _execute(defs, "monthly_retraining_job", instance, log, partition_key=partition, run_config=cycle_run_config())
    annotate_hard_examples(store, month)
    cursor = None
    for _ in range(2):  # first tick sees the export, the second finds it unchanged and imports it
        result = annotation_exports_sensor(dg.build_sensor_context(instance=instance, cursor=cursor,
                                                                   resources={"store": store}))
        cursor = result.cursor
        for _run in result.run_requests:
            _execute(defs, "annotations_job", instance, log)
    result = hard_example_labels_sensor(dg.build_sensor_context(instance=instance, resources={"store": store}))
    for run in result.run_requests:
        _execute(defs, "retraining_resume_job", instance, log, partition_key=run.partition_key,
                 run_config=cycle_run_config())
    pointer = registry.read_pointer(store)
    if pointer is not None and pointer["action"] == "promote":  # promoted: show the way back
        _execute(defs, "rollback_production_job", instance, log, run_config={"ops": {"production_pointer": {
            "config": {"action": "rollback", "reason": "demo: operator rolls the promotion back"}}}})


def _summary(store, log: list) -> dict:
    from pipeline import keys

    stage_a = json.loads(store.read_bytes(keys.STAGE_A_REPORT))
    selected = json.loads(store.read_bytes(keys.SELECTED_MODEL))
    summary = {"store": store.uri(keys.SELECTED_MODEL).rsplit("/models/", 1)[0], "stage_a": {**stage_a["summary"], "gate": stage_a["gate"]["outcome"],
                                                   "recall_ci": stage_a["ci"]["recall_ci"],
                                                   "warning": stage_a.get("warning", "")},
               "selected_model": selected, "runs": log}
    eval_key = keys.version_keys("v0").report("eval")
    if store.exists(eval_key):
        evaluation = json.loads(store.read_bytes(eval_key))
        summary["stage_b"] = {split: {k: entry[k] for k in ("n_frames", "precision", "recall", "map50", "map50_95")}
                              for split, entry in evaluation["splits"].items()}
        from pipeline.weights import UNTRAINED_BASE_WARNING

        untrained_base = stage_a["weights"]["untrained"] or any(
            entry.get("baseline", {}).get("untrained") for entry in evaluation["splits"].values())
        summary["stage_b_warning"] = UNTRAINED_BASE_WARNING if untrained_base else ""
    launch_key = keys.version_keys("v0").report("launch")
    if store.exists(launch_key):
        launch = json.loads(store.read_bytes(launch_key))
        summary["launch"] = {"outcome": launch["outcome"], "shadow_source": launch["shadow_source"],
                             "reasons": launch["decision"]["reasons"]}
    summary["stage_c"] = _stage_c_summary(store)
    summary["artifacts"] = sorted(i.key for i in store.list_keys("models/")) + \
        sorted(i.key for i in store.list_keys("datasets/") if i.key.endswith((".yaml", ".csv")))
    return summary


def _stage_c_summary(store) -> dict:
    from pipeline import keys, registry

    decisions = sorted(i.key for i in store.list_keys("models/") if "/promotion_" in i.key)
    last = json.loads(store.read_bytes(decisions[-1])) if decisions else {}
    shadow = {}
    if last.get("candidate"):
        shadow_key = keys.version_keys(last["candidate"]).report("shadow_report")
        shadow = json.loads(store.read_bytes(shadow_key)) if store.exists(shadow_key) else {}
    return {"candidate": last.get("candidate"), "decision": last.get("outcome"),
            "shadow_source": shadow.get("source", "none"),
            "reasons": last.get("decision", {}).get("reasons", []),
            "production": registry.current_model_version(store),
            "history": [(e.get("action"), e.get("version")) for e in registry.history(store)]}


def _shadow_words(source: str) -> str:
    return "SIMULATED on this machine, not the device" if source == "simulated" else source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", type=Path, default=REPO / ".lbzf" / "demo")
    parser.add_argument("--small", action="store_true", help="the smaller demo the tests use")
    args = parser.parse_args()
    started = time.monotonic()
    summary = run_demo(args.home, args.small)
    print("\n=== LBZF demo finished in", round(time.monotonic() - started), "s ===")
    print("Artifacts in", summary["store"])
    for key in summary["artifacts"]:
        print("  ", key)
    a = summary["stage_a"]
    print(f"Stage A: recall {a['recall']:.3f} CI {a['recall_ci']}, median best conf {a['median_best_conf']:.3f}, "
          f"FP {a['false_positives']}, gate: {a['gate']}")
    if a["warning"]:
        print("  WARNING:", a["warning"])
    for split, figures in summary.get("stage_b", {}).items():
        print(f"Stage B {split}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                              for k, v in figures.items()))
    if summary.get("stage_b_warning"):
        print("  WARNING:", summary["stage_b_warning"])
    print("Selected model:", summary["selected_model"]["model"], "-", summary["selected_model"]["why"])
    if "launch" in summary:
        launch = summary["launch"]
        print(f"v0 launch: {launch['outcome']} (shadow logs: {_shadow_words(launch['shadow_source'])})")
        for reason in launch["reasons"]:
            print("  -", reason)
    c = summary["stage_c"]
    print(f"Stage C 2026-07: candidate {c['candidate']} {c['decision']} (shadow logs: "
          f"{_shadow_words(c['shadow_source'])}); production now {c['production']}; history {c['history']}")
    for reason in c["reasons"]:
        print("  -", reason)
    print(f"Open it in the UI:  DAGSTER_HOME={os.environ['DAGSTER_HOME']} LBZF_STORAGE_ROOT={os.environ['LBZF_STORAGE_ROOT']}"
          " .venv/bin/dagster dev")


if __name__ == "__main__":
    main()
