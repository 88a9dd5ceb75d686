"""ONNX export of a trained detector, structural checks, and parity against PyTorch.

The Jetson side expects one input `images` of shape (1, 3, imgsz, imgsz) and one output `output0`
of shape (1, 4 + classes, anchors). The default opset (17) is one TensorRT 8.5/8.6 (JetPack 5 /
6.0) parses.
"""
from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineInputError
from pipeline.offline import ultralytics_yolo

DEFAULT_OPSET = 17
EXPECTED_INPUT = "images"
EXPECTED_OUTPUT = "output0"


@dataclass(frozen=True)
class OnnxSpec:
    input_name: str
    input_shape: list[int]
    output_name: str
    output_shape: list[int]
    opset: int

    def to_metadata(self) -> dict:
        return asdict(self)


def export_onnx(weights: Path, out_path: Path, *, imgsz: int, opset: int = DEFAULT_OPSET) -> Path:
    """Export `weights` to `out_path` (static shape, simplified). Work happens in a copy of the weights."""
    work = out_path.parent / f".export-{out_path.stem}"
    work.mkdir(parents=True, exist_ok=True)
    try:
        local = work / f"{out_path.stem}.pt"
        shutil.copyfile(weights, local)
        produced = ultralytics_yolo()(str(local)).export(format="onnx", imgsz=imgsz, opset=opset, simplify=True,
                                                         dynamic=False, device="cpu", verbose=False)
        shutil.move(str(produced), out_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out_path


def inspect_onnx(path: Path, *, imgsz: int, n_classes: int) -> OnnxSpec:
    """Run onnx.checker and validate names and shapes against what the Jetson side expects."""
    import onnx

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    (inp,), (out,) = model.graph.input, model.graph.output

    def dims(value) -> list[int]:
        return [d.dim_value for d in value.type.tensor_type.shape.dim]

    spec = OnnxSpec(inp.name, dims(inp), out.name, dims(out), int(model.opset_import[0].version))
    expected_in = [1, 3, imgsz, imgsz]
    if spec.input_name != EXPECTED_INPUT or spec.input_shape != expected_in:
        raise PipelineInputError(str(path), "graph.input", (spec.input_name, spec.input_shape),
                                 f"re-export with imgsz={imgsz}: the Jetson expects {EXPECTED_INPUT}{expected_in}",
                                 problem="unexpected ONNX input")
    if spec.output_name != EXPECTED_OUTPUT or spec.output_shape[:2] != [1, 4 + n_classes]:
        raise PipelineInputError(str(path), "graph.output", (spec.output_name, spec.output_shape),
                                 f"re-export the detector: the Jetson expects {EXPECTED_OUTPUT}[1, {4 + n_classes}, N]",
                                 problem="unexpected ONNX output")
    return spec


def _letterbox(image_bgr: np.ndarray, imgsz: int) -> np.ndarray:
    from ultralytics.data.augment import LetterBox

    boxed = LetterBox(new_shape=(imgsz, imgsz), auto=False, stride=32)(image=image_bgr)
    chw = boxed[..., ::-1].transpose(2, 0, 1)  # BGR -> RGB, HWC -> CHW
    return np.ascontiguousarray(chw, dtype=np.float32)[None] / 255.0


@dataclass
class ParityReport:
    frames: int
    max_box_diff_px: float
    max_score_diff: float
    boxes_torch: int
    boxes_onnx: int
    boxes_matched: int
    box_agreement: float
    max_conf_diff: float
    passed: bool
    box_tolerance_px: float
    score_tolerance: float

    def to_metadata(self) -> dict:
        return asdict(self)


def parity(weights: Path, onnx_path: Path, images: list[Path], *, imgsz: int, box_tolerance_px: float = 0.05,
           score_tolerance: float = 1e-3,
           conf: float = 0.25, min_agreement: float = 0.98) -> ParityReport:
    """Same frames through PyTorch and onnxruntime: the largest raw output difference, and boxes
    (after the same NMS) matched at IoU >= 0.9 with their confidence difference."""
    import cv2
    import onnxruntime as ort
    import torch
    from ultralytics.utils.nms import non_max_suppression

    from pipeline.boxes import greedy_match

    torch_model = ultralytics_yolo()(str(weights)).model.float().eval()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    box_diff, score_diff, n_t, n_o, matched, conf_diff = 0.0, 0.0, 0, 0, 0, 0.0
    for image in images:
        tensor = _letterbox(cv2.imread(str(image)), imgsz)
        with torch.no_grad():
            raw_t = torch_model(torch.from_numpy(tensor))
            raw_t = (raw_t[0] if isinstance(raw_t, (list, tuple)) else raw_t).numpy()
        raw_o = session.run(None, {session.get_inputs()[0].name: tensor})[0]
        box_diff = max(box_diff, float(np.abs(raw_t[:, :4] - raw_o[:, :4]).max()))
        score_diff = max(score_diff, float(np.abs(raw_t[:, 4:] - raw_o[:, 4:]).max()))
        det_t = non_max_suppression(torch.from_numpy(raw_t), conf_thres=conf)[0].numpy()
        det_o = non_max_suppression(torch.from_numpy(raw_o), conf_thres=conf)[0].numpy()
        n_t += len(det_t)
        n_o += len(det_o)
        pairs = greedy_match(det_t[:, :4], det_o[:, :4], det_o[:, 4], iou_threshold=0.9)
        matched += len(pairs)
        for g, p, _ in pairs:
            conf_diff = max(conf_diff, abs(float(det_t[g, 4]) - float(det_o[p, 4])))
    denominator = max(n_t, n_o)
    agreement = matched / denominator if denominator else 1.0
    passed = box_diff <= box_tolerance_px and score_diff <= score_tolerance and agreement >= min_agreement
    return ParityReport(len(images), box_diff, score_diff, n_t, n_o, matched, agreement, conf_diff, passed,
                        box_tolerance_px, score_tolerance)
