"""v0's launch: the fine-tuned model runs in shadow beside the off-the-shelf model on the line, and
reaches production only through the same promotion gate as every monthly candidate.

    evaluation (v0 vs off-the-shelf on the frozen test and deployment test sets)
      -> v0_shadow_report (device logs under shadow/v0/logs/; the duration comes from them)
      -> v0_launch (the promotion gate; registry/production.json and the Jetson's production slot)
"""

import json
import tempfile
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pandas as pd

from assets.candidate_engine import deploy_production_engine
from assets.common import config_from, md_table, to_settings
from assets.shadow_replay import ShadowRunConfig, replay_shadow_run, thin
from assets.store_io import load_frame_manifests, read_selected, write_json
from pipeline import keys, registry
from pipeline.hashing import sha256_bytes
from pipeline.promotion import PromotionThresholds, decide_promotion
from pipeline.shadow import check_simulation_allowed, load_logs, shadow_report, shadow_words, simulated_warning
from pipeline.weights import fetch_weights
from resources.engine import EngineBuilder
from resources.shadow_policy import ShadowPolicy
from resources.storage import ArtifactStore

SELECTED_KEY = registry.SELECTED_MODEL_KEY


def _report_key(version: str, kind: str) -> str:
    return keys.version_keys(version).report(kind)


def _nothing_to_launch(selected: dict) -> dg.MaterializeResult | None:
    if selected.get("version") == registry.OFF_SHELF:
        return dg.MaterializeResult(metadata={
            "status": "nothing to launch: the Stage A gate kept the off-the-shelf model (no Stage B model)"})
    return None


def _buffer_frames(store: ArtifactStore) -> pd.DataFrame:
    """Post-install camera frames (the rolling buffer), in capture order."""
    frames = load_frame_manifests(store, keys.BUFFER_FRAMES_PREFIX)
    if frames.empty:
        raise registry.RegistryError(keys.BUFFER_FRAMES_PREFIX, "frame_key", 0, "materialize buffer_frames for some "
                                     "buffer clips first (buffer_footage_sensor does it as clips arrive)",
                                     problem="no camera frames to simulate a shadow run on")
    parts = frames["frame_key"].str.split("/")
    frames = frames.assign(camera=parts.str[2], captured_at=pd.to_datetime(
        parts.str[3] + " " + parts.str[4].str[:6], format="%Y-%m-%d %H%M%S", utc=True) +
        pd.to_timedelta(frames["actual_s"], unit="s")).sort_values(["captured_at", "frame_key"])
    return frames.reset_index(drop=True)


@dg.asset(deps=["evaluation"], group_name="launch", kinds={"json"})
def v0_shadow_report(context: dg.AssetExecutionContext, config: ShadowRunConfig, store: ArtifactStore,
                     shadow_policy: ShadowPolicy) -> dg.MaterializeResult:
    """v0 beside the off-the-shelf model on the line's cameras: per-camera agreement, detection-rate and
    confidence differences, latency, and the period the device logs cover (the plan: 24 h). Reads the
    logs the Jetson uploads under shadow/v0/logs/ (pipeline/shadow_device.py writes them); with
    simulate: true (local only) replays buffer frames through both models first, and says so."""
    selected = read_selected(store)
    if (skip := _nothing_to_launch(selected)) is not None:
        return skip
    check_simulation_allowed(config.simulate, shadow_policy.allow_simulated, "v0_shadow_report")
    version, production = selected["version"], registry.production(store)
    prefix = keys.shadow_logs_prefix(version)
    listing = lambda p: (i.key for i in store.list_keys(p))  # noqa: E731
    _logs, files, source = load_logs(listing, store.read_bytes, prefix)
    simulated = {}
    if config.simulate and source == "device":
        context.log.warning(f"{len(files)} device log file(s) under {prefix}: not simulating")
    elif config.simulate:
        def models(folder: Path) -> dict[str, tuple[str, int]]:
            v0 = fetch_weights(store, selected["key"], folder / Path(selected["key"]).name,
                               expected_sha256=selected["sha256"], recorded_by=SELECTED_KEY)
            base = registry.fetch_entry_weights(store, production, folder / "base")
            return {version: (str(v0), int(selected["imgsz"])),
                    str(production["version"]): (str(base), int(production.get("imgsz") or 640))}

        with tempfile.TemporaryDirectory(prefix="lbzf-v0-shadow-") as tmp:
            simulated = replay_shadow_run(store, prefix, thin(_buffer_frames(store), config.max_frames), Path(tmp),
                                          models, period_h=config.simulated_period_h, conf=config.conf)
    logs, files, source = load_logs(listing, store.read_bytes, prefix)
    report = shadow_report(logs, candidate=version, production=str(production["version"]), conf=config.conf,
                           iou_threshold=config.iou_threshold)
    report.update({"logs_prefix": prefix, "log_files": files, "source": source, **simulated})
    key = _report_key(version, "shadow_report")
    digest = write_json(store, key, report)
    if not files:
        context.log.warning(f"no shadow logs for {version} under {prefix} yet: deploy its engine in shadow mode "
                            "(engine_deployment, mode: shadow) and let the device upload them")
    per_camera = pd.DataFrame(report["per_camera"])
    return dg.MaterializeResult(metadata={
        "candidate": version, "production": str(production["version"]), "source": source,
        "log_files": len(files), "paired_frames": int(report.get("paired_frames", 0)),
        "period_h": float(report.get("period_h") or 0.0),
        "period": f"{report.get('period_start')} to {report.get('period_end')}",
        "per_camera": md_table(per_camera.round(3) if len(per_camera) else per_camera),
        "overall": dg.MetadataValue.json(report.get("overall") or {}), "uri": store.uri(key), "sha256": digest,
        "explanation": "agreement: the share of people both models find at the same place on the same camera "
                       "frame; a low value on one camera means v0 sees that workstation differently",
        **simulated_warning(source)})


