"""The device side of shadow mode, on CPU with ONNX Runtime: two tiny ONNX models (the exports of
two seeded YOLOv8n person models, tests/test_export.py) on real frames (../shared/fixtures), logs
read back with pipeline.shadow's own reader and report."""
from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone

import pytest

from pipeline.errors import PipelineInputError
from pipeline.export import export_onnx
from pipeline.shadow import read_log_file, shadow_report
from pipeline.shadow_device import main, stamp_from_name
from tests.test_export import IMGSZ, build_tiny_person_model, coco8_images, shared_coco8, shared_onnx

T0 = datetime(2026, 8, 2, 6, 0, 0, 250000, tzinfo=timezone.utc)
CONF = 0.005


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    coco8 = shared_coco8(tmp_path_factory)
    production = shared_onnx(tmp_path_factory)
    folder = tmp_path_factory.mktemp("candidate")
    weights = build_tiny_person_model(folder / "candidate.pt", coco8_images(coco8, "train"), seed=1)
    return production, export_onnx(weights, folder / "candidate.onnx", imgsz=IMGSZ), coco8


def _camera_folder(tmp_path, coco8):
    """The coco8 photographs as a camera's frames, named by capture time (every 7.5 s)."""
    folder = tmp_path / "cam1"
    folder.mkdir()
    stamps = []
    for i, image in enumerate(coco8_images(coco8)):
        stamp = T0 + timedelta(seconds=7.5 * i)
        stamps.append(stamp)
        shutil.copyfile(image, folder / f"cam1_{stamp.strftime('%Y%m%dT%H%M%S')}.{stamp.microsecond // 1000:03d}Z.jpg")
    return folder, stamps


def test_runner_writes_logs_the_shadow_reader_accepts(models, tmp_path, capsys):
    production, candidate, coco8 = models
    frames, stamps = _camera_folder(tmp_path, coco8)
    out = tmp_path / "logs"
    path = main(["--production", str(production), "--production-version", "v0", "--candidate", str(candidate),
                 "--candidate-version", "v0.1", "--frames", str(frames), "--camera", "cam1", "--out", str(out),
                 "--imgsz", str(IMGSZ), "--conf", str(CONF), "--device", "cpu"])
    assert path.parent == out and path.suffix == ".jsonl" and "16 rows (8 frames)" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted([path.name, path.name + ".manifest"])  # nothing half-written
    logs = read_log_file(path.name, path.read_bytes())
    assert len(logs) == 16 and set(logs["source"]) == {"device"} and set(logs["camera"]) == {"cam1"}
    assert logs.groupby("model_version").size().to_dict() == {"v0": 8, "v0.1": 8}
    assert sorted(set(logs["timestamp"])) == stamps  # the real capture times, to the millisecond
    assert (logs["latency_ms"] > 0).all() and sum(map(len, logs["boxes"])) > 0
    assert all(c >= CONF for cs in logs["confidences"] for c in cs)
    report = shadow_report(logs, candidate="v0.1", production="v0", conf=CONF)
    assert report["paired_frames"] == 8 and report["rows_candidate"] == report["rows_production"] == 8
    assert report["period_h"] == round(52.5 / 3600, 3) and report["period_start"] == T0.isoformat()
    assert report["overall"]["agreement"] < 1.0  # two different models, really run
    manifest = json.loads((out / (path.name + ".manifest")).read_text())
    assert manifest["source"] == "device" and manifest["frames"] == 8
    for version in ("v0", "v0.1"):  # no TensorRT engine given: ONNX Runtime on the CPU, said so
        assert manifest["models"][version]["backend"] == "onnxruntime"
        assert manifest["models"][version]["provider"] == "CPUExecutionProvider"


def test_engine_that_cannot_load_falls_back_to_the_onnx_and_says_why(models, tmp_path):
    production, candidate, coco8 = models
    frames, _ = _camera_folder(tmp_path, coco8)
    engine = tmp_path / "candidate.engine"
    engine.write_bytes(b"an engine for another TensorRT")
    path = main(["--production", str(production), "--production-version", "v0", "--candidate", str(engine),
                 "--candidate-onnx", str(candidate), "--candidate-version", "v0.1", "--frames", str(frames),
                 "--camera", "cam1", "--out", str(tmp_path / "logs"), "--imgsz", str(IMGSZ), "--device", "cpu"])
    record = json.loads(path.with_name(path.name + ".manifest").read_text())["models"]["v0.1"]
    assert record["backend"] == "onnxruntime" and record["fell_back"] is True
    assert record["tried"][0]["backend"] == "tensorrt" and record["tried"][0]["reason"]


def test_video_frames_are_stamped_start_plus_presentation_time(models, tmp_path):
    import av
    import cv2
    import numpy as np

    production, candidate, coco8 = models
    video = tmp_path / "cam2.mp4"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("mpeg4", rate=2)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for image in coco8_images(coco8)[:6]:
            bgr = cv2.resize(cv2.imread(str(image)), (320, 240))
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(bgr), format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    path = main(["--production", str(production), "--production-version", "v0", "--candidate", str(candidate),
                 "--candidate-version", "v0.1", "--video", str(video), "--start", "2026-08-02T06:00:00Z",
                 "--every-s", "1", "--camera", "cam2", "--out", str(tmp_path / "logs"), "--imgsz", str(IMGSZ),
                 "--device", "cpu"])
    logs = read_log_file(path.name, path.read_bytes())
    start = datetime(2026, 8, 2, 6, tzinfo=timezone.utc)
    assert sorted(set(logs["timestamp"])) == [start + timedelta(seconds=s) for s in (0, 1, 2)]  # 6 frames at 2 fps
    with pytest.raises(PipelineInputError, match="capture time unknown"):
        main(["--production", str(production), "--production-version", "v0", "--candidate", str(candidate),
              "--candidate-version", "v0.1", "--video", str(video), "--camera", "cam2", "--out",
              str(tmp_path / "logs2"), "--imgsz", str(IMGSZ), "--device", "cpu"])


def test_capture_time_from_file_names():
    assert stamp_from_name("cam1_20260802T060512.250Z.jpg") == datetime(2026, 8, 2, 6, 5, 12, 250000,
                                                                          tzinfo=timezone.utc)
    assert stamp_from_name("2026-08-02T06-05-12.jpg") == datetime(2026, 8, 2, 6, 5, 12, tzinfo=timezone.utc)
    assert stamp_from_name("frame_0001.jpg") is None
