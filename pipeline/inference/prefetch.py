"""Read and decode frames ahead of inference: a bounded prefetch on a background thread.

A frame source is a path, the JPEG/PNG bytes, or a zero-argument callable returning the bytes (for
instance a store read). The worker reads, decodes (OpenCV releases the GIL) and letterboxes whole
batches while the backend runs the previous one; at most `depth` batches wait, so memory stays
bounded whatever the number of frames. Errors surface in the consumer, naming the frame.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Union

import numpy as np

from pipeline.errors import PipelineInputError

Source = Union[str, Path, bytes, Callable[[], bytes], np.ndarray]
_DONE = object()


def decode_frame(key: str, source: Source) -> np.ndarray:
    """A BGR uint8 frame, or a PipelineInputError naming the frame."""
    import cv2

    if isinstance(source, np.ndarray):  # already decoded (a video frame)
        return source
    if callable(source):
        source = source()
    if isinstance(source, (bytes, bytearray, memoryview)):
        frame = cv2.imdecode(np.frombuffer(source, np.uint8), cv2.IMREAD_COLOR)
    else:
        frame = cv2.imread(str(source), cv2.IMREAD_COLOR)
    if frame is None:
        raise PipelineInputError(str(key), "image", None if not isinstance(source, (str, Path)) else str(source),
                                 "check the frame exists and is a readable JPEG/PNG", problem="unreadable image")
    return frame


def chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def prefetch(items: Iterable[tuple[str, Source]], work: Callable[[list[tuple[str, np.ndarray]]], object], *,
             batch: int, depth: int = 2) -> Iterator:
    """Yield `work(decoded chunk)` for consecutive chunks of `batch` frames, computed ahead on a thread."""
    if batch < 1 or depth < 1:
        raise ValueError(f"batch and depth must be >= 1 (got {batch}, {depth})")
    out: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(value) -> bool:
        while not stop.is_set():
            try:
                out.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def worker() -> None:
        try:
            for chunk in chunks(items, batch):
                if not put(work([(key, decode_frame(key, src)) for key, src in chunk])):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer
            put(exc)

    thread = threading.Thread(target=worker, name="frame-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            value = out.get()
            if value is _DONE:
                return
            if isinstance(value, BaseException):
                raise value
            yield value
    finally:
        stop.set()
        thread.join(timeout=5)