def launch_comparison(evaluation: dict) -> dict:
    """The promotion gate's comparison for v0: evaluation's paired difference (v0 - off-the-shelf, by
    video) on the frozen test split and the deployment test set."""
    subsets = {}
    for name in ("test", "deployment_test"):
        paired = (evaluation.get("splits", {}).get(name) or {}).get("paired_vs_baseline")
        if paired:
            subsets[name] = {k: v for k, v in paired["overall"].items() if k != "subset"}
    return {"candidate_version": "v0", "production_version": registry.OFF_SHELF, "subsets": subsets,
            "source": "evaluation (eval_v0.json, paired_vs_baseline)"}


class LaunchConfig(config_from(PromotionThresholds, exclude=("gated_subsets", "allow_simulated_shadow",
                                                         "allow_rolled_back"))):
    """v0's launch thresholds from the launchpad: the monthly promotion gate's, by default."""

    def thresholds(self) -> PromotionThresholds:
        return to_settings(PromotionThresholds, self)


@dg.asset(deps=[v0_shadow_report], group_name="launch", kinds={"json"}, pool="registry")
def v0_launch(context: dg.AssetExecutionContext, config: LaunchConfig, store: ArtifactStore,
              engine_builder: EngineBuilder, shadow_policy: ShadowPolicy) -> dg.MaterializeResult:
    """The launch gate: v0 becomes production (registry/production.json and the Jetson's production
    slot) only when it is not worse than the off-the-shelf model on the frozen test and deployment test
    sets and its shadow run passed and lasted long enough. Otherwise the off-the-shelf model stays and
    every reason is listed."""
    selected = read_selected(store)
    if (skip := _nothing_to_launch(selected)) is not None:
        return skip
    version, name = selected["version"], selected["model"]
    eval_key = _report_key(version, "eval")
    comparison = launch_comparison(json.loads(store.read_bytes(eval_key))) if store.exists(eval_key) else None
    shadow_key = _report_key(version, "shadow_report")
    shadow = json.loads(store.read_bytes(shadow_key)) if store.exists(shadow_key) else None
    thresholds = replace(config.thresholds(), allow_simulated_shadow=shadow_policy.allow_simulated)
    before = registry.production(store)
    decision = decide_promotion(comparison, shadow, thresholds, candidate=version, production=str(before["version"]),
                      rolled_back_entry=registry.rolled_back(store, version))
    engine_key = keys.version_keys(version).engine
    entry = {"version": version, "model": name, "weights_key": selected["key"], "weights_sha256": selected["sha256"],
             "engine_key": engine_key if store.exists(engine_key) else None,
             "engine_sha256": sha256_bytes(store.read_bytes(engine_key)) if store.exists(engine_key) else None,
             "imgsz": selected.get("imgsz"), "model_created_at": None}
    deployment, changed = {}, False
    if before.get("version") == version:
        outcome, why = "already production", f"{version} is already production (since {before.get('at')})"
    elif decision.promote:
        why = (f"launch of {version}: all {len(decision.checks)} checks passed against {before['version']} "
               f"(frozen test and deployment test; {shadow_words(shadow)})")
        deployment = deploy_production_engine(context, store, engine_builder, entry)
        _pointer, changed = registry.promote(store, entry, why=why, run_id=context.run.root_run_id or context.run_id)
        outcome = "launched" if changed else "already production"
    else:
        outcome, why = "refused", "; ".join(decision.reasons)
        context.log.warning(f"{version} not launched: {why}")
    after = registry.production(store)
    record = {"candidate": version, "outcome": outcome, "why": why, "decision": decision.to_dict(),
              "comparison": comparison, "thresholds": thresholds.to_dict(), "production_before": before["version"],
              "production_after": after["version"], "run_id": context.run_id, "deployment": deployment,
              "shadow_source": (shadow or {}).get("source", "none"),
              "decided_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    key = _report_key(version, "launch")
    digest = write_json(store, key, record)
    rows = [{"check": c["kind"], "subject": c["subject"], "value": str(c["value"]), "threshold": str(c["threshold"]),
             "passed": "yes" if c["passed"] else "NO"} for c in decision.checks]
    return dg.MaterializeResult(metadata={
        "decision": outcome, "candidate": version, "production_before": str(before["version"]),
        "production_after": str(after["version"]), "changed": changed,
        "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons) or "- none: every check passed"),
        "checks": md_table(pd.DataFrame(rows), max_rows=80), "uri": store.uri(key), "sha256": digest,
        "current_model_version": registry.current_model_version(store),
        **({"device_deployment": dg.MetadataValue.json(deployment)} if deployment else {}),
        **simulated_warning((shadow or {}).get("source", "none"))})
