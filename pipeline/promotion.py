"""The promotion gate: a candidate replaces production only when the offline comparison and the
shadow run both pass, and the shadow run lasted long enough. Every check is listed with its value
and threshold; every refusal has a sentence that says which check failed, by how much, and where.

Refusal kinds (the first words of each reason):

* `comparison worse`   - on a gated subset (frozen test, deployment test, held-out hard examples) the
  candidate's per-frame recall or median best confidence is lower than production's by more than
  allowed, or significantly lower (the paired, by-video bootstrap CI lies below 0);
* `comparison missing` - no comparison, or no labelled person on the frozen test frames;
* `missing shadow logs` - nothing under `shadow/<version>/logs/`, or no frame both models logged;
* `shadow too short`   - the logs span less than `min_shadow_hours` (default 24 h) or too few frames;
* `shadow disagreement` - on some camera the models agree on too few boxes, detect people at rates
  too far apart, or the candidate's confidence drops too much;
* `shadow latency`     - the candidate's p95 latency is too far above production's;
* `simulated shadow`   - the shadow logs were simulated (replayed on this machine), not written by the
  device; only a deployment that allows it (local demo) accepts them, and it says so everywhere;
* `superseded`         - a newer version is already production;
* `rolled back`        - this version was rolled back from production before (not re-promoted unless
  the operator allows it).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from pipeline.versioning import is_version, parse_version

GATED_SUBSETS = ("test", "deployment_test", "hard_held_out")
SUBSET_NAMES = {"test": "the frozen test split", "deployment_test": "the deployment test set",
                "hard_held_out": "the month's held-out hard examples",
                "hard_trained": "the month's trained hard examples"}


@dataclass(frozen=True)
class PromotionThresholds:
    max_recall_drop: float = 0.02  # candidate recall may be at most this much below production's
    max_conf_drop: float = 0.05  # same for the median best-box confidence
    refuse_significantly_worse: bool = True  # refuse when the recall-difference CI lies below 0
    gated_subsets: tuple[str, ...] = GATED_SUBSETS
    min_shadow_hours: float = 24.0  # the plan: 24 h in shadow before a swap
    min_shadow_frames: int = 10
    min_agreement: float = 0.80  # per camera
    max_detection_rate_diff: float = 0.10  # per camera, either direction
    max_shadow_conf_drop: float = 0.10  # per camera, mean best confidence
    max_latency_ratio: float = 1.25  # candidate p95 / production p95
    allow_rolled_back: bool = False
    allow_simulated_shadow: bool = False  # set by the deployment (local: yes, prod: never), not by operators

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Decision:
    promote: bool
    reasons: list[str] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"promote": self.promote, "reasons": list(self.reasons), "checks": list(self.checks)}


def _check(checks: list, kind: str, subject: str, value, threshold, passed: bool, reason: str = "") -> None:
    checks.append({"kind": kind, "subject": subject, "value": value, "threshold": threshold, "passed": bool(passed),
                   "reason": "" if passed else f"{kind}: {reason}"})


def _finite(value) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def comparison_checks(comparison: dict | None, t: PromotionThresholds) -> list[dict]:
    checks: list[dict] = []
    subsets = (comparison or {}).get("subsets") or {}
    test = subsets.get("test")
    if not comparison or not test or not _finite(test.get("recall_diff")):
        _check(checks, "comparison missing", "test", None, "required", False,
               "no candidate-vs-production comparison on labelled frozen test frames")
    for name in t.gated_subsets:
        row = subsets.get(name)
        if not row or not _finite(row.get("recall_diff")):
            continue
        where = SUBSET_NAMES.get(name, name)
        diff = float(row["recall_diff"])
        _check(checks, "comparison worse", f"{name} recall", round(diff, 4), -t.max_recall_drop,
               diff >= -t.max_recall_drop,
               f"on {where} the candidate's recall is {abs(diff):.3f} lower than production's "
               f"({row['recall_b']:.3f} vs {row['recall_a']:.3f}; at most {t.max_recall_drop:.3f} lower allowed; "
               f"{row['frames']} frames, {row['videos']} videos)")
        ci = row.get("recall_diff_ci") or [float("nan"), float("nan")]
        if t.refuse_significantly_worse and _finite(ci[1]):
            _check(checks, "comparison worse", f"{name} recall CI", [round(ci[0], 4), round(ci[1], 4)], "upper >= 0",
                   ci[1] >= 0, f"on {where} the candidate is significantly worse: recall difference CI "
                               f"[{ci[0]:.3f}, {ci[1]:.3f}] lies below 0 (paired bootstrap by video)")
        conf = row.get("median_conf_diff")
        if _finite(conf):
            _check(checks, "comparison worse", f"{name} median confidence", round(float(conf), 4), -t.max_conf_drop,
                   conf >= -t.max_conf_drop,
                   f"on {where} the candidate's median best-box confidence is {abs(conf):.3f} lower than "
                   f"production's (at most {t.max_conf_drop:.3f} lower allowed)")
    return checks


def shadow_checks(shadow: dict | None, t: PromotionThresholds) -> list[dict]:
    checks: list[dict] = []
    if not shadow or (shadow.get("rows_candidate", 0) == 0 and shadow.get("rows_production", 0) == 0):
        where = (shadow or {}).get("logs_prefix", "shadow/<version>/logs/")
        _check(checks, "missing shadow logs", "logs", 0, "> 0 rows", False,
               f"no shadow logs of the candidate under {where}: deploy it in shadow mode and let the device upload "
               "its logs (locally: shadow_report with simulate: true)")
        return checks
    source = shadow.get("source", "device")
    if source != "device":
        _check(checks, "simulated shadow", "log source", source, "device" if not t.allow_simulated_shadow else
               "device (simulated allowed here)", t.allow_simulated_shadow,
               f"the shadow logs under {shadow.get('logs_prefix', 'shadow/<version>/logs/')} are {source}, not written "
               "by the device: deploy the engine in shadow mode on the Jetson and let it upload its logs "
               "(pipeline/shadow_device.py)")
    paired = int(shadow.get("paired_frames", 0))
    if paired == 0:
        _check(checks, "missing shadow logs", "paired frames", 0, "> 0", False,
               f"{shadow.get('rows_candidate', 0)} candidate and {shadow.get('rows_production', 0)} production rows, "
               "but no frame logged by both (rows pair on camera and timestamp)")
        return checks
    hours = float(shadow.get("period_h") or 0.0)
    _check(checks, "shadow too short", "period_h", round(hours, 2), t.min_shadow_hours, hours >= t.min_shadow_hours,
           f"the shadow logs span {hours:.1f} h ({shadow.get('period_start')} to {shadow.get('period_end')}); "
           f"at least {t.min_shadow_hours:g} h required")
    _check(checks, "shadow too short", "paired frames", paired, t.min_shadow_frames, paired >= t.min_shadow_frames,
           f"{paired} frames logged by both models; at least {t.min_shadow_frames} required")
    for cam in shadow.get("per_camera", []):
        camera = cam["camera"]
        _check(checks, "shadow disagreement", f"{camera} agreement", round(cam["agreement"], 4), t.min_agreement,
               cam["agreement"] >= t.min_agreement,
               f"on {camera} the models agree on {cam['agreement']:.2f} of boxes (at least {t.min_agreement:.2f} "
               f"required; {cam['frames']} frames)")
        diff = cam["detection_rate_diff"]
        _check(checks, "shadow disagreement", f"{camera} detection rate", round(diff, 4),
               f"±{t.max_detection_rate_diff}", abs(diff) <= t.max_detection_rate_diff,
               f"on {camera} the candidate reports a person on {cam['detection_rate_candidate']:.2f} of frames, "
               f"production on {cam['detection_rate_production']:.2f} (difference {diff:+.2f}, at most "
               f"±{t.max_detection_rate_diff:.2f})")
        conf = cam["conf_diff"]
        _check(checks, "shadow disagreement", f"{camera} confidence", round(conf, 4), -t.max_shadow_conf_drop,
               conf >= -t.max_shadow_conf_drop,
               f"on {camera} the candidate's mean best confidence is {abs(conf):.3f} lower than production's "
               f"(at most {t.max_shadow_conf_drop:.3f} lower allowed)")
    overall = shadow.get("overall") or {}
    ratio = overall.get("latency_p95_ratio")
    if _finite(ratio):
        _check(checks, "shadow latency", "p95 latency ratio", round(ratio, 3), t.max_latency_ratio,
               ratio <= t.max_latency_ratio,
               f"the candidate's p95 latency {overall['latency_p95_candidate_ms']:.1f} ms is {ratio:.2f}x "
               f"production's {overall['latency_p95_production_ms']:.1f} ms (at most {t.max_latency_ratio:.2f}x)")
    return checks


def decide_promotion(comparison: dict | None, shadow: dict | None, thresholds: PromotionThresholds = PromotionThresholds(),
           *, rolled_back_entry: dict | None = None, candidate: str | None = None,
           production: str | None = None) -> Decision:
    """Promote only when every check passes; otherwise refuse with every failing check's reason."""
    checks = comparison_checks(comparison, thresholds) + shadow_checks(shadow, thresholds)
    if candidate and production and is_version(candidate) and is_version(production) and \
            parse_version(production) > parse_version(candidate):
        _check(checks, "superseded", "production version", production, f"<= {candidate}", False,
               f"production is already {production}, newer than {candidate}")
    if rolled_back_entry is not None:
        _check(checks, "rolled back", "history", rolled_back_entry.get("at"), "never rolled back",
               thresholds.allow_rolled_back,
               f"this version was rolled back from production at {rolled_back_entry.get('at')} "
               f"({rolled_back_entry.get('why') or 'no reason given'}); set allow_rolled_back to promote it again")
    reasons = [c["reason"] for c in checks if not c["passed"]]
    return Decision(promote=not reasons, reasons=reasons, checks=checks)
