"""Base weights: resolve what configuration names, say exactly what was used, refuse the unknown.

Model weights are pickles: a `.pt` file is loaded only when its sha256 is on the allow-list (the
official COCO YOLOv8n and the pipeline's own outputs) — loading an unknown pickle runs its code.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.errors import PipelineInputError
from pipeline.hashing import sha256_file

OFFICIAL_YOLOV8N_SHA256 = "f59b3d833e2ff32e194b5bb8e08d211dc7c5bdf144b90d2c8412c47ccfc83b36"
OFFICIAL_WEIGHTS = {OFFICIAL_YOLOV8N_SHA256: "yolov8n.pt (official COCO, Ultralytics)"}
UNTRAINED_WARNING = "baseline is untrained: not a Stage A measurement"


@dataclass(frozen=True)
class ResolvedWeights:
    source: str  # what configuration asked for
    path: str  # what is loaded (a .pt file, or an architecture .yaml when untrained)
    sha256: str | None
    official_coco: bool
    untrained: bool
    note: str

    def to_metadata(self) -> dict:
        return asdict(self)


def check_allowed(path: Path, allowed: dict[str, str], setting: str = "LBZF_BASE_WEIGHTS") -> str:
    """sha256 of `path` if it is on the allow-list, else a clear refusal."""
    digest = sha256_file(path)
    if digest not in allowed:
        raise PipelineInputError(str(path), setting, digest,
                                 "weights are pickles and load only when their sha256 is allow-listed: use the "
                                 "official yolov8n.pt or a model this pipeline produced, or add the hash to "
                                 "LBZF_ALLOWED_WEIGHTS after checking where the file came from",
                                 problem="weights not on the allow-list")
    return digest


def resolve_base_weights(setting: str, *, local_candidate: Path | None, allowed: dict[str, str],
                         allow_untrained: bool = True, architecture: str = "yolov8n.yaml") -> ResolvedWeights:
    """Resolve `LBZF_BASE_WEIGHTS`. `local_candidate` is the file the setting points to after any
    download from storage (None if nothing could be fetched). Falls back to the untrained
    architecture only when allowed, and then says so loudly."""
    if local_candidate is not None and Path(local_candidate).exists():
        digest = check_allowed(Path(local_candidate), allowed)
        official = digest in OFFICIAL_WEIGHTS
        return ResolvedWeights(setting, str(local_candidate), digest, official, False,
                               OFFICIAL_WEIGHTS.get(digest, allowed[digest]))
    if not allow_untrained:
        raise PipelineInputError(setting, "LBZF_BASE_WEIGHTS", setting,
                                 "place yolov8n.pt (sha256 " + OFFICIAL_YOLOV8N_SHA256[:12] + "...) at that path or "
                                 "storage key, or allow the untrained fallback for a demo", problem="weights not found")
    return ResolvedWeights(setting, architecture, None, False, True,
                           f"{UNTRAINED_WARNING} ('{setting}' could not be found or downloaded here; "
                           f"the {architecture} architecture with random weights stands in)")
