"""Build the demo raw store: operation videos + manifest, plant photos, buffer clips + quality logs,
and CVAT COCO 1.0 exports from two annotators. Deterministic for a seed.

Run: python -m demo.generate --root <dir> [--small]
"""
from __future__ import annotations

import argparse
import io
import json
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import keys
from demo.annotators import LabelledImage, careful, coco_export_zip, second_opinion
from demo.encode import write_h264
from demo.motion import CameraPath, make_path
from demo.scene import boxes_in_view, load_photos, photo_source_path, render
from pipeline.sampling import buffer_targets, every_n_seconds
from pipeline.stage_a_plan import OPERATIONS, plan_window, select_stage_a_videos

_SLUG = {"Collar": "collar", "Cuffs": "cuffs", "Back/yoke": "back_yoke", "Front": "front", "Assembly": "assembly",
         "Buttonholes & buttons": "buttonholes", "Inspection & pack": "inspection_pack"}


@dataclass(frozen=True)
class DemoConfig:
    seed: int = 7
    videos_per_category: int = 3
    post_install_videos: int = 3
    duration_s: float = 72.0
    fps: float = 5.0
    width: int = 480
    height: int = 272
    gop_s: float = 2.0
    active_s: float = 40.0
    ops_step_s: float = 2.0
    stage_a_window_s: float = 60.0
    stage_a_step_s: float = 5.0
    stage_a_per_category: int = 3
    overlap_frames: int = 50
    buffer_cameras: tuple[str, ...] = ("cam1", "cam2")
    buffer_days: tuple[str, ...] = ("2026-07-01", "2026-07-02", "2026-07-03")
    buffer_clip_starts: tuple[str, ...] = ("080000", "140000")
    buffer_clip_s: float = 120.0
    buffer_fps: float = 2.0
    quality_every_s: float = 10.0
    install_day: str = "2026-07-01"
    annotators: tuple[str, str] = ("sophia", "armando")
    extra: dict = field(default_factory=dict)


SMALL = DemoConfig(duration_s=24.0, active_s=12.0, stage_a_window_s=20.0, post_install_videos=2, overlap_frames=30,
                   buffer_days=("2026-07-01", "2026-07-02"), buffer_clip_s=60.0)


