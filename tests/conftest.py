"""Shared pytest fixtures."""
from __future__ import annotations

import os
from typing import Iterator

import pytest

try:  # tests/ as a package or as a plain rootdir-relative directory
    from tests.s3_server import REGION, create_bucket, moto_s3_server
except ImportError:  # pragma: no cover - depends on how pytest was started
    from s3_server import REGION, create_bucket, moto_s3_server


# --------------------------------------------------------------------------- S3 (moto, loopback)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """URL of a moto server on 127.0.0.1 (S3, KMS, ...), shared by the whole session.

    Fake AWS credentials are in os.environ while it runs.
    """
    with moto_s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A fresh, empty bucket on the session's moto server."""
    return create_bucket(s3_endpoint)


@pytest.fixture
def s3_store(s3_endpoint: str, s3_bucket: str):
    """An S3ArtifactStore on a fresh bucket (pipeline rights: source prefixes read-only)."""
    from resources.storage import S3ArtifactStore

    return S3ArtifactStore(bucket=s3_bucket, endpoint_url=s3_endpoint, region_name=REGION)


# --------------------------------------------------------------------------- strict mode (CI)

# A skip whose reason names one of these is a real component that could not be found or started.
REAL_COMPONENT_SKIPS = ("sshd", "ssh-keygen", "openssh", "postgresql", "psycopg", "chromium", "shared/fixtures",
                        "shared/ is absent", "real fixtures", "real cvat fixture")


def strict_components() -> bool:
    """LBZF_STRICT_COMPONENTS=1 (set by .ci/run): a test of a real component that would skip fails."""
    return os.environ.get("LBZF_STRICT_COMPONENTS", "") not in ("", "0")


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr or "")


def pytest_configure(config):
    config.addinivalue_line("markers", "real_component: tests a real component (sshd, PostgreSQL, Chromium, "
                                       "../shared/fixtures); under LBZF_STRICT_COMPONENTS=1 a skip is a failure")


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and strict_components()) or hasattr(report, "wasxfail"):
        return
    reason = _skip_reason(report)
    if item.get_closest_marker("real_component") or any(w in reason.lower() for w in REAL_COMPONENT_SKIPS):
        report.outcome = "failed"
        report.longrepr = (f"LBZF_STRICT_COMPONENTS=1: a real component is unavailable, so this test may not skip: "
                           f"{reason}")
