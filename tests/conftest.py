"""Shared pytest fixtures."""
from __future__ import annotations

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
