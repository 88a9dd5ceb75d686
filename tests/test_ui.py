"""What operators see: the small demo served by a real `dagster-webserver`, read through its GraphQL
API and photographed with headless Chromium.

The demo (demo/run.py, small configuration) is built into a temporary home with
LBZF_STORAGE_ROOT / DAGSTER_HOME / LBZF_TRAIN_DIR pointing there for the module's duration; the
webserver serves that DAGSTER_HOME with the repo's workspace.yaml on a free loopback port. The demo
build takes a few minutes; the checks after it take seconds.

LBZF_UPDATE_SCREENSHOT=1 also writes the screenshots to docs/images/ (asset_graph.png, evaluation.png,
preview.png).
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
    from tests.chromium import Browser
    from tests.helpers import free_port
except ImportError:  # pragma: no cover - depends on how pytest was started
    from chromium import Browser
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


# The UI shows a long markdown metadata value (an inline image is one) behind a "[Show Markdown]"
# button that opens it in a dialog; these press it, as an operator would, and read the dialog.
SHOW_MARKDOWN = """(() => { const row = Array.from(document.querySelectorAll('tr')).find(
    r => r.cells.length > 1 && r.cells[0].innerText.trim() === %s);
  const button = row && Array.from(row.querySelectorAll('*')).find(
    e => !e.children.length && e.textContent.trim() === '[Show Markdown]');
  if (button) button.click();
  return !!button; })()"""
OPEN_DIALOG = """(() => { const d = document.querySelector('.bp5-dialog'); if (!d) return null;
  const images = Array.from(d.querySelectorAll('img'));
  if (!images.length || !images.every(i => i.complete && i.naturalWidth > 0)) return null;
  const r = d.getBoundingClientRect();
  return {title: d.innerText.trim().split('\\n')[0].trim(), text: d.innerText,
          rect: {x: r.x, y: r.y, width: r.width, height: r.height},
          images: images.map(i => ({src: i.src, width: i.naturalWidth, height: i.naturalHeight}))}; })()"""

SETTLED = "document.getAnimations().every(a => a.playState !== 'running')"


def _show_markdown(browser: Browser, label: str) -> dict:
    """Open the metadata entry `label`'s dialog; what it shows once its images have loaded."""
    assert browser.evaluate(SHOW_MARKDOWN % json.dumps(label)), f"no [Show Markdown] for {label}"
    browser.wait_for(OPEN_DIALOG, what=f"the dialog of {label} with its images loaded")
    browser.wait_for(SETTLED, what="the dialog's opening transition over")
    dialog = browser.evaluate(OPEN_DIALOG)  # its place once it has stopped moving
    assert dialog["title"] == label, (dialog["title"], label)
    return dialog


def _close_dialog(browser: Browser) -> None:
    for kind in ("keyDown", "keyUp"):
        browser.call("Input.dispatchKeyEvent", type=kind, key="Escape", code="Escape", windowsVirtualKeyCode=27)
    browser.wait_for("!document.querySelector('.bp5-overlay-open, .bp5-dialog') && " + SETTLED,
                     what="the dialog closed")


def _image_bytes(src: str) -> bytes:
    match = re.fullmatch(r"data:image/(?:png|jpeg);base64,([A-Za-z0-9+/=]+)", src)
    assert match, src[:80]
    return base64.b64decode(match[1])


def _not_blank(path: Path, min_colours: int = 200) -> None:
    from PIL import Image

    image = Image.open(path).convert("RGB")
    counts = sorted((n for n, _ in image.getcolors(maxcolors=image.size[0] * image.size[1])), reverse=True)
    pixels = image.size[0] * image.size[1]
    assert counts and counts[0] / pixels < 0.95, f"{path.name} is (almost) a single colour"
    assert len(counts) > min_colours, (path.name, len(counts))


def _update(shot: Path, name: str, colours: int | None = None) -> None:
    """With LBZF_UPDATE_SCREENSHOT=1, the screenshot becomes docs/images/<name> (a photo-heavy one
    reduced to `colours` colours, a third of the bytes)."""
    from PIL import Image

    if os.environ.get("LBZF_UPDATE_SCREENSHOT") == "1":
        target = REPO / "docs" / "images" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if colours:
            Image.open(shot).convert("RGB").quantize(colors=colours, method=Image.Quantize.MEDIANCUT,
                                                     dither=Image.Dither.NONE).save(target, optimize=True)
        else:
            shutil.copyfile(shot, target)


