"""What the deployment asks of every detection pass: the device, a forced backend, the ONNX cache."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.inference.onnx_cache import DEFAULT_CACHE


@dataclass(frozen=True)
class InferenceSettings:
    device: str = "cpu"  # "cpu", or a GPU index ("0")
    backend: str = "auto"  # auto | tensorrt | onnxruntime | torch
    cache_dir: Path = DEFAULT_CACHE

    def kwargs(self) -> dict:
        """Keyword arguments for `pipeline.detector.detect_persons`."""
        return {"device": self.device, "backend": self.backend, "cache_dir": self.cache_dir}

    def to_metadata(self) -> dict:
        return {k: str(v) for k, v in asdict(self).items()}
