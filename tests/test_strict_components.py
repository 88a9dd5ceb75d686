"""Strict mode (LBZF_STRICT_COMPONENTS=1, set by .ci/run): a test of a real component that would skip
fails instead; other skips stay skips, and without strict mode local runs skip as before."""
from __future__ import annotations

pytest_plugins = ["pytester"]

TESTS = '''
import pytest

def test_sshd_missing():
    pytest.skip("/usr/sbin/sshd not found: install openssh-server")

def test_fixtures_missing():
    pytest.skip("real fixtures not found at ../shared/fixtures/coco8_yolo (shared/ is absent)")

@pytest.mark.skipif(True, reason="chromium not found: install Debian's chromium package")
def test_chromium_missing():
    pass

@pytest.mark.real_component
def test_marked():
    pytest.skip("server did not start")

def test_other_skip():
    pytest.skip("tensorrt is installed on this host")
'''


def _run(pytester, monkeypatch, strict: str):
    monkeypatch.setenv("LBZF_STRICT_COMPONENTS", strict)
    pytester.makeconftest("from tests.conftest import pytest_configure, pytest_runtest_makereport  # noqa: F401")
    pytester.makepyfile(test_components=TESTS)
    return pytester.runpytest("-p", "no:cacheprovider")


def test_strict_mode_turns_real_component_skips_into_failures(pytester, monkeypatch):
    result = _run(pytester, monkeypatch, "1")
    result.assert_outcomes(failed=3, errors=1, skipped=1)  # the skipif mark is reported at setup: an error
    result.stdout.fnmatch_lines(["*LBZF_STRICT_COMPONENTS=1: a real component is unavailable*"])


def test_without_strict_mode_they_skip(pytester, monkeypatch):
    _run(pytester, monkeypatch, "").assert_outcomes(skipped=5)
