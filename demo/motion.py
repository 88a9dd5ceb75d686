"""Camera paths for demo clips: a quiet hold, an active stretch (the operator working), jitter."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from demo.scene import Photo, View, clamp_view


@dataclass(frozen=True)
class CameraPath:
    photo: Photo
    views: tuple[View, ...]  # one per frame
    fps: float
    active_start_s: float
    active_end_s: float

    def view_at(self, t_s: float) -> View:
        """View of the frame shown at time t (the last frame whose timestamp is <= t)."""
        index = int(np.floor(t_s * self.fps + 1e-6))
        return self.views[min(max(index, 0), len(self.views) - 1)]


def _empty_view(photo: Photo, rng: np.random.Generator, out_w: int, out_h: int, mirrored: bool) -> View | None:
    """A view that shows nobody, if the photo has room above everyone's head."""
    top = min(b[1] for b in photo.persons)
    cw = min(photo.width * 0.6, top * 0.95 * out_w / out_h)
    if cw < 0.3 * photo.width:
        return None
    ch = cw * out_h / out_w
    return View(float(rng.uniform(cw / 2, photo.width - cw / 2)), ch / 2 + 1, cw, mirrored)


def make_path(photo: Photo, rng: np.random.Generator, *, duration_s: float, fps: float, out_w: int, out_h: int,
              active_s: float, mirrored: bool = False, with_empty: bool = True) -> CameraPath:
    """Hold still, then move (pan/zoom every ~3 s) for `active_s` seconds, then hold again."""
    n = int(round(duration_s * fps))
    max_cw = min(photo.width, photo.height * out_w / out_h)
    xs = [b[0] for b in photo.persons] + [b[2] for b in photo.persons]
    ys = [b[1] for b in photo.persons] + [b[3] for b in photo.persons]
    centre = ((min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2)

    def random_view() -> View:
        cw = rng.uniform(0.55, 1.0) * max_cw
        return View(centre[0] + rng.normal(0, 0.15) * photo.width, centre[1] + rng.normal(0, 0.1) * photo.height,
                    cw, mirrored)

    active_s = min(active_s, duration_s * 0.8)
    start = float(rng.uniform(0.1, 0.9) * (duration_s - active_s))
    end = start + active_s
    hold = clamp_view(photo, random_view(), out_w, out_h)
    waypoints = [(0.0, hold), (start, hold)]
    t = start
    empty = _empty_view(photo, rng, out_w, out_h, mirrored) if with_empty else None
    while t + 3.0 < end:
        t += float(rng.uniform(2.5, 3.5))
        use_empty = empty is not None and rng.random() < 0.25
        waypoints.append((t, clamp_view(photo, empty if use_empty else random_view(), out_w, out_h)))
    last = waypoints[-1][1]
    waypoints += [(end, last), (duration_s + 1.0, last)]

    views = []
    times = np.array([w[0] for w in waypoints])
    for i in range(n):
        t_i = i / fps
        k = int(np.searchsorted(times, t_i, side="right")) - 1
        (ta, va), (tb, vb) = waypoints[k], waypoints[min(k + 1, len(waypoints) - 1)]
        a = 0.0 if tb <= ta else (t_i - ta) / (tb - ta)
        a = a * a * (3 - 2 * a)  # smoothstep: the camera eases in and out like a person turning it
        jitter = 0.012 if start <= t_i <= end else 0.002
        v = View(va.cx + a * (vb.cx - va.cx) + rng.normal(0, jitter) * va.cw,
                 va.cy + a * (vb.cy - va.cy) + rng.normal(0, jitter) * va.cw,
                 va.cw + a * (vb.cw - va.cw), mirrored)
        views.append(clamp_view(photo, v, out_w, out_h))
    return CameraPath(photo, tuple(views), fps, start, end)
