"""Letterboxing exactly as Ultralytics does it (data/augment.py `LetterBox`), batched.

A frame is resized (bilinear, aspect kept) to fit `imgsz`, then padded with grey 114 on both sides
(the odd pixel to the bottom/right). Two modes, the two Ultralytics uses at prediction time:

* rect (`auto=True`): pad only up to the next multiple of the stride (1280x720 at 640 -> 640x384).
  Ultralytics predicts this way with PyTorch weights and dynamic-shape exports, when every image of
  a batch has the same shape.
* fixed (`shape=(H, W)`): pad up to exactly that input, as a static ONNX export or a TensorRT
  engine needs.

`Letterboxed` keeps what it takes to map boxes back to the frame (`scale_boxes`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAD_VALUE = 114


@dataclass(frozen=True)
class Geometry:
    """How one frame was placed into the network input."""
    frame_shape: tuple[int, int]  # (h, w) of the decoded frame
    input_shape: tuple[int, int]  # (H, W) of the network input
    resized: tuple[int, int]  # (w, h) the frame was resized to
    top: int
    left: int

    @property
    def gain(self) -> tuple[float, float]:  # (gain_y, gain_x) = resized / frame
        return self.resized[1] / self.frame_shape[0], self.resized[0] / self.frame_shape[1]


def geometry(frame_shape: tuple[int, int], imgsz: int | tuple[int, int], *, stride: int = 32,
             auto: bool = True) -> Geometry:
    """Where a frame of `frame_shape` (h, w) goes: Ultralytics' LetterBox.get_params (scaleup on, centred)."""
    h, w = int(frame_shape[0]), int(frame_shape[1])
    new_h, new_w = (imgsz, imgsz) if isinstance(imgsz, int) else (int(imgsz[0]), int(imgsz[1]))
    r = min(new_h / h, new_w / w)
    unpad_w, unpad_h = max(round(w * r), 1), max(round(h * r), 1)
    dw, dh = new_w - unpad_w, new_h - unpad_h
    if auto:
        dw, dh = int(np.mod(dw, stride)), int(np.mod(dh, stride))
    dw, dh = dw / 2, dh / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    return Geometry((h, w), (unpad_h + top + bottom, unpad_w + left + right), (unpad_w, unpad_h), top, left)


def place(frame_bgr: np.ndarray, geo: Geometry, out_hwc: np.ndarray) -> None:
    """Write the letterboxed frame into `out_hwc` (uint8 HWC BGR of geo.input_shape)."""
    import cv2

    out_hwc[...] = PAD_VALUE
    w, h = geo.resized
    resized = frame_bgr if (frame_bgr.shape[1], frame_bgr.shape[0]) == (w, h) else \
        cv2.resize(frame_bgr, (w, h), interpolation=cv2.INTER_LINEAR)
    out_hwc[geo.top:geo.top + h, geo.left:geo.left + w] = resized


def letterbox_one(frame_bgr: np.ndarray, imgsz: int | tuple[int, int], *, stride: int = 32,
                  auto: bool = True) -> tuple[np.ndarray, Geometry]:
    """One frame -> letterboxed uint8 HWC BGR and its geometry."""
    geo = geometry(frame_bgr.shape[:2], imgsz, stride=stride, auto=auto)
    out = np.empty((*geo.input_shape, 3), dtype=np.uint8)
    place(frame_bgr, geo, out)
    return out, geo


@dataclass
class Batch:
    """Frames of one input shape, letterboxed into one (N, 3, H, W) float32 RGB [0, 1] array."""
    keys: list[str]
    tensor: np.ndarray
    geometries: list[Geometry]


def to_tensor(boxed_hwc: np.ndarray) -> np.ndarray:
    """Letterboxed uint8 (N,) H, W, 3 BGR -> float32 (N,) 3, H, W RGB in [0, 1] (what Ultralytics feeds)."""
    arr = boxed_hwc if boxed_hwc.ndim == 4 else boxed_hwc[None]
    out = np.empty((arr.shape[0], 3, arr.shape[1], arr.shape[2]), dtype=np.float32)
    for c in range(3):  # BGR -> RGB while moving channels first
        out[:, c] = arr[..., 2 - c]
    out /= np.float32(255.0)  # a division, bit for bit what Ultralytics (and the calibration loader) compute
    return out


def letterbox_batches(items: list[tuple[str, np.ndarray]], imgsz: int | tuple[int, int], *, stride: int = 32,
                      fixed_shape: tuple[int, int] | None = None) -> list[Batch]:
    """Letterbox (key, BGR frame) pairs, keeping order, into batches of one input shape each.

    Rect mode (no `fixed_shape`) letterboxes each frame to its own minimal rectangle, so a frame gets
    exactly the input that Ultralytics' predict gives it on its own; consecutive frames of the same
    shape share a batch. With `fixed_shape` every frame is padded to that (H, W)."""
    batches: list[Batch] = []
    current: list[tuple[str, np.ndarray, Geometry]] = []

    def flush() -> None:
        if current:
            hwc = np.empty((len(current), *current[0][2].input_shape, 3), dtype=np.uint8)
            for i, (_, frame, geo) in enumerate(current):
                place(frame, geo, hwc[i])
            batches.append(Batch([k for k, _, _ in current], to_tensor(hwc), [g for _, _, g in current]))
            current.clear()

    for key, frame in items:
        geo = geometry(frame.shape[:2], fixed_shape or imgsz, stride=stride, auto=fixed_shape is None)
        if current and current[0][2].input_shape != geo.input_shape:
            flush()
        current.append((key, frame, geo))
    flush()
    return batches
