"""Detection throughput of every available backend against plain Ultralytics predict.

Usage: .venv/bin/python scripts/bench_inference.py [--frames 64] [--conf 0.001] [--json FILE]
       [--weights yolov8n.yaml|model.pt] [--device cpu|0] [--engine model.engine]

Same model (the weights are saved once, so every backend holds the same numbers), the same real
1280x720 JPEGs (the demo's plant photographs, cropped like camera frames), the same process,
alternating runs, best of 3. "plain" is what a notebook does: `model.predict(path)` frame by frame
(person class, same conf and iou). Each backend runs a whole pipeline pass (`pipeline.detector.run_pass`:
prefetching reader, batched letterbox, backend, NumPy NMS); the one-time backend choice (export,
load, parity proof) is timed separately. Parity: every backend's boxes against plain predict's on
all frames, with the pipeline's stated tolerance (`pipeline.inference.parity`).
"""
from __future__ import annotations

import argparse
import json
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


def _untrained_but_busy(model, paths: list[Path], imgsz: int, cls_bias: float) -> None:
    """Official COCO weights cannot be downloaded here, so the model is the YOLOv8n architecture
    with seeded random weights. As it comes, its activations vanish layer by layer and its class
    biases (-11.5 at stride 8) keep every score near 1e-5: no box clears conf 0.001, parity would
    compare nothing and NMS would cost nothing. So: batch-norm statistics re-estimated on the frames
    (one forward pass in train mode, as tests/test_export.py does) and the class biases set to
    `cls_bias`, which gives a pretrained model's load at conf 0.001 (hundreds of candidate boxes
    per frame, up to max_det 300 kept). No training."""
    import torch

    from pipeline.inference.letterbox import letterbox_batches

    frames = [(p.name, cv2.imread(str(p))) for p in paths[:16]]
    (batch,) = letterbox_batches(frames, imgsz)
    for module in model.model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    model.model.train()
    with torch.no_grad():
        model.model(torch.from_numpy(batch.tensor))
    model.model.eval()
    head = model.model.model[-1]
    with torch.no_grad():
        for seq in head.cv3:  # the class branch of each stride: its last conv's bias
            seq[-1].bias.fill_(cls_bias)


def _per_frame(rows, keys: list[str]) -> list[np.ndarray]:
    return [rows.loc[rows["frame_key"] == k, ["x1", "y1", "x2", "y2", "conf"]].to_numpy() for k in keys]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--weights", default="yolov8n.yaml")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--engine", default=None, help="a TensorRT engine of the same weights (GPU hosts)")
    parser.add_argument("--conf", type=float, default=0.001, help="Stage A uses 0.001")
    parser.add_argument("--iou", type=float, default=0.7)
    parser.add_argument("--batch", type=int, default=None, help="default: 4 on CPU, 16 on a GPU")
    parser.add_argument("--cls-bias", type=float, default=-7.0,
                        help="class bias of the untrained .yaml model (see _untrained_but_busy)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--verbose", action="store_true", help="print every run")
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args()

    import pandas as pd

    from pipeline.detector import load_model, open_pass_detector, run_pass
    from pipeline.inference.backends import BACKENDS_ON
    from pipeline.inference.parity import detection_parity

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = _frames(folder, args.frames)
        items = [(p.name, p) for p in paths]
        keys = [k for k, _ in items]
        import torch

        torch.manual_seed(0)
        model = load_model(args.weights)
        if args.weights.endswith(".yaml"):
            _untrained_but_busy(model, paths, args.imgsz, args.cls_bias)
        weights = folder / "model.pt"
        model.save(str(weights))  # one set of numbers for everyone (a .yaml would draw new random weights)
        model = load_model(weights)
        model.predict(str(paths[0]), imgsz=args.imgsz, device=args.device, verbose=False)  # warm-up

        detectors, selection, skipped = {}, {}, {}
        for name in BACKENDS_ON(args.device, engine=args.engine):
            started = time.perf_counter()
            det = open_pass_detector(weights, items, imgsz=args.imgsz, conf=args.conf, iou=args.iou,
                                     device=args.device, backend=name, engine=args.engine,
                                     cache_dir=folder / "onnx-cache")
            selection[name] = round(time.perf_counter() - started, 2)
            if det.backend.name != name:
                skipped[name] = det.record["tried"]
                continue
            detectors[name] = det
            run_pass(det, items[:2], batch=2)  # warm-up

        plain_rows: list = []

        def plain() -> None:
            plain_rows.clear()
            for p in paths:  # a notebook: predict frame by frame, person class
                r = model.predict(str(p), imgsz=args.imgsz, conf=args.conf, iou=args.iou, classes=[0],
                                  device=args.device, verbose=False)[0]
                plain_rows.extend([p.name, *b, c] for b, c in zip(r.boxes.xyxy.tolist(), r.boxes.conf.tolist()))

        tables: dict = {}
        runs = {"plain": plain}
        for name, det in detectors.items():
            runs[name] = (lambda d=det, n=name: tables.__setitem__(n, run_pass(d, items, batch=args.batch)[0]))
        best = {name: float("inf") for name in runs}
        for _ in range(args.repeats):
            for name, fn in runs.items():
                started = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - started)
                if args.verbose:
                    print(f"  {name}: {args.frames / (time.perf_counter() - started):.1f} images/s")

    plain_table = pd.DataFrame(plain_rows, columns=["frame_key", "x1", "y1", "x2", "y2", "conf"])
    ips = {name: args.frames / s for name, s in best.items()}
    parity = {name: detection_parity(_per_frame(plain_table, keys), _per_frame(t, keys), conf=args.conf).to_metadata()
              for name, t in tables.items()}
    proven = [n for n in detectors if parity[n]["passed"]]
    top = max(proven or detectors, key=lambda n: ips[n])
    result = {"backends": {n: round(ips[n], 2) for n in detectors}, "plain_predict": round(ips["plain"], 2),
              "best": top, "ratio_vs_plain": round(ips[top] / ips["plain"], 3), "parity": parity,
              "selection_s": selection, "not_available": skipped,
              "providers": {n: d.record.get("provider") for n, d in detectors.items()},
              "setup": {"frames": args.frames, "imgsz": args.imgsz, "conf": args.conf, "iou": args.iou,
                        "batch": args.batch, "device": args.device, "weights": args.weights,
                        "cls_bias": args.cls_bias if args.weights.endswith(".yaml") else None, "repeats": args.repeats}}
    print(f"{'what':14s} {'images/s':>9s} {'vs plain':>9s}  parity vs plain predict")
    print(f"{'plain predict':14s} {ips['plain']:9.1f} {1.0:8.2f}x  (reference; {len(plain_table)} boxes)")
    for n in detectors:
        p = parity[n]
        print(f"{n:14s} {ips[n]:9.1f} {ips[n] / ips['plain']:8.2f}x  {'PASS' if p['passed'] else 'FAIL'}: "
              f"{p['matched']}/{p['boxes_reference']} matched, min IoU {p['min_iou']}, max conf diff "
              f"{p['max_conf_diff']}, {p['borderline_unmatched']} borderline  [{detectors[n].record.get('provider')}]")
    for n, why in skipped.items():
        print(f"{n:14s} not available: " + "; ".join(f"{t['backend']}: {t['reason']}" for t in why))
    print(f"best: {top}, {result['ratio_vs_plain']:.2f}x plain predict (goal >= 1.5 with parity); "
          f"one-time backend choice: {selection}")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