EVALUATION_VIEWS = {"confusion_matrix_test": "confusion_test", "pr_f1_curves_test": "pr_f1_test",
                    "domain_shift_gap": None}  # metadata label -> the stored figure it shows


@pytest.mark.seed_views
def test_evaluation_figures_screenshot(webserver, demo_home, tmp_path):
    """evaluation's page: the confusion matrix, the PR/F1 curves and the domain-shift gap, each opened
    from its metadata row; the images the UI shows are the figures the store holds."""
    from PIL import Image

    from pipeline import keys

    chromium = _chromium()
    if chromium is None:
        pytest.skip("chromium not found: install Debian's chromium package (scripts/setup.sh does, as root)")
    assert graphql(webserver, "mutation { setNuxSeen }")["setNuxSeen"] is True
    panels = []
    with Browser(chromium, tmp_path / "profile", width=1600, height=1200) as browser:
        browser.open(webserver + "/assets/evaluation")
        browser.wait_for("document.body.innerText.includes('domain_shift_gap')", what="evaluation's metadata")
        header = browser.screenshot(tmp_path / "header.png", clip={"x": 0, "y": 0, "width": 1600, "height": 90})
        for label, figure in EVALUATION_VIEWS.items():
            dialog = _show_markdown(browser, label)
            (image,) = dialog["images"]
            shown = _image_bytes(image["src"])
            if figure is not None:
                stored = demo_home / "store" / keys.version_keys("v0").figure(figure)
                assert shown == stored.read_bytes(), f"{label} does not show {stored}"
            assert image["width"] >= 300 and image["height"] >= 200, (label, image["width"], image["height"])
            rect = dialog["rect"]
            assert rect["y"] + rect["height"] <= 1200, f"{label}'s dialog does not fit the window: {rect}"
            panels.append(browser.screenshot(tmp_path / f"{label}.png", clip=rect))
            _close_dialog(browser)

    crops = [Image.open(p).convert("RGB") for p in panels]
    x = int(dialog["rect"]["x"])  # the page's header (the asset's name, its tabs) above, as wide as the dialogs
    crops.insert(0, Image.open(header).convert("RGB").crop((x, 0, x + crops[0].size[0], 90)))
    gap = 12
    sheet = Image.new("RGB", (max(c.size[0] for c in crops), sum(c.size[1] for c in crops) + gap * (len(crops) - 1)),
                      (229, 231, 235))
    y = 0
    for crop in crops:
        sheet.paste(crop, (0, y))
        y += crop.size[1] + gap
    shot = tmp_path / "evaluation.png"
    sheet.save(shot, optimize=True)
    _not_blank(shot)
    _update(shot, "evaluation.png")


@pytest.mark.seed_views
def test_preview_contact_sheet_screenshot(webserver, demo_home, tmp_path):
    """video_preview's page with its contact sheet open: the stored JPEG, boxes drawn on the frames."""
    chromium = _chromium()
    if chromium is None:
        pytest.skip("chromium not found: install Debian's chromium package (scripts/setup.sh does, as root)")
    assert graphql(webserver, "mutation { setNuxSeen }")["setNuxSeen"] is True
    with Browser(chromium, tmp_path / "profile") as browser:
        browser.open(webserver + "/assets/video_preview")
        browser.wait_for("document.body.innerText.includes('contact_sheet')", what="video_preview's metadata")
        dialog = _show_markdown(browser, "contact_sheet")
        (image,) = dialog["images"]
        stored = re.search(r"stored: (file://\S+contact_sheet\.jpg)", dialog["text"])
        assert stored, dialog["text"][-300:]
        assert _image_bytes(image["src"]) == Path(stored[1][len("file://"):]).read_bytes()
        assert image["width"] >= 320, image
        shot = browser.screenshot(tmp_path / "preview.png")
    _not_blank(shot)
    _update(shot, "preview.png", colours=256)
