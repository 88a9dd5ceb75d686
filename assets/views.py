"""The figures an evaluation shows its users, stored beside its report and shown inline in the UI:
confusion matrix (image + JSON), PR and F1-confidence curves with the operating point, the
confidence-sweep plot, and the domain-shift gap."""

import json

import dagster as dg
import pandas as pd

from assets.common import md_table
from assets.plots import image_md
from pipeline import figures, keys
from pipeline.classes import PERSON, of_class
from pipeline.confusion import confusion_matrix
from pipeline.curves import match_flags, pr_curve, pr_table
from pipeline.domain_shift import domain_shift_gap
from pipeline.explanations import explain
from resources.storage import ArtifactStore


def _put(store: ArtifactStore, key: str, data: bytes) -> str:
    store.write_bytes(key, data)
    return store.uri(key)


def split_views(store: ArtifactStore, model: keys.ModelKeys, split: str, gt: pd.DataFrame, preds: pd.DataFrame, *,
                sweep: list[dict], point: dict, conf: float, iou_threshold: float,
                classes: list[str] | None = None) -> tuple[dict, dict, pd.DataFrame]:
    """Store and render one split's figures under the model's figures/ folder. Returns (report entry
    additions, metadata, per-detection match flags for the domain-shift gap). The confusion matrix
    covers every class of `classes` (default person); the curves are person's, as the sweep is."""
    cm = confusion_matrix(gt, preds, classes, conf=conf, iou_threshold=iou_threshold)
    gt, preds = of_class(gt, PERSON), of_class(preds, PERSON)
    cm_json = _put(store, model.figure(f"confusion_{split}", "json"), json.dumps(cm, indent=2).encode())
    cm_png = figures.confusion_png(cm, f"{split}: conf >= {conf:.2f}, IoU >= {iou_threshold:.2f}")
    _put(store, model.figure(f"confusion_{split}"), cm_png)
    flags = match_flags(gt, preds, iou_threshold=iou_threshold, max_dets=100)
    by_conf, curve = pr_table(flags, len(gt)), pr_curve(flags, len(gt))
    curves_json = _put(store, model.figure(f"curves_{split}", "json"), json.dumps(
        {"iou_threshold": iou_threshold, "operating_point": point, "pr_curve": curve.to_dict("records"),
         "by_confidence": by_conf.to_dict("records")}, indent=2, default=float).encode())
    pr_png = figures.pr_f1_png(curve, by_conf, point, title=split)
    _put(store, model.figure(f"pr_f1_{split}"), pr_png)
    sweep_png = figures.sweep_png(sweep, point, title=f"{split}: confidence sweep")
    _put(store, model.figure(f"conf_sweep_{split}"), sweep_png)
    entry = {"confusion_matrix": cm, "figures": {"confusion_json": cm_json, "curves_json": curves_json}}
    metadata = {
        f"confusion_matrix_{split}": image_md(cm_png, f"confusion matrix {split}", explain("confusion_matrix"),
                                              cm_json),
        f"pr_f1_curves_{split}": image_md(pr_png, f"PR and F1 curves {split}", explain("pr_f1_curves"), curves_json),
        f"conf_sweep_{split}": image_md(sweep_png, f"confidence sweep {split}", explain("conf_sweep")),
    }
    return entry, metadata, flags


def gap_views(test: tuple[pd.DataFrame, pd.DataFrame], deployment: tuple[pd.DataFrame, pd.DataFrame], *,
              n_boot: int, seed: int) -> tuple[dict, dict]:
    """The domain-shift gap (deployment test - test) for the report, and its figure and table."""
    gap = domain_shift_gap(test, deployment, n_boot=n_boot, seed=seed)
    rows = [{"measure": m, "test": gap["test"][m], "post-install": gap["deployment_test"][m], "gap": gap["gap"][m],
             "gap 95% CI (by video)": f"[{gap['gap_ci'][m][0]:.3f}, {gap['gap_ci'][m][1]:.3f}]"}
            for m in gap["gap"]]
    return gap, {"domain_shift_gap": image_md(figures.domain_gap_png(gap), "domain-shift gap", explain("domain_shift")),
                 "domain_shift_table": md_table(pd.DataFrame(rows).round(4))}


def training_views(store: ArtifactStore, key: str, curves, title: str) -> dict:
    """The per-epoch training figure (losses, P, R, mAP@0.5, mAP@0.5:0.95), stored as PNG at `key`."""
    if not len(curves):
        return {"training_curves": dg.MetadataValue.md("(no per-epoch rows: the run wrote no results.csv)")}
    data = figures.training_curves_png(curves, title)
    return {"training_curves": image_md(data, "training curves", explain("training_curves"), _put(store, key, data))}


def speed_views(store: ArtifactStore, weights, frame_keys: list[str], *, imgsz: int, folder) -> tuple[dict, dict]:
    """Pre-process, inference and post-process ms per image for PyTorch and ONNX Runtime on the same
    frames (the ONNX file exported here, at the evaluation's image size)."""
    from pathlib import Path

    from pipeline import keys
    from pipeline.export import export_onnx
    from pipeline.speed import backend_speeds

    folder = Path(folder)
    images = []
    for key in frame_keys:
        images.append(folder / "speed" / keys.package_file_name(key))
        store.download_file(key, images[-1])
    onnx_path = export_onnx(Path(weights), folder / "speed" / "model.onnx", imgsz=imgsz)
    speeds = backend_speeds(Path(weights), onnx_path, images, imgsz=imgsz)
    table = pd.DataFrame([{"backend": b, **{k: s[k] for k in ("preprocess", "inference", "postprocess", "sum_ms",
                                                               "wall_ms_per_image", "images")}}
                          for b, s in speeds.items()])
    return speeds, {"speed_per_stage_ms": md_table(table), "speed_about": explain("speed")}
