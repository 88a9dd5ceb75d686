"""Shadow mode: the candidate runs beside the production model on the same frames, and is judged on
how it would have behaved before it is allowed to decide anything.

Log schema (one row per frame per model; the Jetson writes both models' rows for every frame it
shadows and uploads them under `shadow/<candidate_version>/logs/` as parquet or JSON lines):

| column | meaning |
|---|---|
| timestamp | capture time of the frame (UTC; ISO 8601 in JSON lines) |
| camera | camera id (`cam1`) |
| model_version | `v0.1` (candidate) or the production version |
| boxes | person boxes `[[x1, y1, x2, y2], ...]` in pixels |
| confidences | one confidence per box |
| latency_ms | inference time of that frame on the device |

Rows are paired by (camera, timestamp). Locally, `simulate_logs` replays held-out buffer frames
through both models and writes the same schema; the simulated period is declared by the timestamps
it stamps (frames in capture order, spread evenly over the declared hours).
"""
from __future__ import annotations

import io
import json
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from pipeline import keys
from pipeline.boxes import greedy_match
from pipeline.errors import PipelineInputError

LOG_COLUMNS = ["timestamp", "camera", "model_version", "boxes", "confidences", "latency_ms"]
SIMULATED_FILE = "simulated.parquet"


class ShadowLogError(PipelineInputError):
    """A shadow log that does not follow the schema."""


logs_prefix = keys.shadow_logs_prefix


# --------------------------------------------------------------------------- reading and validating


def _as_boxes(value, where: str, source: str) -> list[list[float]]:
    boxes = [] if value is None else [list(map(float, b)) for b in list(value)]
    if any(len(b) != 4 for b in boxes):
        raise ShadowLogError(source, "boxes", where, "write each box as [x1, y1, x2, y2]",
                             problem="box without 4 numbers")
    return boxes


def validate_logs(table: pd.DataFrame, source: str) -> pd.DataFrame:
    """The table with typed columns (UTC timestamps, lists of boxes and floats), or a clear error."""
    missing = [c for c in LOG_COLUMNS if c not in table.columns]
    if missing:
        raise ShadowLogError(source, ", ".join(missing), list(table.columns),
                             f"shadow logs need the columns {LOG_COLUMNS}", problem="missing columns")
    out = table.copy()
    try:
        out["timestamp"] = pd.to_datetime(out["timestamp"], utc=True, format="ISO8601")  # mixed precisions
    except (ValueError, TypeError) as exc:
        raise ShadowLogError(source, "timestamp", str(exc)[:80], "write ISO 8601 timestamps with a zone",
                             problem="unreadable timestamp") from exc
    if out["timestamp"].isna().any():
        raise ShadowLogError(source, "timestamp", None, "every row needs its capture time", problem="missing timestamp")
    out["camera"] = out["camera"].astype(str)
    out["model_version"] = out["model_version"].astype(str)
    out["boxes"] = [_as_boxes(v, f"row {i}", source) for i, v in enumerate(out["boxes"])]
    out["confidences"] = [[] if v is None else [float(c) for c in list(v)] for v in out["confidences"]]
    bad = [i for i, (b, c) in enumerate(zip(out["boxes"], out["confidences"])) if len(b) != len(c)]
    if bad:
        raise ShadowLogError(source, "confidences", f"row {bad[0]}", "write one confidence per box",
                             problem="boxes and confidences differ in length")
    out["latency_ms"] = pd.to_numeric(out["latency_ms"], errors="coerce")
    if out["latency_ms"].isna().any() or (out["latency_ms"] < 0).any():
        raise ShadowLogError(source, "latency_ms", None, "write the inference time in milliseconds (>= 0)",
                             problem="missing or negative latency")
    return out


def read_log_file(name: str, data: bytes) -> pd.DataFrame:
    if name.endswith(".parquet"):
        table = pd.read_parquet(io.BytesIO(data))
    elif name.endswith((".jsonl", ".json")):
        table = pd.DataFrame([json.loads(line) for line in data.decode().splitlines() if line.strip()])
    else:
        raise ShadowLogError(name, "file", name, "upload shadow logs as .parquet or .jsonl", problem="unknown format")
    return validate_logs(table, name)


SIMULATED, DEVICE = "simulated", "device"


def logs_source(files: list[str], logs: pd.DataFrame) -> str:
    """Where a set of shadow logs came from: "device" only when every row was written on the device.
    A simulated file or row anywhere makes the whole set "simulated" (never mixed into a device claim)."""
    if not files:
        return "none"
    if any(f.endswith(SIMULATED_FILE) for f in files):
        return SIMULATED
    if "source" in logs.columns and (logs["source"].fillna(DEVICE).astype(str) != DEVICE).any():
        return SIMULATED
    return DEVICE


