"""Whether an engine can run on a device: its build versions against the device's."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from resources.engine.results import UNKNOWN, EngineCompatibilityError

def _norm_version(value: str | None, parts: int = 3) -> str:
    if not value or value == UNKNOWN:
        return UNKNOWN
    nums = re.findall(r"\d+", str(value))
    return ".".join(nums[:parts]) if nums else UNKNOWN


def check_engine_compatible(engine_meta: Mapping[str, Any], device_versions: Mapping[str, Any], *,
                            sidecar: str | Path | None = None) -> None:
    """Refuse (raise `EngineCompatibilityError`) when an engine cannot run on a device.

    ``engine_meta`` is an engine sidecar (its ``versions``) or a versions dict. TensorRT must be known on
    both sides and equal (major.minor.patch); L4T and JetPack must be equal where either side knows
    them (an engine built off-Jetson, with no L4T, does not run on a Jetson and vice versa).

    The error's ``file`` is ``sidecar`` (the ``<engine>.engine.json`` the versions were read from; by
    default named after the sidecar's ``engine_file``), ``field`` the sidecar field(s) that do not match
    (``versions.tensorrt``, ``versions.l4t``, ``versions.jetpack``) and ``value`` what the sidecar records
    (a dict field -> value when several differ); the message gives the device's versions too.
    """
    built = engine_meta.get("versions", engine_meta) if isinstance(engine_meta, Mapping) else {}
    device = device_versions or {}
    remedy = "rebuild on that device (run the engine build against this Jetson), then deploy the new engine"
    problems: list[str] = []
    fields: dict[str, str] = {}
    trt_e, trt_d = str(built.get("tensorrt") or UNKNOWN), str(device.get("tensorrt") or UNKNOWN)
    if _norm_version(trt_e) == UNKNOWN or _norm_version(trt_d) == UNKNOWN:
        problems.append(f"TensorRT version cannot be verified (engine built with {trt_e}, device has {trt_d})")
        fields["versions.tensorrt"] = trt_e
    elif _norm_version(trt_e) != _norm_version(trt_d):
        problems.append(f"TensorRT differs: engine built with {trt_e}, device has {trt_d}")
        fields["versions.tensorrt"] = trt_e
    for key, label in (("l4t", "L4T"), ("jetpack", "JetPack")):
        a, b = str(built.get(key) or UNKNOWN), str(device.get(key) or UNKNOWN)
        if _norm_version(a) == UNKNOWN and _norm_version(b) == UNKNOWN:
            continue
        if _norm_version(a) != _norm_version(b):
            problems.append(f"{label} differs: engine built on {a}, device has {b}")
            fields[f"versions.{key}"] = a
    if problems:
        where = device.get("hostname") or device.get("device") or "the device"
        if sidecar is None:
            engine_file = engine_meta.get("engine_file") if isinstance(engine_meta, Mapping) else None
            sidecar = f"{engine_file}.json" if engine_file else "the engine's sidecar (<engine>.engine.json)"
        value: object = next(iter(fields.values())) if len(fields) == 1 else fields
        raise EngineCompatibilityError(f"engine is not compatible with {where}: " + "; ".join(problems) + ".",
                                       remedy=remedy, host=str(where), file=sidecar, field=", ".join(fields),
                                       value=value)
