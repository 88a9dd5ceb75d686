"""Run the whole pipeline on the embedded demo, headless, through Dagster, on this machine.

Usage: python -m pipeline.demo.run [--small] [--home .lbzf/demo]
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

REPO = Path(__file__).resolve().parents[2]


def demo_run_config(small: bool, window_s: float) -> dict:
    """Stage B is forced so the whole graph runs; a CPU-sized recipe (the plan's is the default)."""
    imgsz = 320
    return {"ops": {
        "stage_a_sample": {"config": {"window_s": window_s}},
        "stage_a_baseline": {"config": {"imgsz": imgsz, "n_boot": 1000}},
        "stage_b": {"config": {"force": True, "imgsz": imgsz, "epochs": 2 if small else 3, "batch": 16,
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

    from pipeline.definitions import build_definitions
    from pipeline.demo.generate import SMALL, DemoConfig, generate_demo
    from pipeline.sensors import buffer_footage_sensor

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
        context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"store": store})
        result = buffer_footage_sensor(context)
        cursor = result.cursor
        for request in result.dynamic_partitions_requests:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        for run in result.run_requests:
            _execute(defs, "buffer_frames_job", instance, log, partition_key=run.partition_key)

    _execute(defs, "training_job", instance, log, run_config=run_config)
    _execute(defs, "monthly_retraining_job", instance, log, partition_key="2026-07-01")
    return _summary(store, log)


def _summary(store, log: list) -> dict:
    stage_a = json.loads(store.read_bytes("reports/stage_a/stage_a_report.json"))
    selected = json.loads(store.read_bytes("models/selected_model.json"))
    summary = {"store": store.uri("models/selected_model.json").rsplit("/models/", 1)[0], "stage_a": {**stage_a["summary"], "gate": stage_a["gate"]["outcome"],
                                                   "recall_ci": stage_a["ci"]["recall_ci"],
                                                   "warning": stage_a.get("warning", "")},
               "selected_model": selected, "runs": log}
    eval_key = "models/yolov8n_lbzf_v0/eval_v0.json"
    if store.exists(eval_key):
        evaluation = json.loads(store.read_bytes(eval_key))
        summary["stage_b"] = {split: {k: entry[k] for k in ("n_frames", "precision", "recall", "map50", "map50_95")}
                              for split, entry in evaluation["splits"].items()}
    summary["artifacts"] = sorted(i.key for i in store.list_keys("models/")) + \
        sorted(i.key for i in store.list_keys("datasets/") if i.key.endswith((".yaml", ".csv")))
    return summary


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
    print("Selected model:", summary["selected_model"]["model"], "-", summary["selected_model"]["why"])
    print(f"Open it in the UI:  DAGSTER_HOME={os.environ['DAGSTER_HOME']} LBZF_STORAGE_ROOT={os.environ['LBZF_STORAGE_ROOT']}"
          " .venv/bin/dagster dev")


if __name__ == "__main__":
    main()