SIMULATED_WARNING = "SIMULATED shadow run: replayed on this machine, not logged by the device"


def check_simulation_allowed(simulate: bool, allowed: bool, asset: str) -> None:
    """Production never simulates a shadow run: its logs must come from the device."""
    if simulate and not allowed:
        raise ShadowLogError(f"{asset} config", "simulate", True,
                             "this deployment accepts only logs the Jetson writes in shadow mode "
                             "(python -m pipeline.shadow_device on the device, uploaded under shadow/<version>/logs/); "
                             "set simulate: false and wait for them", problem="simulated shadow run refused")


def shadow_words(shadow: dict | None) -> str:
    """How a promotion record names its shadow evidence; a simulated run always says so."""
    shadow = shadow or {}
    hours = float(shadow.get("period_h") or 0.0)
    if shadow.get("source") == SIMULATED:
        return f"{hours:.1f} h of SIMULATED shadow logs (replayed on this machine, not the device)"
    return f"{hours:.1f} h of device shadow logs"


def simulated_warning(source: str) -> dict:
    """UI metadata that makes a simulated shadow run impossible to miss."""
    return {"WARNING": SIMULATED_WARNING} if source == SIMULATED else {}


def load_logs(list_keys, read_bytes, prefix: str) -> tuple[pd.DataFrame, list[str], str]:
    """Every log file under `prefix` (validated), the files read, and their source ("device",
    "simulated" or "none"). `list_keys(prefix)` yields keys, `read_bytes(key)` returns bytes."""
    files = sorted(k for k in list_keys(prefix) if k.endswith((".parquet", ".jsonl", ".json")))
    tables = [read_log_file(k, read_bytes(k)) for k in files]
    logs = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=LOG_COLUMNS)
    return logs, files, logs_source(files, logs)


