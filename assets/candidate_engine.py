"""Stage C's engine steps, shared by its assets: each candidate's ONNX (exported once, with the
parity check every exported model passes), its TensorRT engine (built once from that ONNX, validated
on the device against PyTorch, kept beside its weights), and the engine's deployment to the
Jetson's shadow and production slots."""

import json
import tempfile
from pathlib import Path

from assets.labels import dataset_classes
from assets.engine_checks import checked_onnx, validate_engine
from assets.store_io import read_json
from pipeline import keys, registry
from pipeline.engine_validation import DEFAULT_DELTA
from pipeline.hashing import sha256_bytes, sha256_file
from pipeline.retraining import candidate_weights
from resources.engine import EngineBuilder
from resources.storage import ArtifactStore


def deploy_candidate_to_shadow(context, store: ArtifactStore, engine_builder: EngineBuilder, card: dict) -> dict:
    """Production path: build the candidate's TensorRT engine on the Jetson and deploy it in shadow
    mode. Where no engine can be built (a laptop) it says so and the shadow run is simulated."""
    available, why = engine_builder.availability()
    if not available:
        return {"status": "not deployed", "reason": why}
    version, name = card["version"], card["model"]
    with tempfile.TemporaryDirectory(prefix="lbzf-shadow-engine-") as tmp:
        folder = Path(tmp)
        engine_local, sidecar_local, validation = engine_files(context, store, engine_builder, card, folder)
        if not validation.get("passed"):
            why = validation.get("summary") or validation.get("reason") or "not validated"
            context.log.warning(f"{name}'s engine is not deployed in shadow mode: it failed on-device validation: {why}")
            return {"status": "built, not deployed", "engine_key": keys.engine_key(version),
                    "reason": f"engine failed on-device validation against PyTorch: {why}"}
        can_deploy, why_not = engine_builder.deploy_support()
        if not can_deploy:
            return {"status": "built, not deployed", "engine_key": keys.engine_key(version), "reason": why_not}
        result = engine_builder.deploy_engine(engine_local, mode="shadow", metadata_path=sidecar_local)
        context.log.info(f"{name} deployed in shadow mode: {result.to_metadata()}")
        return {"status": "deployed", **{k: str(v) for k, v in result.to_metadata().items()}}


def candidate_onnx(store: ArtifactStore, card: dict, folder: Path, frame_keys: list[str]) -> dict:
    """The candidate as ONNX, with the same parity check as v0's (refused, and nothing stored, when it
    disagrees with PyTorch). Made once; the device's shadow runner and the engine build start from it."""
    where = keys.version_keys(card["version"])
    if store.exists(where.onnx_meta) and store.exists(where.onnx):
        meta = read_json(store, where.onnx_meta)
        if meta.get("source_sha256") == card["weights_sha256"]:
            return meta
    weights = candidate_weights(store, card, folder / "onnx" / f"{card['model']}.pt")
    return checked_onnx(store, weights, where, version=card["version"], imgsz=int(card["imgsz"]),
                        n_classes=len(dataset_classes(store, card["version"])),
                        frame_keys=frame_keys, folder=folder / "onnx", source_sha256=card["weights_sha256"],
                        require_parity=True)


def engine_files(context, store: ArtifactStore, engine_builder: EngineBuilder, card: dict,
                  folder: Path) -> tuple[Path, Path, dict]:
    """The candidate's engine and sidecar (built once from its parity-checked ONNX, validated on the
    device against PyTorch, kept in the store beside its weights) and the validation record."""
    version, name = card["version"], card["model"]
    where = keys.version_keys(version)
    key = where.engine
    engine_local, sidecar_local = folder / f"{name}.engine", folder / f"{name}.engine.json"
    if not store.exists(key):
        onnx_path = folder / f"{name}.onnx"
        store.download_file(where.onnx, onnx_path)
        if sha256_file(onnx_path) != read_json(store, where.onnx_meta)["onnx_sha256"]:
            raise registry.RegistryError(where.onnx, "onnx_sha256", sha256_file(onnx_path),
                                         "re-run candidate_model: it exports and checks the candidate's ONNX",
                                         problem="ONNX differs from its parity record")
        built = engine_builder.build(onnx_path, folder / "out", engine_name=name)
        if not built.built:
            raise RuntimeError(f"engine for {version} not built: {built.reason}")
        weights = candidate_weights(store, card, folder / f"{name}.pt")
        validation = validate_engine(context.log, store, engine_builder, weights, int(card["imgsz"]),
                                     Path(built.engine_path), folder, frames=16, iterations=10, delta=DEFAULT_DELTA)
        sidecar = (json.loads(Path(built.metadata_path).read_text()) if built.metadata_path and
                   Path(built.metadata_path).exists() else built.to_metadata())
        sidecar.update({"validation": validation, "onnx_key": where.onnx})
        store.upload_file(Path(built.engine_path), key)
        store.write_bytes(key + ".json", json.dumps(sidecar, indent=2, default=str).encode())
    store.download_file(key, engine_local)
    store.download_file(key + ".json", sidecar_local)
    validation = json.loads(sidecar_local.read_text()).get("validation") or {"passed": False,
                                                                             "reason": "no validation recorded"}
    return engine_local, sidecar_local, validation


def deploy_production_engine(context, store: ArtifactStore, engine_builder: EngineBuilder, entry: dict) -> dict:
    """Production path: put a registry entry's engine in the Jetson's production slot (atomic there):
    a promoted candidate, v0 at its launch, or the version a rollback returns to."""
    available, why = engine_builder.availability()
    can_deploy, why_not = engine_builder.deploy_support()
    if not available or not can_deploy:
        return {"status": "pointer only", "reason": why if not available else why_not}
    key = entry.get("engine_key")
    if not key or not store.exists(key):
        raise RuntimeError(f"no TensorRT engine for {entry['version']} in the store ({key}); build and validate it "
                           "on the Jetson first (tensorrt_engine for v0, shadow_report for a monthly candidate)")
    with tempfile.TemporaryDirectory(prefix="lbzf-deploy-") as tmp:
        engine, sidecar = Path(tmp) / Path(key).name, Path(tmp) / (Path(key).name + ".json")
        store.download_file(key, engine)
        store.download_file(key + ".json", sidecar)
        result = engine_builder.deploy_engine(engine, mode="production", metadata_path=sidecar)
    context.log.info(f"{entry['version']} deployed to production on the device: {result.to_metadata()}")
    return {"status": "deployed", **{k: str(v) for k, v in result.to_metadata().items()}}


def with_engine(store: ArtifactStore, card: dict) -> dict:
    key = keys.engine_key(card["version"])
    if store.exists(key):
        return {**card, "engine_key": key, "engine_sha256": sha256_bytes(store.read_bytes(key))}
    return card
