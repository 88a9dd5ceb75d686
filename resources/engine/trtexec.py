"""Running an engine with ``trtexec --loadEngine`` and reading what it exports (outputs, timings)."""
from __future__ import annotations

import json
import re
from typing import Any, Mapping

import numpy as np

from resources.engine.results import EngineBuildError

def trtexec_run_args(trtexec: str, engine: str, input_name: str, input_file: str, output_json: str,
                     times_json: str, iterations: int) -> list[str]:
    """trtexec arguments that run ``engine`` once per timed iteration on the raw float32 tensor in
    ``input_file`` and export the output tensors and the per-iteration timings as JSON."""
    return [trtexec, f"--loadEngine={engine}", f"--loadInputs={input_name}:{input_file}",
            f"--exportOutput={output_json}", f"--exportTimes={times_json}", f"--iterations={max(1, int(iterations))}",
            "--warmUp=0", "--duration=0"]


_NON_FINITE = re.compile(r"(?<![\w\"])(-?)(nan|inf)(?![\w\"])", re.I)


def _json_with_non_finite(text: str) -> Any:
    """trtexec prints non-finite floats as nan / -nan / inf; Python's json reads NaN / Infinity."""
    return json.loads(_NON_FINITE.sub(lambda m: "NaN" if m.group(2).lower() == "nan" else f"{m.group(1)}Infinity",
                                      text))


def parse_trtexec_output(text: str, name: str = "output0", *, source: str = "trtexec --exportOutput") -> np.ndarray:
    """The tensor ``name`` from a ``trtexec --exportOutput`` file (``source``, named by the errors):
    ``[{"name": ..., "dimensions": "1x5x8400", "values": [...]}, ...]``."""
    entries = _json_with_non_finite(text)
    if not isinstance(entries, list) or not entries:
        raise EngineBuildError("trtexec wrote no output tensors.", remedy="check the engine has an output tensor.",
                               file=source, field="output tensors",
                               value=len(entries) if isinstance(entries, list) else type(entries).__name__)
    entry = next((e for e in entries if e.get("name") == name), None)
    if entry is None:
        names = [e.get("name") for e in entries]
        raise EngineBuildError(f"the engine has no output {name!r} (outputs: {names}).",
                               remedy="rebuild the engine from the pipeline's ONNX (output 'output0').",
                               file=source, field="name", value=names)
    dims = [int(d) for d in re.findall(r"\d+", str(entry.get("dimensions", "")))]
    values = np.asarray(entry.get("values", []), dtype=np.float32)
    if not dims or int(np.prod(dims)) != values.size:
        raise EngineBuildError(f"output {name!r}: dimensions {entry.get('dimensions')!r} do not match "
                               f"{values.size} values.",
                               remedy="check the trtexec version writes --exportOutput fully.",
                               file=source, field=f"{name}.dimensions", value=entry.get("dimensions"))
    return values.reshape(dims)


def parse_trtexec_times(text: str) -> float:
    """Median latency (ms) of the timed iterations in a ``trtexec --exportTimes`` file."""
    entries = _json_with_non_finite(text)
    values = [float(e.get("latencyMs", e.get("computeMs"))) for e in entries or []
              if isinstance(e, Mapping) and e.get("latencyMs", e.get("computeMs")) is not None]
    return float(np.median(values)) if values else float("nan")


def _input_bytes(tensor: np.ndarray) -> bytes:
    return np.ascontiguousarray(tensor, dtype=np.float32).tobytes()