def to_parquet_bytes(table: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    return buffer.getvalue()


# --------------------------------------------------------------------------- the report


def _kept(boxes: list, confidences: list, conf: float) -> tuple[np.ndarray, np.ndarray]:
    b = np.asarray(boxes, float).reshape(-1, 4)
    c = np.asarray(confidences, float)
    keep = c >= conf
    return b[keep], c[keep]


def frame_agreement(boxes_a, conf_a, boxes_b, conf_b, *, conf: float = 0.25, iou_threshold: float = 0.5) -> float:
    """Share of boxes the two models agree on: matched pairs (IoU >= threshold) over the larger of the
    two box counts; 1.0 when neither reports anybody."""
    a, ca = _kept(boxes_a, conf_a, conf)
    b, cb = _kept(boxes_b, conf_b, conf)
    if len(a) == 0 and len(b) == 0:
        return 1.0
    return len(greedy_match(a, b, cb, iou_threshold)) / max(len(a), len(b))


def pair_logs(logs: pd.DataFrame, *, candidate: str, production: str) -> tuple[pd.DataFrame, dict]:
    """One row per (camera, timestamp) both models logged, and what was left out."""
    counts = logs["model_version"].value_counts().to_dict()
    ours = logs[logs["model_version"].isin([candidate, production])]
    keys = ["camera", "timestamp"]
    dup = ours.duplicated(keys + ["model_version"], keep="last")
    ours = ours[~dup]
    c = ours[ours["model_version"] == candidate].set_index(keys)
    p = ours[ours["model_version"] == production].set_index(keys)
    joined = c.join(p, how="inner", lsuffix="_c", rsuffix="_p").reset_index()
    info = {"rows_candidate": int(counts.get(candidate, 0)), "rows_production": int(counts.get(production, 0)),
            "rows_other_versions": int(sum(v for k, v in counts.items() if k not in (candidate, production))),
            "other_versions": sorted(k for k in counts if k not in (candidate, production)),
            "duplicates_dropped": int(dup.sum()), "paired_frames": int(len(joined)),
            "unpaired_candidate": int(len(c) - len(joined)), "unpaired_production": int(len(p) - len(joined))}
    return joined.sort_values(keys).reset_index(drop=True), info


def _summarize(table: pd.DataFrame) -> dict:
    lat_c, lat_p = table["latency_ms_c"].to_numpy(float), table["latency_ms_p"].to_numpy(float)
    p95_c, p95_p = float(np.percentile(lat_c, 95)), float(np.percentile(lat_p, 95))
    return {
        "frames": int(len(table)),
        "agreement": float(table["agreement"].mean()),
        "detection_rate_production": float(table["detected_p"].mean()),
        "detection_rate_candidate": float(table["detected_c"].mean()),
        "detection_rate_diff": float(table["detected_c"].mean() - table["detected_p"].mean()),
        "mean_conf_production": float(table["best_conf_p"].mean()),
        "mean_conf_candidate": float(table["best_conf_c"].mean()),
        "conf_diff": float(table["best_conf_c"].mean() - table["best_conf_p"].mean()),
        "latency_p50_production_ms": float(np.median(lat_p)), "latency_p95_production_ms": p95_p,
        "latency_p50_candidate_ms": float(np.median(lat_c)), "latency_p95_candidate_ms": p95_c,
        "latency_p95_ratio": p95_c / p95_p if p95_p > 0 else float("inf"),
    }


def shadow_report(logs: pd.DataFrame, *, candidate: str, production: str, conf: float = 0.25,
                  iou_threshold: float = 0.5) -> dict:
    """Per-camera and overall agreement, detection rates, confidence differences and latency of the
    candidate against production on the frames both logged, and the period the logs cover."""
    paired, info = pair_logs(logs, candidate=candidate, production=production)
    report = {"candidate_version": candidate, "production_version": production, "conf": conf,
              "iou_threshold": iou_threshold, **info, "period_h": 0.0, "period_start": None, "period_end": None,
              "per_camera": [], "overall": None}
    if paired.empty:
        return report
    rows = []
    for r in paired.itertuples(index=False):
        bc, cc = _kept(r.boxes_c, r.confidences_c, conf)
        bp, cp = _kept(r.boxes_p, r.confidences_p, conf)
        rows.append({"agreement": frame_agreement(r.boxes_c, r.confidences_c, r.boxes_p, r.confidences_p, conf=conf,
                                                  iou_threshold=iou_threshold),
                     "detected_c": float(len(bc) > 0), "detected_p": float(len(bp) > 0),
                     "best_conf_c": float(cc.max()) if len(cc) else 0.0,
                     "best_conf_p": float(cp.max()) if len(cp) else 0.0})
    table = pd.concat([paired[["camera", "timestamp", "latency_ms_c", "latency_ms_p"]], pd.DataFrame(rows)], axis=1)
    start, end = table["timestamp"].min(), table["timestamp"].max()
    report.update({"period_start": start.isoformat(), "period_end": end.isoformat(),
                   "period_h": round((end - start).total_seconds() / 3600.0, 3),
                   "per_camera": [{"camera": camera, **_summarize(g)} for camera, g in table.groupby("camera")],
                   "overall": _summarize(table)})
    return report


# --------------------------------------------------------------------------- local simulation


def simulate_logs(frames: pd.DataFrame, models: dict[str, tuple[str, int]], *, start: datetime,
                  period_h: float, conf: float = 0.25, device: str = "cpu", backend: str = "auto",
                  cache_dir=None) -> pd.DataFrame:
    """Replay `frames` (frame_key, camera, captured_at, path) through each model (version ->
    (weights, imgsz)) one frame at a time, as the Jetson would, timing each inference. Frames are
    stamped in capture order, evenly over `period_h` hours from `start`: the declared shadow period.
    Each model runs on the fastest backend proven against PyTorch on these frames (`pipeline.detector`),
    with the same per-frame loop as the device runner (`pipeline.shadow_device.shadow_rows`)."""
    from pipeline.detector import open_pass_detector
    from pipeline.shadow_device import SIMULATED, Frame, shadow_rows

    ordered = frames.sort_values(["captured_at", "camera", "frame_key"]).reset_index(drop=True)
    n = len(ordered)
    step = timedelta(hours=period_h) / max(n - 1, 1)
    stamps = [pd.Timestamp(start) + i * step for i in range(n)]
    items = [(str(f.frame_key), str(f.path)) for f in ordered.itertuples(index=False)]
    detectors = {version: open_pass_detector(weights, items, imgsz=imgsz, conf=conf, device=device, backend=backend,
                                             cache_dir=cache_dir) for version, (weights, imgsz) in models.items()} \
        if n else {}
    replay = [Frame(str(f.frame_key), str(f.camera), stamp, str(f.path))
              for stamp, f in zip(stamps, ordered.itertuples(index=False))]
    rows = shadow_rows(detectors, replay, source=SIMULATED) if n else []
    table = pd.DataFrame(rows, columns=LOG_COLUMNS + ["frame_key", "source"])
    table.attrs["inference"] = {version: d.record for version, d in detectors.items()}  # backend, parity, fallbacks
    return table
