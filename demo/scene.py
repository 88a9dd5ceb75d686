"""A virtual camera moving over a labelled photograph: frames and their exact person boxes.

The camera is a crop window (centre, width) mapped onto the output size by a pure scale and shift,
so every labelled box transforms exactly; a mirrored camera flips x as well.
"""
from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

_TRUTH = Path(__file__).with_name("ground_truth.json")
MIN_VISIBLE_FRACTION = 0.2  # a person cut down to less than this share of their box is not labelled,
MIN_FRAME_SHARE = 0.08  # unless what is visible still fills this share of the frame
MIN_BOX_PX = 6.0


@dataclass(frozen=True)
class Photo:
    name: str
    image: np.ndarray  # BGR
    persons: tuple[tuple[float, float, float, float], ...]

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


def _package_file(spec: str) -> Path:
    package, relative = spec.split(":", 1)
    found = importlib.util.find_spec(package)
    if found is None or found.origin is None:
        raise FileNotFoundError(f"demo photo source package '{package}' is not installed (needed for {spec})")
    return Path(found.origin).parent / relative


@lru_cache(maxsize=None)
def load_photos() -> tuple[Photo, ...]:
    """The hand-labelled photographs, in a fixed order."""
    truth = json.loads(_TRUTH.read_text())
    photos = []
    for name in sorted(k for k in truth if not k.startswith("_")):
        entry = truth[name]
        path = _package_file(entry["source"])
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f"demo photo {path} could not be read")
        if [image.shape[1], image.shape[0]] != entry["size"]:
            raise ValueError(f"demo photo {path} is {image.shape[1]}x{image.shape[0]}, ground truth expects {entry['size']}")
        photos.append(Photo(name, image, tuple(tuple(map(float, b)) for b in entry["persons"])))
    return tuple(photos)


def photo_source_path(name: str) -> Path:
    truth = json.loads(_TRUTH.read_text())
    return _package_file(truth[name]["source"])


@dataclass(frozen=True)
class View:
    """Crop window on the photo: centre (cx, cy) and width cw; height follows the output aspect."""

    cx: float
    cy: float
    cw: float
    mirrored: bool = False


def clamp_view(photo: Photo, view: View, out_w: int, out_h: int) -> View:
    max_cw = min(photo.width, photo.height * out_w / out_h)
    cw = float(np.clip(view.cw, 0.2 * max_cw, max_cw))
    ch = cw * out_h / out_w
    cx = float(np.clip(view.cx, cw / 2, photo.width - cw / 2))
    cy = float(np.clip(view.cy, ch / 2, photo.height - ch / 2))
    return View(cx, cy, cw, view.mirrored)


def _affine(view: View, out_w: int, out_h: int) -> np.ndarray:
    scale = out_w / view.cw
    x0 = view.cx - view.cw / 2
    y0 = view.cy - view.cw * out_h / out_w / 2
    if view.mirrored:
        return np.array([[-scale, 0.0, (x0 + view.cw) * scale], [0.0, scale, -y0 * scale]])
    return np.array([[scale, 0.0, -x0 * scale], [0.0, scale, -y0 * scale]])


def render(photo: Photo, view: View, out_w: int, out_h: int, gain: float = 1.0) -> np.ndarray:
    """BGR frame seen through the view."""
    frame = cv2.warpAffine(photo.image, _affine(view, out_w, out_h), (out_w, out_h), flags=cv2.INTER_AREA,
                           borderMode=cv2.BORDER_REFLECT)
    if gain != 1.0:
        frame = cv2.convertScaleAbs(frame, alpha=gain, beta=0)
    return frame


def boxes_in_view(photo: Photo, view: View, out_w: int, out_h: int) -> list[tuple[float, float, float, float]]:
    """Person boxes in output pixels, clipped to the frame; people mostly out of view are dropped."""
    m = _affine(view, out_w, out_h)
    result = []
    for x1, y1, x2, y2 in photo.persons:
        xs = sorted((m[0, 0] * x1 + m[0, 2], m[0, 0] * x2 + m[0, 2]))
        ys = sorted((m[1, 1] * y1 + m[1, 2], m[1, 1] * y2 + m[1, 2]))
        full = (xs[1] - xs[0]) * (ys[1] - ys[0])
        cx1, cx2 = max(0.0, xs[0]), min(float(out_w), xs[1])
        cy1, cy2 = max(0.0, ys[0]), min(float(out_h), ys[1])
        if cx2 - cx1 < MIN_BOX_PX or cy2 - cy1 < MIN_BOX_PX:
            continue
        visible = (cx2 - cx1) * (cy2 - cy1)
        if visible < MIN_VISIBLE_FRACTION * full and visible < MIN_FRAME_SHARE * out_w * out_h:
            continue  # a sliver of someone at the edge: annotators leave it
        result.append((cx1, cy1, cx2, cy2))
    return result
