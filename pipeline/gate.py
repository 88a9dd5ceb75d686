"""The Stage A gate: skip fine-tuning, fine-tune, or inconclusive.

Two rules, chosen by setting:

* ``ci`` (default): judged on the clustered confidence intervals, three ways (above / below /
  straddling the thresholds); an inconclusive result takes the configured action.
* ``point``: the plan's exact words, on the point estimates only: recall >= 0.95 and median
  best-box confidence >= 0.55 -> skip Stage B, otherwise fine-tune. The CIs are still reported.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from pipeline.errors import PipelineInputError

GATE_RULES = ("ci", "point")
INCONCLUSIVE_ACTIONS = ("fine_tune", "skip")


@dataclass(frozen=True)
class GateThresholds:
    min_recall: float = 0.95
    min_median_conf: float = 0.55
    inconclusive_action: str = "fine_tune"  # the plan's default; or "skip"
    rule: str = "ci"  # "ci" (three-way on the intervals) or "point" (the plan's point-estimate rule)

    def __post_init__(self) -> None:
        check_gate_setting("inconclusive_action", self.inconclusive_action)
        check_gate_setting("rule", self.rule)


def check_gate_setting(field: str, value: str) -> str:
    """The value, or a clear error: an unknown action must never silently pick a branch."""
    allowed = {"inconclusive_action": INCONCLUSIVE_ACTIONS, "rule": GATE_RULES}[field]
    if value not in allowed:
        raise PipelineInputError("stage_a_baseline config", field, value, f"use one of {', '.join(allowed)} "
                                 "(launchpad: ops.stage_a_baseline.config)", problem="unknown gate setting")
    return value


@dataclass(frozen=True)
class GateDecision:
    outcome: str  # "skip_fine_tuning" | "fine_tune" | "inconclusive"
    fine_tune: bool
    reasons: list[str]
    extra_frames_needed: int | None
    thresholds: dict

    def to_metadata(self) -> dict:
        return asdict(self)


def _frames_needed(estimate: float, ci: list[float], threshold: float, n_frames: int) -> int | None:
    """Rough extra labelled frames for the CI to clear the threshold: the CI half-width shrinks as
    1/sqrt(n), so n must grow by (half-width / distance)^2. None when the estimate sits on the line."""
    half = (ci[1] - ci[0]) / 2
    distance = abs(estimate - threshold)
    if distance <= 1e-9 or not math.isfinite(half):
        return None
    return max(0, math.ceil(n_frames * (half / distance) ** 2) - n_frames)


def decide_fine_tuning(recall: float, recall_ci: list[float], median_conf: float, conf_ci: list[float], n_frames: int,
           thresholds: GateThresholds = GateThresholds()) -> GateDecision:
    checks = [("recall", recall, recall_ci, thresholds.min_recall),
              ("median best-box confidence", median_conf, conf_ci, thresholds.min_median_conf)]
    if thresholds.rule == "point":
        return _decide_on_points(checks, thresholds)
    reasons, failed, straddling, extra = [], False, False, []
    for name, value, ci, threshold in checks:
        low, high = ci
        if any(map(math.isnan, (value, low, high))):
            straddling = True
            reasons.append(f"{name}: no interval could be computed (too few labelled videos)")
        elif low >= threshold:
            reasons.append(f"{name} {value:.3f}, CI [{low:.3f}, {high:.3f}] lies above {threshold}")
        elif high < threshold:
            failed = True
            reasons.append(f"{name} {value:.3f}, CI [{low:.3f}, {high:.3f}] lies below {threshold}")
        else:
            straddling = True
            reasons.append(f"{name} {value:.3f}, CI [{low:.3f}, {high:.3f}] straddles {threshold}")
            extra.append(_frames_needed(value, ci, threshold, n_frames))
    if failed:
        outcome, fine_tune = "fine_tune", True
    elif straddling:
        outcome, fine_tune = "inconclusive", thresholds.inconclusive_action == "fine_tune"
        reasons.append(f"inconclusive: configured action is '{thresholds.inconclusive_action}'")
    else:
        outcome, fine_tune = "skip_fine_tuning", False
    known = [e for e in extra if e is not None]
    return GateDecision(outcome, fine_tune, reasons, max(known) if known else None, asdict(thresholds))


def _decide_on_points(checks: list, thresholds: GateThresholds) -> GateDecision:
    """The plan's rule: both point estimates at or above their thresholds -> skip, else fine-tune."""
    reasons, failed = [], False
    for name, value, ci, threshold in checks:
        shown = f"{name} {value:.3f} (CI [{ci[0]:.3f}, {ci[1]:.3f}], reported only)"
        if math.isnan(value) or value < threshold:
            failed = True
            reasons.append(f"{shown} is below {threshold} (point-estimate rule)")
        else:
            reasons.append(f"{shown} is at or above {threshold} (point-estimate rule)")
    outcome = "fine_tune" if failed else "skip_fine_tuning"
    return GateDecision(outcome, failed, reasons, None, asdict(thresholds))
