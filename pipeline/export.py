"""ONNX export of a trained detector, structural checks, and parity against PyTorch.

The Jetson side expects one input `images` of shape (1, 3, imgsz, imgsz) and one output `output0`
of shape (1, 4 + classes, anchors). The default opset (17) is one TensorRT 8.5/8.6 (JetPack 5 /
6.0) parses; another opset can be asked for, and the file is checked to hold exactly that one.

`preprocess` (letterbox to imgsz, RGB, CHW, /255) and `decode` (NMS, person class, boxes back to the
frame's pixels), thin wrappers over `pipeline.inference` for one square frame, are the one definition of what goes into and comes out of the network: parity,
INT8 calibration (`pipeline.calibration`) and engine validation (`pipeline.engine_validation`) all
use them, so PyTorch, onnxruntime and TensorRT are always fed the same tensors.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineInputError
from pipeline.offline import ultralytics_yolo

DEFAULT_OPSET = 17
EXPECTED_INPUT = "images"
EXPECTED_OUTPUT = "output0"
PERSON_CLASS = 0
_DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class OnnxSpec:
    input_name: str
    input_shape: list[int]
    output_name: str
    output_shape: list[int]
    opset: int

    @property
    def n_classes(self) -> int:
        return self.output_shape[1] - 4 if len(self.output_shape) == 3 else -1

    def to_metadata(self) -> dict:
        return asdict(self)


def onnx_opset(model_or_path) -> int:
    """The default-domain ('' / 'ai.onnx') opset of an ONNX model (a path or a loaded ModelProto)."""
    import onnx

    model = onnx.load(str(model_or_path), load_external_data=False) if isinstance(model_or_path, (str, Path)) \
        else model_or_path
    for entry in model.opset_import:
        if entry.domain in _DEFAULT_DOMAINS:
            return int(entry.version)
    raise PipelineInputError(str(model_or_path) if isinstance(model_or_path, (str, Path)) else "ONNX model",
                             "opset_import", [(e.domain, e.version) for e in model.opset_import],
                             "re-export the model: it declares no default-domain opset", problem="no ONNX opset")


def export_onnx(weights: Path, out_path: Path, *, imgsz: int, opset: int = DEFAULT_OPSET,
                dynamic: bool = False) -> Path:
    """Export `weights` to `out_path` (static shape unless `dynamic`, simplified) with exactly `opset`.

    The Jetson gets the static export; `dynamic` (batch, height and width free) is what the
    pipeline's own ONNX Runtime inference uses, so frames keep Ultralytics' minimal-rectangle letterbox.

    Work happens in a copy of the weights. A file with another opset than asked for (the exporter
    may clamp it to what the installed torch supports) is refused rather than shipped silently."""
    out_path = Path(out_path)
    work = out_path.parent / f".export-{out_path.stem}-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    try:
        local = work / f"{out_path.stem}.pt"
        shutil.copyfile(weights, local)
        produced = ultralytics_yolo()(str(local)).export(format="onnx", imgsz=imgsz, opset=opset, simplify=True,
                                                         dynamic=dynamic, device="cpu", verbose=False)
        got = onnx_opset(Path(produced))
        if got != opset:
            raise PipelineInputError(str(weights), "opset", got,
                                     f"asked for opset {opset} but the exporter wrote opset {got}; use an opset the "
                                     "installed torch can export (17 works with TensorRT 8.5/8.6 on JetPack 5/6)",
                                     problem="ONNX opset differs from the one asked for")
        shutil.move(str(produced), out_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out_path


def inspect_onnx(path: Path, *, imgsz: int, n_classes: int, opset: int | None = None) -> OnnxSpec:
    """Run onnx.checker and validate names, shapes (imgsz, class count) and, when given, the opset
    against what the Jetson side expects. Raises `PipelineInputError` naming the mismatch."""
    import onnx

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    outputs = list(model.graph.output)
    if len(inputs) != 1 or len(outputs) != 1:
        raise PipelineInputError(str(path), "graph", ([i.name for i in inputs], [o.name for o in outputs]),
                                 "export the detector alone (one input 'images', one output 'output0')",
                                 problem="ONNX graph must have exactly one input and one output")
    (inp,), (out,) = inputs, outputs

    def dims(value) -> list[int]:
        return [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]

    spec = OnnxSpec(inp.name, dims(inp), out.name, dims(out), onnx_opset(model))
    expected_in = [1, 3, imgsz, imgsz]
    if spec.input_name != EXPECTED_INPUT or spec.input_shape != expected_in:
        raise PipelineInputError(str(path), "graph.input", (spec.input_name, spec.input_shape),
                                 f"re-export with imgsz={imgsz} and dynamic=False: the Jetson expects "
                                 f"{EXPECTED_INPUT}{expected_in}",
                                 problem=f"unexpected ONNX input (image size {spec.input_shape[2:]} is not "
                                         f"{imgsz}x{imgsz})" if spec.input_name == EXPECTED_INPUT else
                                         "unexpected ONNX input name")
    expected_out = [1, 4 + n_classes]
    if spec.output_name != EXPECTED_OUTPUT or len(spec.output_shape) != 3 or spec.output_shape[:2] != expected_out:
        raise PipelineInputError(str(path), "graph.output", (spec.output_name, spec.output_shape),
                                 f"export the detector trained for {n_classes} class(es): the Jetson expects "
                                 f"{EXPECTED_OUTPUT}[1, {4 + n_classes}, N]",
                                 problem=f"unexpected ONNX output (the model has {spec.n_classes} classes, expected "
                                         f"{n_classes})" if spec.output_name == EXPECTED_OUTPUT else
                                         "unexpected ONNX output name")
    if opset is not None and spec.opset != opset:
        raise PipelineInputError(str(path), "opset_import", spec.opset, f"re-export with opset={opset}",
                                 problem=f"ONNX opset {spec.opset} is not the expected {opset}")
    return spec


# --------------------------------------------------------------------------- tensors in and out


def to_tensor(boxed_bgr: np.ndarray) -> np.ndarray:
    """Letterboxed HWC uint8 BGR -> (1, 3, H, W) float32 RGB in [0, 1]."""
    from pipeline.inference.letterbox import to_tensor as batch_tensor

    return batch_tensor(boxed_bgr)


def letterboxed_uint8(image: Path, imgsz: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The frame letterboxed to imgsz x imgsz (HWC uint8 BGR, what `to_tensor` scales), and the frame's (h, w)."""
    from pipeline.inference.letterbox import letterbox_one
    from pipeline.inference.prefetch import decode_frame

    bgr = decode_frame(str(image), Path(image))
    return letterbox_one(bgr, imgsz, auto=False)[0], bgr.shape[:2]


