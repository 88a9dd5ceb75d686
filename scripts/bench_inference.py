"""Stage A throughput: the pipeline's detector loop vs plain Ultralytics predict on the same frames.

Usage: .venv/bin/python scripts/bench_inference.py [--frames N] [--imgsz 640] [--weights yolov8n.yaml]
Both run in this process, on the same JPEGs, with the same model object, alternating, best of 3.
The figures are ratios against the plain-predict reference measured in the same run.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np


def _frames(folder: Path, n: int) -> list[Path]:
    """Real photographs (the demo's scenes) cropped and scaled like camera frames."""
    from demo.scene import View, clamp_view, load_photos, render

    rng = np.random.default_rng(0)
    paths = []
    photos = load_photos()
    for i in range(n):
        photo = photos[i % len(photos)]
        view = clamp_view(photo, View(photo.width * rng.uniform(0.3, 0.7), photo.height * rng.uniform(0.3, 0.7),
                                      photo.width * rng.uniform(0.5, 1.0)), 1280, 720)
        path = folder / f"{i:05d}.jpg"
        cv2.imwrite(str(path), render(photo, view, 1280, 720))
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--weights", default="yolov8n.yaml")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--conf", type=float, default=0.001, help="the same threshold for both (Stage A uses 0.001)")
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()

    from pipeline.detector import load_model, predict_persons

    with tempfile.TemporaryDirectory() as tmp:
        paths = _frames(Path(tmp), args.frames)
        model = load_model(args.weights)
        model.predict([str(paths[0])], imgsz=args.imgsz, device=args.device, verbose=False)  # warm-up

        def plain() -> None:
            for p in paths:  # what a notebook does: predict frame by frame, default settings, person class
                model.predict(str(p), imgsz=args.imgsz, conf=args.conf, classes=[0], device=args.device,
                              verbose=False)

        def ours() -> None:
            predict_persons(model, [(p.name, p) for p in paths], imgsz=args.imgsz, conf=args.conf,
                            batch=args.batch, device=args.device)

        best = {"plain": float("inf"), "ours": float("inf")}
        for _ in range(3):
            for name, fn in (("plain", plain), ("ours", ours)):
                start = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - start)
    for name, seconds in best.items():
        print(f"{name:6s} {args.frames / seconds:7.1f} images/s  ({seconds:.2f} s for {args.frames} frames)")
    print(f"ratio ours/plain throughput: {best['plain'] / best['ours']:.2f}x (>= 1.0 is the goal)")


if __name__ == "__main__":
    main()
