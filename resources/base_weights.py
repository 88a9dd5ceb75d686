"""The off-the-shelf model, as configuration: a path, a storage key, or `yolov8n.pt`."""
from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from pipeline.hashing import sha256_file
from pipeline.weights import OFFICIAL_WEIGHTS, ResolvedWeights, resolve_base_weights, untrained_stand_in
from resources.storage import ArtifactStore


class BaseWeights(dg.ConfigurableResource):
    """`setting` is LBZF_BASE_WEIGHTS. `allow_untrained` lets a demo without pretrained weights run,
    with every report saying so. `extra_allowed_sha256` extends the pickle allow-list."""

    setting: str = "yolov8n.pt"
    allow_untrained: bool = True
    extra_allowed_sha256: list[str] = []

    def allowed(self, produced: dict[str, str] | None = None) -> dict[str, str]:
        allowed = dict(OFFICIAL_WEIGHTS)
        allowed.update({h: "allow-listed by LBZF_ALLOWED_WEIGHTS" for h in self.extra_allowed_sha256})
        allowed.update(produced or {})
        return allowed

    def resolve(self, store: ArtifactStore, cache_dir: Path, model: str = "yolov8n") -> ResolvedWeights:
        """Weights for `model`: the configured setting for YOLOv8n (the plan's model); for another
        architecture of a training profile, its official `<model>.pt` name."""
        setting = self.setting if model == "yolov8n" else f"{model}.pt"
        candidate = self.model_copy(update={"setting": setting})._fetch(store, Path(cache_dir))
        resolved = resolve_base_weights(setting, local_candidate=candidate, allowed=self.allowed(),
                                        allow_untrained=self.allow_untrained, architecture=f"{model}.yaml")
        return untrained_stand_in(store, Path(cache_dir), resolved) if resolved.untrained else resolved

    def _fetch(self, store: ArtifactStore, cache_dir: Path) -> Path | None:
        path = Path(os.path.expanduser(self.setting))
        if path.is_file():
            return path
        if "/" in self.setting and store.exists(self.setting):
            target = cache_dir / Path(self.setting).name
            if not target.exists() or (store.stat(self.setting).size != target.stat().st_size):
                store.download_file(self.setting, target)
            return target
        if self.setting.endswith(".pt") and "/" not in self.setting:
            return _ultralytics_download(self.setting, cache_dir)
        return None


def _ultralytics_download(name: str, cache_dir: Path) -> Path | None:
    """Ask Ultralytics for an official asset (works on a connected machine; offline it fails fast)."""
    from pipeline.offline import configure_offline

    configure_offline()
    if os.environ.get("YOLO_OFFLINE", "").lower() in {"1", "true", "yes"}:
        return None
    from ultralytics.utils.downloads import attempt_download_asset

    try:
        found = Path(attempt_download_asset(str(cache_dir / name)))
    except Exception:  # noqa: BLE001 - any download failure means "not available here"
        return None
    return found if found.is_file() and sha256_file(found) else None