def _video_paths(config: DemoConfig, rng: np.random.Generator) -> list[tuple[dict, CameraPath]]:
    photos = load_photos()
    rows = []
    index = 0
    for op in OPERATIONS:
        for k in range(config.videos_per_category):
            day = f"2026-04-{10 + (index % 6):02d}"
            rows.append(({"video_id": f"op_{_SLUG[op]}_{k + 1:02d}", "operation": op,
                          "camera": f"phone_{'abc'[index % 3]}", "recorded_day": day, "post_install": False}, index))
            index += 1
    for k in range(config.post_install_videos):
        op = OPERATIONS[(k * 3) % len(OPERATIONS)]
        rows.append(({"video_id": f"line_{_SLUG[op]}_{k + 1:02d}", "operation": op,
                      "camera": config.buffer_cameras[k % len(config.buffer_cameras)],
                      "recorded_day": config.install_day, "post_install": True}, index))
        index += 1
    result = []
    for row, i in rows:
        photo = photos[(i + i // len(photos)) % len(photos)]  # every operation sees every scene
        path = make_path(photo, rng, duration_s=config.duration_s, fps=config.fps, out_w=config.width,
                         out_h=config.height, active_s=config.active_s, mirrored=bool((i // len(photos)) % 2))
        result.append((row, path))
    return result


def _frames(path: CameraPath, config: DemoConfig, gain: float):
    for view in path.views:
        yield render(path.photo, view, config.width, config.height, gain)


def _labelled(path: CameraPath, key: str, t: float, config: DemoConfig) -> LabelledImage:
    boxes = boxes_in_view(path.photo, path.view_at(t), config.width, config.height)
    return LabelledImage(keys.package_file_name(key), config.width, config.height, boxes)


def generate_demo(root: Path, config: DemoConfig = DemoConfig()) -> dict:
    """Write the raw store under `root` (local layout = storage keys). Returns a summary."""
    root = Path(root)
    rng = np.random.default_rng(config.seed)
    videos = _video_paths(config, rng)
    manifest_rows, ops_images = [], []
    video_files: dict[str, tuple[Path, CameraPath]] = {}
    for row, path in videos:
        file = root / keys.VIDEOS_PREFIX / f"{row['video_id']}.mp4"
        write_h264(file, _frames(path, config, float(rng.uniform(0.85, 1.15))), fps=config.fps,
                   gop_frames=int(round(config.gop_s * config.fps)))
        manifest_rows.append({**row, "key": f"{keys.VIDEOS_PREFIX}{row['video_id']}.mp4"})
        video_files[row["video_id"]] = (file, path)
        for t in every_n_seconds(config.duration_s, config.ops_step_s):
            ops_images.append(_labelled(path, keys.frame_key("ops", row["video_id"], t), t, config))
    manifest = pd.DataFrame(manifest_rows)[["video_id", "key", "operation", "camera", "recorded_day", "post_install"]]
    (root / keys.VIDEO_MANIFEST).write_text(manifest.to_csv(index=False))

    for photo in load_photos():  # plant photos: copied byte for byte, labelled as they are
        target = root / keys.PHOTOS_PREFIX / f"{photo.name}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(photo_source_path(photo.name), target)
        ops_images.append(LabelledImage(keys.package_file_name(keys.frame_key("photos", photo.name, 0.0)),
                                        photo.width, photo.height, list(photo.persons)))

    stage_a_images = []
    for _, row in select_stage_a_videos(manifest, config.stage_a_per_category, config.seed).iterrows():
        file, path = video_files[row["video_id"]]
        _, targets = plan_window(file, window_s=config.stage_a_window_s, step_s=config.stage_a_step_s)
        stage_a_images += [_labelled(path, keys.frame_key("stage_a", row["video_id"], t), t, config) for t in targets]

    main, second = config.annotators
    exports = {
        f"{keys.INCOMING_ANNOTATIONS}ops_frames/{main}/export_1.zip": coco_export_zip(careful(ops_images, rng)),
        f"{keys.INCOMING_ANNOTATIONS}stage_a/{main}/export_1.zip": coco_export_zip(careful(stage_a_images, rng)),
    }
    overlap_idx = sorted(rng.choice(len(stage_a_images), size=min(config.overlap_frames, len(stage_a_images)),
                                    replace=False))
    overlap = [stage_a_images[i] for i in overlap_idx]
    exports[f"{keys.INCOMING_ANNOTATIONS}stage_a_overlap/{second}/export_1.zip"] = coco_export_zip(
        second_opinion(overlap, rng), label="people")  # CVAT label names vary: mapped by configuration
    for key, data in exports.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)

    n_clips = _write_buffer(root, config, rng)
    return {"root": str(root), "videos": len(manifest), "photos": len(load_photos()), "ops_frames": len(ops_images),
            "stage_a_frames": len(stage_a_images), "overlap_frames": len(overlap), "buffer_clips": n_clips,
            "exports": sorted(exports)}


TRUTH_PREFIX = "_demo_truth/"


def _write_truth(root: Path, clip_key: str, path: CameraPath, config: DemoConfig) -> None:
    """Ground truth of a buffer clip for the demo's simulated annotator (`_demo_truth/<clip>.json`):
    the exact person boxes of every frame. Not a pipeline source; nothing in the pipeline reads it."""
    frames = [{"index": i, "t": i / path.fps, "boxes": [[round(v, 3) for v in b] for b in
                                                       boxes_in_view(path.photo, view, config.width, config.height)]}
              for i, view in enumerate(path.views)]
    target = root / TRUTH_PREFIX / (clip_key.rsplit(".", 1)[0] + ".json")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"clip": clip_key, "fps": path.fps, "width": config.width, "height": config.height,
                                  "frames": frames}))


def _write_buffer(root: Path, config: DemoConfig, rng: np.random.Generator) -> int:
    """Fixed cameras at the line: near-still clips, and the production model's quality flags per 10 s."""
    photos = load_photos()
    n = 0
    for day in config.buffer_days:
        quality_rows = []
        for c, camera in enumerate(config.buffer_cameras):
            for s, start in enumerate(config.buffer_clip_starts):
                photo = photos[(c + s) % len(photos)]
                path = make_path(photo, rng, duration_s=config.buffer_clip_s, fps=config.buffer_fps,
                                 out_w=config.width, out_h=config.height, active_s=config.buffer_clip_s * 0.3,
                                 with_empty=True)
                file = root / keys.BUFFER_PREFIX / camera / day / f"{start}.mp4"
                write_h264(file, _frames(path, config, 1.0), fps=config.buffer_fps,
                           gop_frames=int(round(4 * config.buffer_fps)))
                _write_truth(root, f"{keys.BUFFER_PREFIX}{camera}/{day}/{start}.mp4", path, config)
                n += 1
                t0 = datetime.strptime(f"{day} {start}", "%Y-%m-%d %H%M%S").replace(tzinfo=timezone.utc)
                for t in every_n_seconds(config.buffer_clip_s, config.quality_every_s):
                    people = len(boxes_in_view(photo, path.view_at(t), config.width, config.height))
                    p_bad = 0.6 if people == 0 else 0.25
                    roll = rng.random()
                    quality = "red" if roll < p_bad * 0.4 else "yellow" if roll < p_bad else "green"
                    quality_rows.append({"camera": camera, "ts": t0 + timedelta(seconds=t), "quality": quality,
                                         "model_version": "off-shelf"})
        table = pd.DataFrame(quality_rows)
        buffer = io.BytesIO()
        table.to_parquet(buffer, index=False)
        out = root / keys.QUALITY_PREFIX / f"{day}.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(buffer.getvalue())
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--small", action="store_true", help="the smaller configuration used by the tests")
    args = parser.parse_args()
    print(generate_demo(args.root, SMALL if args.small else DemoConfig()))


if __name__ == "__main__":
    main()
