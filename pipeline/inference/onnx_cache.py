"""The pipeline's own ONNX of a weights file, exported once and cached by the weights' sha256.

Dynamic shape (batch, height, width free) so frames keep Ultralytics' minimal-rectangle letterbox:
the same input PyTorch predict sees, which is both faster than a square input and what makes
parity with PyTorch exact up to float rounding. The cache is content-addressed: the file name holds
the weights' sha256, imgsz and opset; it is written under a temporary name and renamed into place,
so a crash never leaves a half-written model that a later pass would trust.
"""
from __future__ import annotations

import os
from pathlib import Path

from pipeline.hashing import sha256_file

DEFAULT_CACHE = Path(os.path.expanduser("~")) / ".cache" / "lbzf" / "onnx"


def cached_onnx(weights: Path, *, imgsz: int, cache_dir: Path | None = None, opset: int | None = None) -> tuple[Path, dict]:
    """(path of the dynamic ONNX of `weights`, {"sha256", "cached": True when it was already there})."""
    from pipeline.export import DEFAULT_OPSET, export_onnx

    opset = opset or DEFAULT_OPSET
    cache_dir = Path(cache_dir or DEFAULT_CACHE)
    digest = sha256_file(weights)
    target = cache_dir / f"{digest}-{imgsz}-dynamic-opset{opset}.onnx"
    info = {"weights_sha256": digest, "onnx": str(target), "cached": target.is_file()}
    if target.is_file():
        return target, info
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = cache_dir / f".{target.stem}.{os.getpid()}.partial.onnx"
    try:
        export_onnx(Path(weights), partial, imgsz=imgsz, opset=opset, dynamic=True)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target, info
