"""Picking a builder from the environment."""
from __future__ import annotations

import os
from typing import Any, Mapping

from resources.engine.builder import EngineBuilder, UnavailableEngineBuilder
from resources.engine.jetson_ssh import JetsonSSHEngineBuilder
from resources.engine.local_tensorrt import LocalTensorRTEngineBuilder
from resources.engine.results import DEFAULT_UNAVAILABLE_REASON

def select_engine_builder(environ: Mapping[str, str] | None = None) -> EngineBuilder:
    """The builder this environment can use.

    ``DAGSTER_DEPLOYMENT=prod`` with ``LBZF_JETSON_HOST``: the Jetson (``LBZF_JETSON_USER``,
    ``LBZF_JETSON_KNOWN_HOSTS`` required; ``LBZF_JETSON_PORT``, ``LBZF_JETSON_KEY_PATH``,
    ``LBZF_JETSON_REMOTE_DIR``, ``LBZF_JETSON_TRTEXEC`` optional). Otherwise local TensorRT when it is
    usable, else `UnavailableEngineBuilder` with the reason.
    """
    env = os.environ if environ is None else environ
    if env.get("DAGSTER_DEPLOYMENT") == "prod" and env.get("LBZF_JETSON_HOST"):
        missing = [k for k in ("LBZF_JETSON_USER", "LBZF_JETSON_KNOWN_HOSTS") if not env.get(k)]
        if missing:
            return UnavailableEngineBuilder(reason=f"LBZF_JETSON_HOST is set but {', '.join(missing)} is not; "
                                                   "set them to build on the Jetson")
        kwargs: dict[str, Any] = dict(host=env["LBZF_JETSON_HOST"], user=env["LBZF_JETSON_USER"],
                                      known_hosts_path=env["LBZF_JETSON_KNOWN_HOSTS"],
                                      port=int(env.get("LBZF_JETSON_PORT") or 22),
                                      key_path=env.get("LBZF_JETSON_KEY_PATH") or None,
                                      remote_dir=env.get("LBZF_JETSON_REMOTE_DIR") or None)
        if env.get("LBZF_JETSON_TRTEXEC"):
            kwargs["trtexec_path"] = env["LBZF_JETSON_TRTEXEC"]
        return JetsonSSHEngineBuilder(**kwargs)
    local = LocalTensorRTEngineBuilder()
    ok, why = local.availability()
    if ok:
        return local
    return UnavailableEngineBuilder(reason=f"{DEFAULT_UNAVAILABLE_REASON} (local: {why})")
