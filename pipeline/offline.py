"""Keep Ultralytics offline-safe: configure it before it is imported, then import it.

These machines (and the factory's) reach no model hub. Ultralytics reads its environment at import
time, so every caller goes through `ultralytics_yolo()` rather than importing it directly.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

DEFAULT_CONFIG_DIR = Path(os.environ.get("LBZF_YOLO_CONFIG_DIR", Path.home() / ".cache" / "lbzf" / "ultralytics"))
_FONTS = ("Arial.ttf", "Arial.Unicode.ttf")


def configure_offline(config_dir: Path = DEFAULT_CONFIG_DIR) -> Path:
    """Set the environment Ultralytics reads at import; give it local fonts so it never downloads."""
    config_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("YOLO_OFFLINE", "true")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ.setdefault("YOLO_VERBOSE", "false")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(config_dir))
    import matplotlib

    # Ultralytics wants Arial for plot labels; matplotlib's DejaVu Sans stands in (same role, local file).
    dejavu = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in _FONTS:
        target = Path(os.environ["YOLO_CONFIG_DIR"]) / name
        if not target.exists() and dejavu.exists():
            shutil.copyfile(dejavu, target)
    return Path(os.environ["YOLO_CONFIG_DIR"])


def ultralytics_yolo():
    """Return the `YOLO` class with offline settings applied and hub sync switched off."""
    configure_offline()
    from ultralytics import YOLO
    from ultralytics.utils import SETTINGS

    if SETTINGS.get("sync"):
        SETTINGS.update({"sync": False})
    return YOLO
