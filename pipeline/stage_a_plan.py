"""Stage A sampling plan: which videos (3 per operation) and which 60 s window in each."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.frames import motion_energy, probe_video
from pipeline.sampling import WindowChoice, choose_active_window, stage_a_targets

OPERATIONS = ("Collar", "Cuffs", "Back/yoke", "Front", "Assembly", "Buttonholes & buttons", "Inspection & pack")


def select_stage_a_videos(manifest: pd.DataFrame, per_category: int = 3, seed: int = 0) -> pd.DataFrame:
    """`per_category` pre-install videos from each operation, drawn with a fixed seed.

    Categories with fewer videos contribute all they have; the caller reports the shortfall.
    """
    pre = manifest[~manifest["post_install"].astype(bool)].sort_values("video_id")
    rng = np.random.default_rng(seed)
    chosen = []
    for _, group in pre.groupby("operation", sort=True):
        take = min(per_category, len(group))
        chosen.append(group.iloc[sorted(rng.choice(len(group), size=take, replace=False))])
    if not chosen:
        return pre.iloc[0:0]
    return pd.concat(chosen).sort_values(["operation", "video_id"]).reset_index(drop=True)


def plan_window(video: Path, *, window_s: float = 60.0, step_s: float = 5.0,
                motion_every_s: float = 1.0) -> tuple[WindowChoice, list[float]]:
    """Choose the most active `window_s` window by motion energy and its 1 frame / `step_s` targets."""
    info = probe_video(video)
    motion = motion_energy(video, every_s=motion_every_s)
    choice = choose_active_window(motion, info.usable_duration_s, window_s=window_s)
    return choice, stage_a_targets(choice, step_s=step_s)
