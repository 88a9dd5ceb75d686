"""Production refuses simulated shadow logs; wherever a simulated run counts (a laptop), it says so."""
from __future__ import annotations

import io
import json
from dataclasses import replace

import pandas as pd
import pytest

from pipeline.promotion import PromotionThresholds, decide_promotion
from pipeline.shadow import (SIMULATED_FILE, ShadowLogError, check_simulation_allowed, load_logs, logs_source,
                             shadow_words, simulated_warning)
from tests.test_registry import _comparison, _logs, _shadow


def _files(**tables: pd.DataFrame) -> dict[str, bytes]:
    out = {}
    for name, table in tables.items():
        if name.endswith("parquet"):
            buffer = io.BytesIO()
            table.to_parquet(buffer, index=False)
            out[f"shadow/v0.1/logs/{name.replace('_parquet', '.parquet')}"] = buffer.getvalue()
        else:
            out[f"shadow/v0.1/logs/{name}.jsonl"] = "\n".join(
                json.dumps({**r, "timestamp": r["timestamp"].isoformat()}) for r in table.to_dict("records")).encode()
    return out


def _load(files: dict[str, bytes]):
    return load_logs(lambda prefix: [k for k in files if k.startswith(prefix)], files.__getitem__,
                     "shadow/v0.1/logs/")


def test_a_set_of_logs_is_device_only_when_every_file_and_row_is():
    device = _logs(hours=26.0).assign(source="device")
    _, files, source = _load(_files(cam1=device))
    assert (files, source) == (["shadow/v0.1/logs/cam1.jsonl"], "device")
    # a simulated file anywhere taints the whole set
    simulated_name = SIMULATED_FILE.replace(".parquet", "_parquet")
    assert _load({**_files(cam1=device), **_files(**{simulated_name: _logs(hours=26.0)})})[2] == "simulated"
    # so does a simulated row in a device-named file
    mixed = device.copy()
    mixed.loc[0, "source"] = "simulated"
    assert _load(_files(cam1=mixed))[2] == "simulated"
    assert logs_source([], pd.DataFrame()) == "none"


def test_the_gate_refuses_a_simulated_shadow_run_unless_the_deployment_allows_it():
    shadow = {**_shadow(hours=26.0), "source": "simulated", "logs_prefix": "shadow/v0.1/logs/"}
    refused = decide_promotion(_comparison(0.92), shadow)  # the default (production): device logs only
    assert not refused.promote
    assert refused.reasons == [refused.reasons[0]] and refused.reasons[0].startswith(
        "simulated shadow: the shadow logs under shadow/v0.1/logs/ are simulated, not written by the device")
    allowed = decide_promotion(_comparison(0.92), shadow, replace(PromotionThresholds(), allow_simulated_shadow=True))
    assert allowed.promote
    device = decide_promotion(_comparison(0.92), {**shadow, "source": "device"})
    assert device.promote


def test_production_never_simulates_and_says_why():
    check_simulation_allowed(False, False, "shadow_report")
    check_simulation_allowed(True, True, "shadow_report")
    with pytest.raises(ShadowLogError) as err:
        check_simulation_allowed(True, False, "v0_shadow_report")
    assert (err.value.file, err.value.field, err.value.value) == ("v0_shadow_report config", "simulate", True)
    assert "pipeline.shadow_device" in err.value.remedy and err.value.problem == "simulated shadow run refused"


def test_a_simulated_run_says_so_in_the_record_and_the_ui():
    assert "SIMULATED" in shadow_words({"source": "simulated", "period_h": 24.0})
    assert shadow_words({"source": "device", "period_h": 26.5}) == "26.5 h of device shadow logs"
    assert simulated_warning("simulated") == {"WARNING": "SIMULATED shadow run: replayed on this machine, not "
                                                         "logged by the device"}
    assert simulated_warning("device") == {}


@pytest.mark.parametrize("deployment, allowed", [("local", True), ("prod", False)])
def test_the_deployment_decides_whether_simulated_logs_may_count(deployment, allowed, tmp_path):
    from orchestration.deployments import resources_for
    from tests.test_deployments import PROD_ENV

    env = dict(PROD_ENV if deployment == "prod" else {}, LBZF_STORAGE_ROOT=str(tmp_path))
    assert resources_for(deployment, env=env)["shadow_policy"].allow_simulated is allowed
