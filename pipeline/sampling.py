"""Sampling policies: which moments of a video become training frames.

Every policy is a plain function that returns target timestamps in seconds, measured from the
start of the video stream (the normalised presentation time used by `pipeline.frames`). The
extractor then picks, for each target, the last frame shown at or before it — so a policy never
has to know the frame rate, which may be odd or variable.
"""
from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass

# Targets are rounded to the microsecond so names and manifests stay stable across platforms
# (3 * 0.1 would otherwise print as 0.30000000000000004).
_DIGITS = 6
# A target closer than this to the end is treated as the end (float noise in declared durations).
_END_EPS = 1e-6

OPERATION_STEP_S = 2.0  # operation videos: 1 frame / 2 s
BUFFER_STEP_S = 30.0  # camera ring-buffer clips: 1 frame / 30 s
STAGE_A_WINDOW_S = 60.0  # Stage A: one busy minute per video
STAGE_A_STEP_S = 5.0  # ... sampled at 1 frame / 5 s (12 frames)


def _check_finite(name: str, value: float, *, positive: bool = False) -> None:
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        kind = "a positive" if positive else "a non-negative"
        raise ValueError(f"{name} must be {kind} finite number of seconds, got {value!r}")


def every_n_seconds(duration_s: float, step_s: float, start_s: float = 0.0) -> list[float]:
    """start, start+step, start+2*step, ... strictly before `duration_s`.

    Computed as start + k*step (not by repeated addition) so long videos do not drift.
    """
    _check_finite("duration_s", duration_s)
    _check_finite("step_s", step_s, positive=True)
    _check_finite("start_s", start_s)
    targets: list[float] = []
    k = 0
    while (t := start_s + k * step_s) < duration_s - _END_EPS:
        targets.append(round(t, _DIGITS))
        k += 1
    return targets


def buffer_targets(duration_s: float, step_s: float = BUFFER_STEP_S) -> list[float]:
    """Camera ring-buffer clips: one frame every `step_s` (30 s) from the start."""
    return every_n_seconds(duration_s, step_s)


@dataclass(frozen=True)
class WindowChoice:
    """The busiest stretch of a video: [start_s, end_s), with its mean motion energy."""

    start_s: float
    end_s: float
    score: float

    @property
    def length_s(self) -> float:
        return self.end_s - self.start_s


def choose_active_window(
    motion: list[tuple[float, float]], duration_s: float, window_s: float = STAGE_A_WINDOW_S
) -> WindowChoice:
    """Window of length `window_s` inside the video with the largest summed motion energy.

    `motion` holds (t, energy) samples (see `pipeline.frames.motion_energy`). A window covers
    samples with start <= t < start + window. A video shorter than the window is taken whole.
    Ties go to the earliest window; with no samples the window starts at 0 (score 0).
    """
    _check_finite("duration_s", duration_s)
    _check_finite("window_s", window_s, positive=True)
    for t, energy in motion:
        if not (math.isfinite(t) and math.isfinite(energy)):
            raise ValueError(f"motion sample ({t!r}, {energy!r}) is not finite")

    samples = sorted(motion)
    times = [t for t, _ in samples]
    prefix = [0.0]
    for _, energy in samples:
        prefix.append(prefix[-1] + energy)

    def window_sum(start: float, end: float) -> tuple[float, int]:
        lo, hi = bisect_left(times, start), bisect_left(times, end)
        return prefix[hi] - prefix[lo], hi - lo

    if duration_s <= window_s:
        total, count = window_sum(0.0, duration_s)
        return WindowChoice(0.0, round(duration_s, _DIGITS), total / count if count else 0.0)

    # Some best window can always be slid right until its start meets its first sample (it
    # loses nothing: the right end only grows), so sample times - clamped so the window stays
    # inside the video - are the only starts worth trying.
    latest_start = duration_s - window_s
    candidates = sorted({0.0, *(min(max(t, 0.0), latest_start) for t in times)})
    best_start, best_sum, best_count = 0.0, -math.inf, 0
    for start in candidates:
        total, count = window_sum(start, start + window_s)
        if total > best_sum:
            best_start, best_sum, best_count = start, total, count
    start = round(best_start, _DIGITS)
    return WindowChoice(start, round(start + window_s, _DIGITS), best_sum / best_count if best_count else 0.0)


def stage_a_targets(choice: WindowChoice, step_s: float = STAGE_A_STEP_S) -> list[float]:
    """Stage A: one frame every `step_s` inside the chosen window (12 frames for 60 s at 5 s)."""
    return every_n_seconds(choice.end_s, step_s, start_s=choice.start_s)
