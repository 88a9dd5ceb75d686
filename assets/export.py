"""Export: ONNX with proven parity, the TensorRT engine built and validated where it will run,
INT8 calibration from training frames only, and the engine's deployment to the Jetson."""

import json
import tempfile
import time
from pathlib import Path

import dagster as dg

from assets.engine_checks import checked_onnx, validate_engine
from assets.labels import dataset_classes
from assets.store_io import read_parquet, read_selected, read_split
from pipeline import keys, registry
from pipeline.calibration import (DEFAULT_FRAMES, CalibrationError, CalibrationSet, require_int8_calibration,
                                  select_calibration_frames, write_calibration_package)
from pipeline.engine_validation import DEFAULT_DELTA
from pipeline.export import DEFAULT_OPSET
from pipeline.hashing import sha256_bytes, sha256_file
from pipeline.weights import UNTRAINED_WARNING, check_weights, fetch_weights
from resources.engine import DEPLOY_MODES, PRECISIONS, EngineBuilder, EngineBuildError
from resources.storage import ArtifactStore



class OnnxConfig(dg.Config):
    opset: int = DEFAULT_OPSET
    parity_frames: int = 8
    box_tolerance_px: float = 0.05
    score_tolerance: float = 1e-3


def _name(selected: dict) -> str:
    return selected["model"] if selected["model"] != "off-shelf" else "yolov8n_offshelf"


def _n_classes(store: ArtifactStore, selected: dict) -> int:
    """Our model's output classes are those of the dataset it was trained on; the off-the-shelf
    detector's, COCO's 80."""
    return len(dataset_classes(store, selected["version"])) if selected.get("key") else 80


def _selected_weights(store: ArtifactStore, selected: dict, folder: Path) -> Path:
    """The selected `.pt`, checked (the sha256 models/selected_model.json recorded, and allow-listed)
    before anything unpickles it."""
    recorded_by = keys.SELECTED_MODEL
    if selected.get("key"):
        return fetch_weights(store, selected["key"], folder / Path(selected["key"]).name,
                             expected_sha256=selected.get("sha256"), recorded_by=recorded_by)
    if selected["sha256"] is None:
        raise RuntimeError(f"the selected model is the off-the-shelf architecture with no weights ({UNTRAINED_WARNING});"
                           " provide LBZF_BASE_WEIGHTS or run Stage B")
    check_weights(store, Path(selected["path"]), recorded_by=recorded_by, expected_sha256=selected["sha256"])
    return Path(selected["path"])


def _onnx_key(name: str) -> str:
    return keys.model_keys(name).onnx


def _engine_key(name: str) -> str:
    return keys.model_keys(name).engine


def _status_key(name: str) -> str:
    return keys.model_keys(name).engine_status


def _deployments_key(name: str) -> str:
    return keys.model_keys(name).engine_deployments


def calibration_keys(name: str) -> dict[str, str]:
    where = keys.model_keys(name)
    return {"manifest": where.calibration_manifest, "package": where.calibration_package,
            "cache": where.calibration_cache}


def _json(store: ArtifactStore, key: str) -> dict | list | None:
    return json.loads(store.read_bytes(key)) if store.exists(key) else None


def _md(meta: dict) -> dict:
    """Asset metadata: nested values as JSON, None dropped."""
    return {k: (dg.MetadataValue.json(v) if isinstance(v, (dict, list)) else v)
            for k, v in meta.items() if v is not None}


# --------------------------------------------------------------------------- ONNX


@dg.asset(deps=["selected_model"], group_name="export", kinds={"onnx"})
def onnx_model(context: dg.AssetExecutionContext, config: OnnxConfig, store: ArtifactStore) -> dg.MaterializeResult:
    """The selected model as ONNX (checked; names, shapes and opset validated) and its parity with
    PyTorch on real frames."""
    selected = read_selected(store)
    name = _name(selected)
    with tempfile.TemporaryDirectory(prefix="lbzf-onnx-") as tmp:
        folder = Path(tmp)
        weights = _selected_weights(store, selected, folder)
        frames = read_parquet(store, keys.STAGE_A_MANIFEST)["frame_key"].head(config.parity_frames).tolist()
        meta = checked_onnx(store, weights, keys.model_keys(name), version=selected["version"],
                            imgsz=int(selected["imgsz"]), n_classes=_n_classes(store, selected), frame_keys=frames,
                            folder=folder, opset=config.opset, box_tolerance_px=config.box_tolerance_px,
                            score_tolerance=config.score_tolerance, source_sha256=selected["sha256"])
        spec, report = meta["spec"], meta["parity"]
    return dg.MaterializeResult(metadata={**{k: v for k, v in meta.items() if k not in {"spec", "parity"}},
                                          "spec": dg.MetadataValue.json(spec),
                                          "parity": dg.MetadataValue.json(report)})


