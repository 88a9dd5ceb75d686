"""A simulated shadow run (local only; production refuses it): camera frames replayed through both
models on this machine, written where the device's logs go, as `simulated.parquet`. Shared by v0's
launch and the monthly candidates, so both simulate the same way and say so the same way."""

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pandas as pd

from pipeline import keys
from pipeline.shadow import SIMULATED_FILE, simulate_logs, to_parquet_bytes
from resources.inference import inference_settings
from resources.storage import ArtifactStore


class ShadowRunConfig(dg.Config):
    """How a shadow report reads (and, locally, simulates) a shadow run: v0's launch and every month."""

    simulate: bool = False  # locally: replay camera frames through both models (never in prod)
    simulated_period_h: float = 24.0  # the period the simulated logs declare in their timestamps
    max_frames: int = 200
    conf: float = 0.25
    iou_threshold: float = 0.5


def thin(frames: pd.DataFrame, max_frames: int) -> pd.DataFrame:
    """At most max_frames rows, evenly spread over the (capture-ordered) frames."""
    if len(frames) <= max_frames:
        return frames.reset_index(drop=True)
    return frames.iloc[[round(i * (len(frames) - 1) / (max_frames - 1)) for i in range(max_frames)]] \
        .reset_index(drop=True)


def replay_shadow_run(store: ArtifactStore, prefix: str, frames: pd.DataFrame, folder: Path,
                      models: Callable[[Path], dict[str, tuple[str, int]]], *, period_h: float,
                      conf: float) -> dict:
    """Download `frames` (frame_key, camera, captured_at), fetch the models into `folder`
    (`models(folder)` -> version -> (weights, imgsz)), replay, and write the simulated logs under
    `prefix`. Returns what the report records of the simulation."""
    paths = []
    for key in frames["frame_key"]:
        paths.append(folder / "frames" / keys.package_file_name(key))
        store.download_file(key, paths[-1])
    start = datetime.now(timezone.utc).replace(microsecond=0)
    logs = simulate_logs(frames.assign(path=[str(p) for p in paths]), models(folder), start=start,
                         period_h=period_h, conf=conf, **inference_settings().kwargs())
    store.write_bytes(prefix + SIMULATED_FILE, to_parquet_bytes(logs))
    return {"simulated_frames": len(frames), "simulated_period_h": period_h,
            "simulated_inference": logs.attrs.get("inference", {}), "simulated_start": start.isoformat()}