def preprocess(image: Path, imgsz: int) -> tuple[np.ndarray, tuple[int, int]]:
    """(1, 3, imgsz, imgsz) float32 RGB in [0, 1], letterboxed like Ultralytics; and the frame's (h, w)."""
    boxed, shape = letterboxed_uint8(image, imgsz)
    return to_tensor(boxed), shape


def decode(raw: np.ndarray, *, imgsz: int, frame_shape: tuple[int, int] | None = None, conf: float = 0.001,
           iou: float = 0.7, max_det: int = 300, person_class: int | None = PERSON_CLASS) -> np.ndarray:
    """Raw (1, 4 + nc, N) output -> (n, 6) x1, y1, x2, y2, conf, class after NMS; boxes in the frame's
    pixels when `frame_shape` is given (else in the letterboxed input's). The NMS and scaling are the
    pipeline's one implementation (`pipeline.inference.postprocess`, Ultralytics' rules)."""
    from pipeline.inference.letterbox import geometry
    from pipeline.inference.postprocess import postprocess

    geo = None if frame_shape is None else [geometry(tuple(frame_shape), imgsz, auto=False)]
    classes = None if person_class is None else [person_class]
    return postprocess(np.asarray(raw, dtype=np.float32)[:1], geo, conf=conf, iou=iou, classes=classes,
                       max_det=max_det)[0]


def torch_raw(model, tensor: np.ndarray) -> np.ndarray:
    """One forward pass of an Ultralytics model (float32, eval) on a preprocessed tensor: raw output0."""
    import torch

    device = next(model.parameters()).device
    with torch.no_grad():
        out = model(torch.from_numpy(tensor).to(device))
    return (out[0] if isinstance(out, (list, tuple)) else out).float().cpu().numpy()


def load_torch_model(weights: Path, device: str = "cpu"):
    """The network in float32 eval mode on `device` ("cpu" or a GPU index, the deployment's inference device)."""
    from pipeline.inference.backends import cuda_index

    index = cuda_index(device)
    return ultralytics_yolo()(str(weights)).model.float().eval().to("cpu" if index is None else f"cuda:{index}")


# --------------------------------------------------------------------------- parity


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
    (after the same NMS) matched at IoU >= 0.9 with their confidence difference. Parity on no frames
    proves nothing and is refused."""
    import onnxruntime as ort

    from pipeline.boxes import greedy_match

    if not images:
        raise PipelineInputError(str(onnx_path), "images", [], "give parity at least one real frame",
                                 problem="parity needs frames")
    torch_model = load_torch_model(weights)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    box_diff, score_diff, n_t, n_o, matched, conf_diff = 0.0, 0.0, 0, 0, 0, 0.0
    for image in images:
        tensor, _ = preprocess(image, imgsz)
        raw_t = torch_raw(torch_model, tensor)
        raw_o = session.run(None, {session.get_inputs()[0].name: tensor})[0]
        if raw_t.shape != raw_o.shape:
            raise PipelineInputError(str(onnx_path), "output0", (list(raw_t.shape), list(raw_o.shape)),
                                     "export the ONNX from these weights",
                                     problem="ONNX and PyTorch output shapes differ")
        box_diff = max(box_diff, float(np.abs(raw_t[:, :4] - raw_o[:, :4]).max()))
        score_diff = max(score_diff, float(np.abs(raw_t[:, 4:] - raw_o[:, 4:]).max()))
        det_t = decode(raw_t, imgsz=imgsz, conf=conf, iou=0.45, person_class=None)
        det_o = decode(raw_o, imgsz=imgsz, conf=conf, iou=0.45, person_class=None)
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