@dg.asset_check(asset=onnx_model, blocking=True, description="ONNX and PyTorch agree on real frames")
def onnx_parity(store: ArtifactStore) -> dg.AssetCheckResult:
    name = _name(read_selected(store))
    meta = json.loads(store.read_bytes(f"{_onnx_key(name)}.json"))
    return dg.AssetCheckResult(passed=bool(meta["parity"]["passed"]), metadata=meta["parity"])


# --------------------------------------------------------------------------- INT8 calibration


class CalibrationSetConfig(dg.Config):
    n_frames: int = DEFAULT_FRAMES
    seed: int = 0


@dg.asset(deps=[onnx_model, "dataset_split"], group_name="export", kinds={"tensorrt"})
def int8_calibration_set(context: dg.AssetExecutionContext, config: CalibrationSetConfig,
                         store: ArtifactStore) -> dg.MaterializeResult:
    """Frames for INT8 calibration, drawn from the TRAIN split of dataset_split_v0.csv only, packaged
    for the calibrator on the Jetson (letterboxed PNGs + a Polygraphy data loader + manifest)."""
    selected = read_selected(store)
    name = _name(selected)
    split = read_split(store)
    onnx_meta = json.loads(store.read_bytes(f"{_onnx_key(name)}.json"))
    frame_keys = select_calibration_frames(split, config.n_frames, seed=config.seed)
    manifest = CalibrationSet(frame_keys=frame_keys, split_sha256=sha256_bytes(store.read_bytes(keys.BASE_SPLIT)),
                              onnx_sha256=onnx_meta["onnx_sha256"], imgsz=int(selected["imgsz"]), seed=config.seed)
    where = calibration_keys(name)
    with tempfile.TemporaryDirectory(prefix="lbzf-calib-") as tmp:
        folder = Path(tmp)
        frames = []
        for key in frame_keys:
            local = folder / "frames" / keys.package_file_name(key)
            store.download_file(key, local)
            frames.append((key, local))
        package = write_calibration_package(frames, folder / "calibration_set.zip", manifest)
        store.upload_file(package, where["package"])
        package_sha = sha256_file(package)
    store.write_bytes(where["manifest"], manifest.to_json())
    videos = split.set_index("frame_key").loc[frame_keys, "video_id"].nunique() if "video_id" in split else None
    context.log.info(f"calibration set: {len(frame_keys)} train frames; produce the cache on the Jetson and upload it "
                     f"to {store.uri(where['cache'])} (docs/deployment.md, 'The Jetson')")
    return dg.MaterializeResult(metadata=_md({
        "frames": len(frame_keys), "videos": None if videos is None else int(videos), "split": "train",
        "split_sha256": manifest.split_sha256,
        "onnx_sha256": manifest.onnx_sha256, "package_uri": store.uri(where["package"]), "package_sha256": package_sha,
        "cache_expected_at": store.uri(where["cache"]),
    }))


def _int8_calibration(store: ArtifactStore, name: str, config: "EngineConfig", folder: Path) -> tuple[dict, Path]:
    """The INT8 gate on store contents: (provenance, local cache) or a `CalibrationError`."""
    where = calibration_keys(name)
    manifest_doc = store.read_bytes(where["manifest"]) if store.exists(where["manifest"]) else None
    manifest = CalibrationSet.from_json(manifest_doc) if manifest_doc else None
    cache_key = config.int8_calib_cache_key or where["cache"]
    cache = None
    if store.exists(cache_key):
        cache = folder / "calib.cache"
        store.download_file(cache_key, cache)
    onnx_meta = _json(store, f"{_onnx_key(name)}.json") or {}
    provenance = require_int8_calibration("int8", manifest=manifest, cache=cache, split=read_split(store),
                                          onnx_sha256=onnx_meta.get("onnx_sha256"),
                                          manifest_where=store.uri(where["manifest"]),
                                          cache_where=store.uri(cache_key))
    assert provenance is not None and cache is not None
    return {**provenance, "int8_calib_cache_key": cache_key}, cache


# --------------------------------------------------------------------------- TensorRT engine


class EngineConfig(dg.Config):
    precision: str = "fp16"
    int8_calib_cache_key: str = ""  # default: models/<name>/calibration/calib.cache
    validation_frames: int = 16  # labelled frames of the val split run through engine and PyTorch
    map50_delta: float = DEFAULT_DELTA  # allowed |engine - PyTorch| mAP@0.5
    max_latency_ms: float = 0.0  # engine median latency budget per frame; 0 = not enforced
    validation_iterations: int = 10  # timed trtexec iterations per frame


