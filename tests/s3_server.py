"""A loopback S3 server for tests and demos (moto's ThreadedMotoServer); no pytest needed.

    with moto_s3_server(bucket="lbzf-test") as endpoint:
        store = S3ArtifactStore(bucket="lbzf-test", endpoint_url=endpoint, region_name=REGION)

The server binds 127.0.0.1 on a free port and answers every AWS protocol moto
knows (S3, KMS, ...) on that one endpoint.  Fake credentials are put into
``os.environ`` for the duration (and restored afterwards) so that boto3 clients
built by the code under test sign requests without touching real AWS or the
instance-metadata service.

Run ``python tests/s3_server.py [bucket]`` to keep one up by hand.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import uuid
from typing import Any, Iterator

REGION = "us-east-1"

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}
# Variables that would point boto3 somewhere else than the fake credentials above.
_CLEARED_ENV = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


@contextlib.contextmanager
def fake_aws_env() -> Iterator[None]:
    """Fake credentials in ``os.environ`` for the duration; the old values come back after."""
    saved = {name: os.environ.get(name) for name in (*FAKE_AWS_ENV, *_CLEARED_ENV)}
    try:
        for name in _CLEARED_ENV:
            os.environ.pop(name, None)
        os.environ.update(FAKE_AWS_ENV)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@functools.lru_cache(maxsize=None)
def client(endpoint: str, service: str = "s3") -> Any:
    """A boto3 client of ``service`` talking to the loopback server (cached; clients are thread-safe)."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2, "mode": "standard"}),
    )


def create_bucket(endpoint: str, bucket: str | None = None) -> str:
    """Create ``bucket`` (a fresh unique name when None) and return its name."""
    name = bucket or f"lbzf-test-{uuid.uuid4().hex[:12]}"
    client(endpoint).create_bucket(Bucket=name)
    return name


@contextlib.contextmanager
def moto_s3_server(bucket: str | None = None) -> Iterator[str]:
    """Start moto on 127.0.0.1:<free port>, optionally create ``bucket``, yield the endpoint URL."""
    from moto.server import ThreadedMotoServer

    request_log = logging.getLogger("werkzeug")  # one INFO line per request otherwise
    saved_level = request_log.level
    with fake_aws_env():
        request_log.setLevel(logging.WARNING)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            endpoint = f"http://{host}:{port}"
            if bucket is not None:
                create_bucket(endpoint, bucket)
            yield endpoint
        finally:
            server.stop()
            request_log.setLevel(saved_level)


if __name__ == "__main__":  # pragma: no cover - manual use
    import sys
    import time

    with moto_s3_server(sys.argv[1] if len(sys.argv) > 1 else "lbzf") as url:
        print(f"S3 endpoint {url} (credentials: testing/testing, region {REGION}); Ctrl-C stops", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
