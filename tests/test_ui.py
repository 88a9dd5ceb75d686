"""What operators see: the small demo served by a real `dagster-webserver`, read through its GraphQL
API and photographed with headless Chromium.

The demo (demo/run.py, small configuration) is built into a temporary home with
LBZF_STORAGE_ROOT / DAGSTER_HOME / LBZF_TRAIN_DIR pointing there for the module's duration; the
webserver serves that DAGSTER_HOME with the repo's workspace.yaml on a free loopback port. The demo
build takes a few minutes; the checks after it take seconds.

LBZF_UPDATE_SCREENSHOT=1 also writes the screenshot to docs/images/asset_graph.png.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

try:  # tests/ as a package or as a plain rootdir-relative directory
    from tests.helpers import free_port
except ImportError:  # pragma: no cover - depends on how pytest was started
    from helpers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[1]
ENV_KEYS = ("LBZF_STORAGE_ROOT", "DAGSTER_HOME", "LBZF_TRAIN_DIR")
GRAPH_URL = "/assets/tensorrt_engine?view=lineage&lineageScope=upstream&lineageDepth=8"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1600,1000", "--virtual-time-budget=15000"]


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory):
    """The small demo, materialized into a fresh home; the three variables point there meanwhile."""
    home = tmp_path_factory.mktemp("ui_demo")
    saved = {k: os.environ.get(k) for k in ENV_KEYS}
    os.environ.update({"LBZF_STORAGE_ROOT": str(home / "store"), "DAGSTER_HOME": str(home / "dagster_home"),
                       "LBZF_TRAIN_DIR": str(home / "train_runs")})
    try:
        from demo.run import run_demo

        run_demo(home, small=True)
        yield home
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def graphql(base: str, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"{base}/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        document = json.load(response)
    assert not document.get("errors"), document["errors"]
    return document["data"]


WORKSPACE_QUERY = """
{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""


def _wait_until_loaded(base: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"dagster-webserver exited:\n{log.read_text(errors='replace')}"
        try:
            entries = graphql(base, WORKSPACE_QUERY)["workspaceOrError"]["locationEntries"]
            last = json.dumps(entries)
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                errors = [e["locationOrLoadError"] for e in entries
                          if e["locationOrLoadError"]["__typename"] != "RepositoryLocation"]
                assert not errors, errors
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:  # not listening yet
            last = str(error)
        time.sleep(1)
    raise AssertionError(f"workspace not loaded after {timeout}s: {last}\n{log.read_text(errors='replace')}")


@pytest.fixture(scope="module")
def webserver(demo_home, tmp_path_factory):
    """`dagster-webserver` on 127.0.0.1:<free port> for the demo's DAGSTER_HOME; its base URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("webserver") / "webserver.log"
    exe = Path(sys.executable).with_name("dagster-webserver")
    with open(log, "wb") as handle:
        proc = subprocess.Popen([str(exe), "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"], cwd=REPO,
                                env=dict(os.environ), stdout=handle, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_loaded(base, proc, log)
        yield base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the webserver and the code server it started
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def test_asset_graph_nodes_are_served(webserver):
    nodes = graphql(webserver, "{ assetNodes { assetKey { path } groupName jobNames } }")["assetNodes"]
    by_key = {"/".join(n["assetKey"]["path"]): n for n in nodes}
    for key, group in {"video_manifest": "footage", "dataset_split": "labels", "stage_a_baseline": "models",
                       "stage_b_model": "models", "onnx_model": "export", "tensorrt_engine": "export",
                       "hard_examples": "retraining"}.items():
        assert key in by_key, key
        assert by_key[key]["groupName"] == group, (key, by_key[key]["groupName"])
    assert "training_job" in by_key["tensorrt_engine"]["jobNames"]


def test_schedule_and_both_sensors_are_served(webserver):
    data = graphql(webserver, """
    { repositoriesOrError { ... on RepositoryConnection { nodes { name
        schedules { name cronSchedule executionTimezone }
        sensors { name sensorState { status } } } } } }""")
    (repo,) = data["repositoriesOrError"]["nodes"]
    schedules = {s["name"]: s for s in repo["schedules"]}
    assert "monthly_retraining_job_schedule" in schedules, set(schedules)
    assert schedules["monthly_retraining_job_schedule"]["cronSchedule"].split()[2] == "1"  # the 1st of the month
    sensors = {s["name"]: s["sensorState"]["status"] for s in repo["sensors"]}
    # both declared default_status=RUNNING: a fresh deployment starts watching without a click
    assert {name: sensors.get(name) for name in ("buffer_footage_sensor", "annotation_exports_sensor")} == \
        {"buffer_footage_sensor": "RUNNING", "annotation_exports_sensor": "RUNNING"}, sensors


STAGE_A_QUERY = """
{ assetOrError(assetKey: {path: ["stage_a_baseline"]}) { __typename ... on Asset {
    assetMaterializations(limit: 1) { runId metadataEntries { label __typename
        ... on TextMetadataEntry { text } ... on MarkdownMetadataEntry { mdStr } } } } } }
"""


def test_latest_stage_a_materialization_serves_the_gate_and_the_histogram(webserver, demo_home):
    import dagster as dg
    from PIL import Image

    asset = graphql(webserver, STAGE_A_QUERY)["assetOrError"]
    assert asset["__typename"] == "Asset"
    (latest,) = asset["assetMaterializations"]
    entries = {e["label"]: e for e in latest["metadataEntries"]}

    report = json.loads((demo_home / "store" / "reports" / "stage_a" / "stage_a_report.json").read_text())
    assert entries["gate_outcome"]["__typename"] == "TextMetadataEntry"
    assert entries["gate_outcome"]["text"] == report["gate"]["outcome"]  # the decision the report holds
    assert entries["WARNING"]["text"] == "baseline is untrained: not a Stage A measurement"

    histogram = entries["confidence_histogram"]
    assert histogram["__typename"] == "MarkdownMetadataEntry"
    match = re.search(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", histogram["mdStr"])
    assert match, histogram["mdStr"][:80]
    image = Image.open(io.BytesIO(base64.b64decode(match[1])))
    image.verify()  # a complete PNG, not a stub
    assert image.format == "PNG" and image.size[0] >= 300 and image.size[1] >= 150

    # the same event the instance holds as the latest materialization
    with dg.DagsterInstance.from_config(os.environ["DAGSTER_HOME"]) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("stage_a_baseline"))
    assert event is not None and event.run_id == latest["runId"]


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run_chromium(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          timeout=180, stdin=subprocess.DEVNULL)


def _greenish(pixel: tuple[int, int, int]) -> bool:
    r, g, b = pixel
    return g > r + 8 and g > b + 2  # the fill of a materialized asset node


def test_asset_graph_screenshot(webserver, tmp_path):
    from PIL import Image

    chromium = _chromium()
    if chromium is None:
        pytest.skip("chromium not found: install Debian's chromium package (scripts/setup.sh does, as root)")
    # The UI greets a loopback origin with a community sign-up dialog over the graph; mark it seen.
    assert graphql(webserver, "mutation { setNuxSeen }")["setNuxSeen"] is True

    shot = tmp_path / "asset_graph.png"
    result = _run_chromium(chromium, tmp_path / "profile", f"--screenshot={shot}", webserver + GRAPH_URL)
    assert result.returncode == 0 and shot.exists(), result.stderr.decode(errors="replace")[-2000:]
    assert shot.stat().st_size > 20_000, shot.stat().st_size

    image = Image.open(shot).convert("RGB")
    assert image.size == (1600, 1000)
    pixels = list(image.getdata())
    counts: dict = {}
    for pixel in pixels:
        counts[pixel] = counts.get(pixel, 0) + 1
    assert max(counts.values()) / len(pixels) < 0.95, "the page is (almost) a single colour"
    assert len(counts) > 200, len(counts)
    green = sum(n for pixel, n in counts.items() if _greenish(pixel))
    assert green > 5_000, f"no materialized (green) asset nodes drawn: {green} px"

    # the rendered page holds the graph's nodes by name
    dom = _run_chromium(chromium, tmp_path / "profile-dom", "--dump-dom", webserver + GRAPH_URL)
    html = dom.stdout.decode(errors="replace")
    for name in ("stage_a_baseline", "dataset_split", "tensorrt_engine", "video_manifest"):
        assert name in html, name

    if os.environ.get("LBZF_UPDATE_SCREENSHOT") == "1":
        target = REPO / "docs" / "images" / "asset_graph.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)