@dg.asset(deps=[onnx_model], group_name="export", kinds={"tensorrt"})
def tensorrt_engine(context: dg.AssetExecutionContext, config: EngineConfig, store: ArtifactStore,
                    engine_builder: EngineBuilder) -> dg.MaterializeResult:
    """The TensorRT engine, built on the device that will run it (engines are not portable), then
    run there on labelled validation frames and compared with PyTorch. INT8 needs a calibration
    cache made from training frames (int8_calibration_set)."""
    selected = read_selected(store)
    name = _name(selected)
    if config.precision not in PRECISIONS:
        raise dg.Failure(description=f"unknown precision {config.precision!r}; use one of {', '.join(PRECISIONS)}")
    with tempfile.TemporaryDirectory(prefix="lbzf-engine-") as tmp:
        folder = Path(tmp)
        calibration, calib = None, None
        if config.precision == "int8":
            try:
                calibration, calib = _int8_calibration(store, name, config, folder)
            except CalibrationError as exc:
                raise dg.Failure(description=str(exc), metadata={"problem": exc.problem, "remedy": exc.remedy,
                                                                 "value": str(exc.value)}) from exc
        available, reason = engine_builder.availability()
        if not available:
            context.log.warning(f"engine not built: {reason}")
            status = {"status": "unavailable", "reason": reason, "model": name, "precision": config.precision}
            store.write_bytes(_status_key(name), json.dumps(status, indent=2).encode())
            return dg.MaterializeResult(metadata={"status": "unavailable", "reason": reason, "model": name})
        onnx_local = folder / f"{name}.onnx"
        store.download_file(_onnx_key(name), onnx_local)
        try:
            result = engine_builder.build(onnx_local, folder / "out", engine_name=name, precision=config.precision,
                                          int8_calib_cache=calib)
        except EngineBuildError as exc:
            failed = exc.to_result(precision=config.precision, onnx_sha256=sha256_file(onnx_local)).to_metadata()
            store.write_bytes(_status_key(name), json.dumps({**failed, "model": name}, indent=2).encode())
            raise
        meta = result.to_metadata()
        meta.pop("metadata_path", None)
        meta.pop("engine_path", None)
        if result.built:
            try:
                weights = _selected_weights(store, selected, folder)
            except RuntimeError as exc:
                weights = exc
            validation = validate_engine(context.log, store, engine_builder, weights, int(selected["imgsz"]),
                                         Path(result.engine_path), folder, frames=config.validation_frames,
                                         iterations=config.validation_iterations, delta=config.map50_delta,
                                         max_latency_ms=config.max_latency_ms)
            sidecar = (json.loads(Path(result.metadata_path).read_text()) if result.metadata_path
                       and Path(result.metadata_path).is_file() else dict(meta))
            sidecar.update({"status": "built", "validation": validation, "calibration": calibration,
                            "onnx_key": _onnx_key(name)})
            engine_key = _engine_key(name)
            store.upload_file(Path(result.engine_path), engine_key)
            store.write_bytes(engine_key + ".json", json.dumps(sidecar, indent=2, default=str).encode())
            meta.update({"uri": store.uri(engine_key), "validation": validation, "calibration": calibration,
                         "validated": bool(validation.get("passed"))})
        store.write_bytes(_status_key(name), json.dumps({**meta, "model": name, "engine_key": _engine_key(name)},
                                                        indent=2, default=str).encode())
    return dg.MaterializeResult(metadata=_md(meta))


@dg.asset_check(asset=tensorrt_engine, blocking=True,
                description="The engine detects what PyTorch detects: mAP@0.5 on labelled validation frames within "
                            "δ (and latency within budget when set). Passes as 'not built' where no engine builder is "
                            "available; fails for an engine built but not validated.")
def engine_matches_pytorch(store: ArtifactStore) -> dg.AssetCheckResult:
    name = _name(read_selected(store))
    status = _json(store, _status_key(name))
    if status is None:
        return dg.AssetCheckResult(passed=False, metadata={"result": "no engine build recorded"},
                                   description="materialize tensorrt_engine first")
    if status.get("status") != "built":
        # Nothing was built (no TensorRT here, or no Jetson configured): nothing can disagree with
        # PyTorch, so the check passes and says so; engine_deployment refuses unbuilt engines itself.
        text = f"not built: {status.get('reason', '')}"
        return dg.AssetCheckResult(passed=True, description=text,
                                   metadata={"result": text, "built": False, "status": status.get("status")})
    validation = status.get("validation") or {}
    if validation.get("status") != "validated":
        text = f"built but not validated: {validation.get('reason', 'no validation recorded')}"
        return dg.AssetCheckResult(passed=False, description=text,
                                   metadata={"result": text, "built": True,
                                             "engine_sha256": status.get("engine_sha256")})
    metadata = {"result": validation.get("summary", ""), "built": True, "engine_sha256": status.get("engine_sha256"),
                "frames": validation.get("frames"), "map50_pytorch": validation.get("map50_pytorch"),
                "map50_engine": validation.get("map50_engine"), "map50_diff": validation.get("map50_diff"),
                "delta": validation.get("delta"), "latency_ms_engine": validation.get("latency_ms_engine") or {},
                "latency_ms_pytorch": validation.get("latency_ms_pytorch") or {},
                "max_latency_ms": validation.get("max_latency_ms"), "reasons": validation.get("reasons") or []}
    return dg.AssetCheckResult(passed=bool(validation.get("passed")), description=validation.get("summary"),
                               metadata=_md(metadata))


