"""Export: ONNX with proven parity, and the TensorRT engine built where it will run."""

import json
import tempfile
from pathlib import Path

import dagster as dg

from assets.common import read_parquet
from pipeline import keys
from pipeline.export import DEFAULT_OPSET, export_onnx, inspect_onnx, parity
from pipeline.hashing import sha256_file
from pipeline.weights import UNTRAINED_WARNING
from resources.engine_builder import EngineBuilder
from resources.storage import ArtifactStore


class OnnxConfig(dg.Config):
    opset: int = DEFAULT_OPSET
    parity_frames: int = 8
    box_tolerance_px: float = 0.05
    score_tolerance: float = 1e-3


def _selected(store: ArtifactStore) -> dict:
    return json.loads(store.read_bytes("models/selected_model.json"))


def _selected_weights(store: ArtifactStore, selected: dict, folder: Path) -> Path:
    if selected.get("key"):
        target = folder / Path(selected["key"]).name
        store.download_file(selected["key"], target)
        return target
    if selected["sha256"] is None:
        raise RuntimeError(f"the selected model is the off-the-shelf architecture with no weights ({UNTRAINED_WARNING});"
                           " provide LBZF_BASE_WEIGHTS or run Stage B")
    return Path(selected["path"])


@dg.asset(deps=["selected_model"], group_name="export", kinds={"onnx"})
def onnx_model(context: dg.AssetExecutionContext, config: OnnxConfig, store: ArtifactStore) -> dg.MaterializeResult:
    """The selected model as ONNX (checked, names/shapes validated) and its parity with PyTorch."""
    selected = _selected(store)
    name = selected["model"] if selected["model"] != "off-shelf" else "yolov8n_offshelf"
    with tempfile.TemporaryDirectory(prefix="lbzf-onnx-") as tmp:
        folder = Path(tmp)
        weights = _selected_weights(store, selected, folder)
        onnx_path = export_onnx(weights, folder / f"{name}.onnx", imgsz=selected["imgsz"], opset=config.opset)
        spec = inspect_onnx(onnx_path, imgsz=selected["imgsz"], n_classes=1 if selected.get("key") else 80)
        frames = read_parquet(store, "frames/stage_a/manifest.parquet")["frame_key"].head(config.parity_frames)
        images = []
        for key in frames:
            images.append(folder / keys.package_file_name(key))
            store.download_file(key, images[-1])
        report = parity(weights, onnx_path, images, imgsz=selected["imgsz"], box_tolerance_px=config.box_tolerance_px,
                        score_tolerance=config.score_tolerance)
        onnx_key = f"{keys.model_prefix(name)}{name}.onnx"
        store.upload_file(onnx_path, onnx_key)
        digest = sha256_file(onnx_path)
    meta = {"model": name, "version": selected["version"], "onnx_sha256": digest, "uri": store.uri(onnx_key),
            "imgsz": selected["imgsz"], "spec": spec.to_metadata(), "parity": report.to_metadata(),
            "source_sha256": selected["sha256"]}
    store.write_bytes(f"{keys.model_prefix(name)}{name}.onnx.json", json.dumps(meta, indent=2).encode())
    return dg.MaterializeResult(metadata={**{k: v for k, v in meta.items() if k not in {"spec", "parity"}},
                                          "spec": dg.MetadataValue.json(spec.to_metadata()),
                                          "parity": dg.MetadataValue.json(report.to_metadata())})


@dg.asset_check(asset=onnx_model, blocking=True, description="ONNX and PyTorch agree on real frames")
def onnx_parity(store: ArtifactStore) -> dg.AssetCheckResult:
    selected = _selected(store)
    name = selected["model"] if selected["model"] != "off-shelf" else "yolov8n_offshelf"
    meta = json.loads(store.read_bytes(f"{keys.model_prefix(name)}{name}.onnx.json"))
    return dg.AssetCheckResult(passed=bool(meta["parity"]["passed"]), metadata=meta["parity"])


class EngineConfig(dg.Config):
    precision: str = "fp16"
    int8_calib_cache_key: str = ""


@dg.asset(deps=[onnx_model], group_name="export", kinds={"tensorrt"})
def tensorrt_engine(context: dg.AssetExecutionContext, config: EngineConfig, store: ArtifactStore,
                    engine_builder: EngineBuilder) -> dg.MaterializeResult:
    """The TensorRT engine, built on the device that will run it (engines are not portable)."""
    selected = _selected(store)
    name = selected["model"] if selected["model"] != "off-shelf" else "yolov8n_offshelf"
    available, reason = engine_builder.availability()
    if not available:
        context.log.warning(f"engine not built: {reason}")
        return dg.MaterializeResult(metadata={"status": "unavailable", "reason": reason, "model": name})
    with tempfile.TemporaryDirectory(prefix="lbzf-engine-") as tmp:
        onnx_local = Path(tmp) / f"{name}.onnx"
        store.download_file(f"{keys.model_prefix(name)}{name}.onnx", onnx_local)
        calib = None
        if config.int8_calib_cache_key:
            calib = Path(tmp) / "calib.cache"
            store.download_file(config.int8_calib_cache_key, calib)
        result = engine_builder.build(onnx_local, Path(tmp) / "out", engine_name=name, precision=config.precision,
                                      int8_calib_cache=calib)
        meta = result.to_metadata()
        if result.status == "built":
            engine_key = f"{keys.model_prefix(name)}{name}.engine"
            store.upload_file(Path(result.engine_path), engine_key)
            store.write_bytes(engine_key + ".json", json.dumps(meta, indent=2, default=str).encode())
            meta["uri"] = store.uri(engine_key)
    return dg.MaterializeResult(metadata={k: (dg.MetadataValue.json(v) if isinstance(v, dict) else v)
                                          for k, v in meta.items() if v is not None})
