"""Version parsing: TensorRT, CUDA, L4T and JetPack from the text the tools and files print."""
from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
from pathlib import Path

from resources.engine.results import UNKNOWN

def parse_l4t_release(text: str) -> str:
    """'# R35 (release), REVISION: 4.1, ...' (``/etc/nv_tegra_release``) -> '35.4.1'."""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([0-9][0-9.]*)", text or "")
    if not m:
        return UNKNOWN
    return f"{m.group(1)}.{m.group(2).strip('.')}"


def parse_trt_version(text: str) -> str:
    """TensorRT version from trtexec output: '[I] TensorRT version: 8.5.2' or '[TensorRT v8502]'."""
    text = text or ""
    m = re.search(r"TensorRT version:\s*([0-9]+(?:\.[0-9]+)+)", text)
    if m:
        return m.group(1)
    m = re.search(r"\[TensorRT v(\d+)\]", text)
    if m:
        n = int(m.group(1))
        if n >= 100000:  # TensorRT >= 10: major*10000 + minor*100 + patch
            return f"{n // 10000}.{(n // 100) % 100}.{n % 100}"
        return f"{n // 1000}.{(n // 100) % 10}.{n % 100}"  # TensorRT 8.x: major*1000 + minor*100 + patch
    return UNKNOWN


def parse_cuda_version(text: str) -> str:
    """CUDA version from ``nvcc --version`` ('..., V11.4.315') or ``version.json``."""
    text = text or ""
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        data = json.loads(text)
        version = data.get("cuda", {}).get("version") or data.get("cuda_cudart", {}).get("version")
        if version:
            return str(version)
    m = re.search(r"release\s+[0-9.]+,\s*V([0-9][0-9.]*)", text) or re.search(r"release\s+([0-9][0-9.]*)", text)
    return m.group(1).rstrip(".") if m else UNKNOWN


def parse_jetpack_version(text: str) -> str:
    """'5.1.2-b104' (dpkg) or 'JetPack 5.1.2' -> the version string as given ('5.1.2-b104')."""
    m = re.search(r"([0-9]+\.[0-9]+(?:\.[0-9]+)?(?:[-+~][A-Za-z0-9.+~-]*)?)", text or "")
    return m.group(1) if m else UNKNOWN



def _read_local(path: str) -> str:
    with contextlib.suppress(OSError):
        return Path(path).read_text(encoding="utf-8", errors="replace").replace("\x00", "").strip()
    return ""


def _local_platform_versions() -> dict[str, str]:
    """L4T / JetPack / device of *this* host (meaningful when it is itself a Jetson)."""
    l4t = parse_l4t_release(_read_local("/etc/nv_tegra_release"))
    jetpack = UNKNOWN
    if shutil.which("dpkg-query"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            proc = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"], capture_output=True,
                                  text=True, timeout=10)
            if proc.returncode == 0 and proc.stdout.strip():
                jetpack = parse_jetpack_version(proc.stdout)
    if jetpack == UNKNOWN:
        jetpack = parse_jetpack_version(_read_local("/etc/nv_jetpack_release"))
    return {"l4t": l4t, "jetpack": jetpack, "hostname": socket.gethostname(),
            "device": _read_local("/proc/device-tree/model") or UNKNOWN}