# --------------------------------------------------------------------------- deployment


class DeployConfig(dg.Config):
    mode: str = "shadow"  # shadow | production
    require_shadow_before_production: bool = True


def _not_deployed(context, mode: str, reason: str, **extra) -> dg.MaterializeResult:
    context.log.warning(f"nothing deployed ({mode}): {reason}")
    return dg.MaterializeResult(metadata=_md({"deployed": False, "mode": mode, "reason": reason, **extra}))


@dg.asset(deps=[tensorrt_engine], group_name="export", kinds={"tensorrt"})
def engine_deployment(context: dg.AssetExecutionContext, config: DeployConfig, store: ArtifactStore,
                      engine_builder: EngineBuilder) -> dg.MaterializeResult:
    """The validated engine pushed to the Jetson (shadow/ by default, production/ on request), the
    previous one kept as *.previous. Where there is nothing to deploy (not built, not validated, no
    device) it says why and the run goes on; a deploy that is attempted and fails fails the run."""
    if config.mode not in DEPLOY_MODES:
        raise dg.Failure(description=f"unknown deploy mode {config.mode!r}; use one of {', '.join(DEPLOY_MODES)}")
    name = _name(read_selected(store))
    status = _json(store, _status_key(name))
    if status is None:
        return _not_deployed(context, config.mode, "no engine build recorded: materialize tensorrt_engine first")
    if status.get("status") != "built":
        return _not_deployed(context, config.mode, f"engine not built: {status.get('reason', '')}")
    validation = status.get("validation") or {}
    if validation.get("status") != "validated" or not validation.get("passed"):
        why = validation.get("summary") or validation.get("reason") or "no validation recorded"
        return _not_deployed(context, config.mode, f"engine not validated against PyTorch: {why}",
                             engine_sha256=status.get("engine_sha256"))
    can_deploy, why_not = engine_builder.deploy_support()
    if not can_deploy:
        return _not_deployed(context, config.mode, why_not, engine_sha256=status.get("engine_sha256"))
    history = _json(store, _deployments_key(name)) or []
    sha = status.get("engine_sha256")
    if config.mode == "production" and config.require_shadow_before_production and not any(
            h.get("mode") == "shadow" and h.get("engine_sha256") == sha for h in history):
        return _not_deployed(context, config.mode, f"engine {sha} has not run in shadow mode yet; deploy it with "
                             "mode=shadow first (or set require_shadow_before_production=false)", engine_sha256=sha)
    selected = read_selected(store)
    launched = registry.read_pointer(store)  # v0 reaches production only through its launch gate (v0_launch)
    if config.mode == "production" and selected.get("version") != registry.OFF_SHELF and \
            (launched or {}).get("weights_sha256") != selected.get("sha256"):
        return _not_deployed(context, config.mode, f"{selected.get('version')} has not passed its launch gate: run "
                             "launch_job (v0_shadow_report from the device's shadow logs, then v0_launch), which puts "
                             "it in production when every check passes", engine_sha256=sha)
    engine_key = _engine_key(name)
    with tempfile.TemporaryDirectory(prefix="lbzf-deploy-") as tmp:
        engine_local = Path(tmp) / f"{name}.engine"
        sidecar_local = Path(tmp) / f"{name}.engine.json"
        store.download_file(engine_key, engine_local)
        store.download_file(engine_key + ".json", sidecar_local)
        if sha256_file(engine_local) != sha:
            raise dg.Failure(description=f"{store.uri(engine_key)} is not the engine the latest build recorded "
                                         f"(sha256 {sha}); rebuild it (materialize tensorrt_engine)")
        try:
            result = engine_builder.deploy_engine(engine_local, mode=config.mode, metadata_path=sidecar_local)
        except EngineBuildError as exc:
            raise dg.Failure(description=f"deploying {name} ({config.mode}) failed: {exc}") from exc
    record = {**result.to_metadata(), "model": name, "engine_key": engine_key,
              "deployed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    store.write_bytes(_deployments_key(name), json.dumps(history + [record], indent=2).encode())
    context.log.info(f"{name} deployed ({config.mode}) to {result.host}:{result.remote_path}")
    return dg.MaterializeResult(metadata=_md({"deployed": True, **result.to_metadata(), "model": name,
                                              "validation": validation.get("summary")}))
