"""Write H.264 clips with PyAV (the same library family the extractor decodes with)."""
from __future__ import annotations

import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_h264(path: Path, frames_bgr: Iterable[np.ndarray], *, fps: float, gop_frames: int, crf: int = 23) -> None:
    """Encode BGR frames as a constant-rate H.264 MP4, atomically (temp name, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    rate = Fraction(fps).limit_denominator(1001)
    try:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = None
            for frame_bgr in frames_bgr:
                if stream is None:
                    stream = container.add_stream("libx264", rate=rate)
                    stream.height, stream.width = frame_bgr.shape[:2]
                    stream.pix_fmt = "yuv420p"
                    # Fixed GOP, one thread: the demo store is byte-for-byte reproducible from its seed.
                    stream.options = {"g": str(gop_frames), "keyint_min": str(gop_frames), "sc_threshold": "0",
                                      "crf": str(crf), "preset": "veryfast", "threads": "1", "bf": "2"}
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_bgr), format="bgr24")
                container.mux(stream.encode(frame))
            if stream is not None:
                container.mux(stream.encode(None))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
