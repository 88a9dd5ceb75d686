"""One behavioural suite for both artifact stores: a local directory and S3 (moto on loopback)."""
from __future__ import annotations

import hashlib
import io
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from resources.storage import (
    SOURCE_PREFIXES,
    ArtifactConflictError,
    ArtifactStore,
    InvalidKeyError,
    LocalArtifactStore,
    ObjectInfo,
    S3ArtifactStore,
    S3RequestError,
    SourceReadError,
    SourceWriteError,
)

try:
    from tests.s3_server import REGION, client as raw_client
except ImportError:  # pragma: no cover - depends on how pytest was started
    from s3_server import REGION, client as raw_client

MiB = 1024 * 1024
S3_PREFIX = "lbzf/test"

StoreFactory = Callable[..., ArtifactStore]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.integration)])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Build stores over one shared location (a directory, or a fresh bucket with a prefix).

    ``make_store()`` is the pipeline's view (source prefixes read-only);
    ``make_store(allow_source_writes=True)`` is a seeding view of the same bytes.
    S3-only settings (``multipart_threshold_mb``, ``kms_key_id``) are ignored locally.
    """
    if request.param == "local":
        root = tmp_path / "store"

        def local(allow_source_writes: bool = False, **_s3_only: Any) -> ArtifactStore:
            return LocalArtifactStore(root=str(root), allow_source_writes=allow_source_writes)

        return local

    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = request.getfixturevalue("s3_bucket")

    def s3(allow_source_writes: bool = False, **s3_only: Any) -> ArtifactStore:
        return S3ArtifactStore(
            bucket=bucket,
            prefix=S3_PREFIX,
            endpoint_url=endpoint,
            region_name=REGION,
            allow_source_writes=allow_source_writes,
            **s3_only,
        )

    return s3


@pytest.fixture
def store(make_store: StoreFactory) -> ArtifactStore:
    return make_store()


@pytest.fixture
def seeder(make_store: StoreFactory) -> ArtifactStore:
    return make_store(allow_source_writes=True)


# --------------------------------------------------------------------------- helpers


def leftovers(store: ArtifactStore) -> list[str]:
    """Temp files (local) or open multipart uploads (S3) that a failed write left behind."""
    if isinstance(store, LocalArtifactStore):
        root = Path(store.root)
        return [str(p) for p in root.rglob("*") if p.name.startswith(".tmp-")] if root.exists() else []
    assert isinstance(store, S3ArtifactStore)
    uploads = store._get_client().list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])
    return [f"{u['Key']} ({u['UploadId']})" for u in uploads]


def random_file(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


class FailingReader:
    """A source file whose read fails after ``fail_after`` bytes (a disk or network error)."""

    def __init__(self, data: bytes, fail_after: int):
        self._data = data
        self._pos = 0
        self._fail_after = fail_after

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = len(self._data) - self._pos
        if self._pos + size > self._fail_after:
            raise OSError(5, "Input/output error (simulated) while reading the source")
        out = self._data[self._pos : self._pos + size]
        self._pos += len(out)
        return out


# --------------------------------------------------------------------------- basics


def test_round_trip_bytes(store: ArtifactStore) -> None:
    key = "frames/ops/video1/000123.jpg"
    before = datetime.now(timezone.utc) - timedelta(seconds=5)
    assert not store.exists(key)
    assert store.stat(key) is None

    info = store.write_bytes(key, b"\xff\xd8jpeg bytes", content_type="image/jpeg")
    assert isinstance(info, ObjectInfo)
    assert (info.key, info.size) == (key, 12)
    assert store.exists(key)
    assert store.read_bytes(key) == b"\xff\xd8jpeg bytes"

    stat = store.stat(key)
    assert stat is not None and (stat.key, stat.size) == (key, 12)
    assert stat.etag
    assert stat.last_modified.tzinfo is not None and stat.last_modified.utcoffset() == timedelta(0)
    assert before <= stat.last_modified <= datetime.now(timezone.utc) + timedelta(seconds=5)

    store.write_bytes(key, b"replaced")  # plain writes may replace
    assert store.read_bytes(key) == b"replaced"
    assert store.stat(key).size == 8

    store.write_bytes("empty/file.txt", b"")
    assert store.read_bytes("empty/file.txt") == b""
    assert store.stat("empty/file.txt").size == 0

    with pytest.raises(FileNotFoundError, match="missing/key.bin"):
        store.read_bytes("missing/key.bin")

    assert store.delete(key) is True
    assert store.delete(key) is False
    assert not store.exists(key)


def test_uri(store: ArtifactStore) -> None:
    key = "raw/videos/manifest.csv"
    if isinstance(store, LocalArtifactStore):
        expected = (Path(store.root).resolve() / "raw" / "videos" / "manifest.csv").as_uri()
        assert store.uri(key) == expected and expected.startswith("file:///")
    else:
        assert store.uri(key) == f"s3://{store.bucket}/{S3_PREFIX}/{key}"


def test_upload_and_download_file(store: ArtifactStore, tmp_path: Path) -> None:
    source = tmp_path / "in" / "clip.mp4"
    source.parent.mkdir()
    data = random_file(source, 3 * MiB + 17)

    info = store.upload_file(source, "models/v1/clip.mp4")
    assert info.size == len(data)
    assert store.read_bytes("models/v1/clip.mp4") == data

    target = tmp_path / "out" / "nested" / "clip.mp4"
    assert store.download_file("models/v1/clip.mp4", target) == target
    assert target.read_bytes() == data
    assert [p.name for p in target.parent.iterdir()] == ["clip.mp4"]  # no temp file left

    target.write_bytes(b"old")  # download replaces an existing local file
    store.download_file("models/v1/clip.mp4", target)
    assert target.read_bytes() == data

    missing_target = tmp_path / "out" / "missing.bin"
    with pytest.raises(FileNotFoundError):
        store.download_file("models/v1/missing.bin", missing_target)
    assert sorted(p.name for p in missing_target.parent.iterdir()) == ["nested"]


def test_local_copy(seeder: ArtifactStore) -> None:
    seeder.write_bytes("raw/videos/cam1.mp4", b"video bytes")
    with seeder.local_copy("raw/videos/cam1.mp4") as path:
        assert isinstance(path, Path)
        assert path.suffix == ".mp4"  # tools that sniff by extension keep working
        assert path.read_bytes() == b"video bytes"
    if isinstance(seeder, LocalArtifactStore):
        assert path.exists()  # the stored file itself
    else:
        assert not path.exists() and not path.parent.exists()  # the temp download is gone
    with pytest.raises(FileNotFoundError):
        with seeder.local_copy("raw/videos/missing.mp4"):
            pass


# --------------------------------------------------------------------------- atomicity


def test_large_upload_round_trip(make_store: StoreFactory, tmp_path: Path) -> None:
    store = make_store(multipart_threshold_mb=5)
    data = random_file(tmp_path / "big.bin", 12 * MiB + 123)
    info = store.upload_file(tmp_path / "big.bin", "exports/big.bin")
    assert info.size == len(data)
    assert store.stat("exports/big.bin").size == len(data)
    assert hashlib.sha256(store.read_bytes("exports/big.bin")).digest() == hashlib.sha256(data).digest()
    if isinstance(store, S3ArtifactStore):
        assert "-" in store.stat("exports/big.bin").etag  # it really went multipart ("<md5>-<parts>")
    assert leftovers(store) == []


@pytest.mark.parametrize("existing", [None, b"previous version"])
def test_failed_write_leaves_nothing(make_store: StoreFactory, existing: bytes | None) -> None:
    """The source fails part-way (after one S3 part went up): nothing new at the key, nothing left over."""
    store = make_store(multipart_threshold_mb=5)
    key = "exports/model.onnx"
    if existing is not None:
        store.write_bytes(key, existing)
    data = os.urandom(12 * MiB)

    with pytest.raises(SourceReadError, match="simulated") as err:
        store.upload_fileobj(FailingReader(data, fail_after=9 * MiB), key)
    assert isinstance(err.value, OSError) and "simulated" in str(err.value.__cause__)
    assert err.value.file == store.uri(key) and err.value.field == "source stream"

    if existing is None:
        assert store.stat(key) is None
    else:
        assert store.read_bytes(key) == existing
    assert [o.key for o in store.list_keys("exports/")] == ([] if existing is None else [key])
    assert leftovers(store) == []


def test_local_write_failing_at_flush_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalArtifactStore(root=str(tmp_path / "store"))
    store.write_bytes("exports/a.json", b"old")

    import resources.storage as storage

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device (simulated)")

    monkeypatch.setattr(storage.os, "fsync", disk_full)
    for key in ("exports/a.json", "exports/b.json"):
        with pytest.raises(OSError, match="No space left"):
            store.write_bytes(key, b"new bytes that never land")
    monkeypatch.undo()

    assert store.read_bytes("exports/a.json") == b"old"
    assert not store.exists("exports/b.json")
    assert sorted(p.name for p in (tmp_path / "store" / "exports").iterdir()) == ["a.json"]


@pytest.mark.integration
@pytest.mark.parametrize("failing_operation", ["UploadPart", "CompleteMultipartUpload"])
def test_s3_multipart_failure_is_aborted(
    s3_endpoint: str, s3_bucket: str, tmp_path: Path, failing_operation: str
) -> None:
    """A request of the multipart upload fails (connection lost): the upload is aborted."""
    store = S3ArtifactStore(bucket=s3_bucket, endpoint_url=s3_endpoint, region_name=REGION, multipart_threshold_mb=5)
    source = tmp_path / "big.bin"
    random_file(source, 20 * MiB)  # three 8 MiB parts
    client = store._get_client()
    calls: list[str] = []
    lock = threading.Lock()

    def fail_second(model: Any, **_: Any) -> None:
        with lock:
            calls.append(model.name)
            if model.name == failing_operation and calls.count(failing_operation) == (
                2 if failing_operation == "UploadPart" else 1
            ):
                raise EndpointConnectionError(endpoint_url="simulated: connection lost")

    client.meta.events.register(f"before-call.s3.{failing_operation}", fail_second)
    try:
        with pytest.raises(S3RequestError, match="exports/video.mp4") as err:
            store.upload_file(source, "exports/video.mp4")
        assert isinstance(err.value.__cause__, EndpointConnectionError)
    finally:
        client.meta.events.unregister(f"before-call.s3.{failing_operation}", fail_second)

    assert store.stat("exports/video.mp4") is None
    assert list(store.list_keys("")) == []
    assert leftovers(store) == []


# --------------------------------------------------------------------------- listing


LISTING_KEYS = ["a-c/5", "a/1", "a/2", "a/b/3", "ab/4", "b/6", "frames/ops/v1/0001.jpg", "frames/ops/v10/0001.jpg"]


def test_list_keys(store: ArtifactStore) -> None:
    for key in reversed(LISTING_KEYS):
        store.write_bytes(key, key.encode())
    if isinstance(store, LocalArtifactStore):  # an in-flight temp file is not an object
        (Path(store.root) / "a" / ".tmp-abc.part").write_bytes(b"partial")

    everything = list(store.list_keys(""))
    assert [o.key for o in everything] == LISTING_KEYS  # byte order: '-' < '/' < 'b'
    assert all(o.size == len(o.key) for o in everything)
    assert [o.key for o in store.list_keys("a/")] == ["a/1", "a/2", "a/b/3"]
    assert [o.key for o in store.list_keys("a")] == ["a-c/5", "a/1", "a/2", "a/b/3", "ab/4"]
    assert [o.key for o in store.list_keys("frames/ops/v1")] == ["frames/ops/v1/0001.jpg", "frames/ops/v10/0001.jpg"]
    assert [o.key for o in store.list_keys("frames/ops/v1/")] == ["frames/ops/v1/0001.jpg"]
    assert [o.key for o in store.list_keys("a", start_after="a/2")] == ["a/b/3", "ab/4"]
    assert [o.key for o in store.list_keys("a/", start_after="a/15")] == ["a/2", "a/b/3"]
    assert [o.key for o in store.list_keys("", start_after="ab/4")] == LISTING_KEYS[5:]
    assert list(store.list_keys("nothing/here/")) == []
    assert list(store.list_keys("a/1/")) == []


def test_list_prefixes(seeder: ArtifactStore) -> None:
    for key in [
        "buffer/cam1/2026-07-01/080000.mp4",
        "buffer/cam1/2026-07-01/090000.mp4",
        "buffer/cam1/2026-07-02/sub/080000.mp4",
        "buffer/cam1/notes.txt",
        "buffer/cam2/2026-06-30/120000.mp4",
        "raw/videos/manifest.csv",
    ]:
        seeder.write_bytes(key, b"x")
    if isinstance(seeder, LocalArtifactStore):  # no object, so no "folder" (as on S3)
        (Path(seeder.root) / "buffer" / "cam1" / "2026-07-03").mkdir()
        (Path(seeder.root) / "buffer" / "cam1" / "2026-07-04").mkdir()
        (Path(seeder.root) / "buffer" / "cam1" / "2026-07-04" / ".tmp-x.part").write_bytes(b"partial")

    assert seeder.list_prefixes("buffer/cam1/") == ["buffer/cam1/2026-07-01/", "buffer/cam1/2026-07-02/"]
    assert seeder.list_prefixes("buffer/cam1/2026-07-0") == ["buffer/cam1/2026-07-01/", "buffer/cam1/2026-07-02/"]
    assert seeder.list_prefixes("buffer/") == ["buffer/cam1/", "buffer/cam2/"]
    assert seeder.list_prefixes("") == ["buffer/", "raw/"]
    assert seeder.list_prefixes("buffer/cam1/2026-07-01/") == []
    assert seeder.list_prefixes("buffer/cam9/") == []


def test_list_many_date_prefixes(seeder: ArtifactStore) -> None:
    """The sensor's layout at scale: 2007 objects in 1001 date folders (several listing pages on S3)."""
    days = [(date(2023, 1, 1) + timedelta(days=i)).isoformat() for i in range(1001)]
    keys = [f"buffer/cam1/{day}/{hour:02d}0000.mp4" for day in days for hour in (8, 17)]
    keys += [f"buffer/cam2/{day}/080000.mp4" for day in days[:5]]
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda key: seeder.write_bytes(key, b"v"), keys))

    assert seeder.list_prefixes("buffer/cam1/") == [f"buffer/cam1/{day}/" for day in days]
    assert seeder.list_prefixes("buffer/cam1/2024-02-") == [f"buffer/cam1/2024-02-{d:02d}/" for d in range(1, 30)]
    assert seeder.list_prefixes("buffer/") == ["buffer/cam1/", "buffer/cam2/"]

    listed = [o.key for o in seeder.list_keys("buffer/cam1/")]
    assert listed == sorted(k for k in keys if k.startswith("buffer/cam1/"))
    assert len(listed) == 2002
    tail = [o.key for o in seeder.list_keys("buffer/cam1/", start_after=f"buffer/cam1/{days[99]}/170000.mp4")]
    assert tail == listed[200:]


# --------------------------------------------------------------------------- guards


@pytest.mark.parametrize("prefix", SOURCE_PREFIXES)
def test_source_prefixes_are_read_only(store: ArtifactStore, seeder: ArtifactStore, tmp_path: Path, prefix: str) -> None:
    key = f"{prefix}cam1/clip.mp4"
    assert store.is_source_key(key)
    local_file = tmp_path / "clip.mp4"
    local_file.write_bytes(b"clip")
    attempts: list[Callable[[], object]] = [
        lambda: store.write_bytes(key, b"clip"),
        lambda: store.upload_file(local_file, key),
        lambda: store.upload_fileobj(io.BytesIO(b"clip"), key),
        lambda: store.write_if_absent_or_same(key, b"clip"),
        lambda: store.delete(key),
    ]
    for attempt in attempts:
        with pytest.raises(SourceWriteError, match="allow_source_writes=True") as err:
            attempt()
        assert key in str(err.value) and prefix in str(err.value)
        assert isinstance(err.value, PermissionError)
    assert not seeder.exists(key)

    seeder.write_bytes(key, b"seeded")  # the seeding view may write sources ...
    assert store.read_bytes(key) == b"seeded"  # ... and the pipeline reads them
    assert [o.key for o in store.list_keys(prefix)] == [key]
    with store.local_copy(key) as path:
        assert path.read_bytes() == b"seeded"


def test_non_source_lookalikes_are_writable(store: ArtifactStore) -> None:
    for key in ["rawdata/x.bin", "annotations/exports/v1/coco.json", "annotations/incoming.json", "buffers/x"]:
        assert not store.is_source_key(key)
        store.write_bytes(key, b"ok")
        assert store.read_bytes(key) == b"ok"


def test_write_if_absent_or_same(store: ArtifactStore) -> None:
    key = "datasets/v3/manifest.json"
    assert store.write_if_absent_or_same(key, b'{"v": 3}') is True
    assert store.write_if_absent_or_same(key, b'{"v": 3}') is False
    with pytest.raises(ArtifactConflictError) as err:
        store.write_if_absent_or_same(key, b'{"v": 4}')
    message = str(err.value)
    assert key in message
    assert hashlib.sha256(b'{"v": 3}').hexdigest() in message
    assert hashlib.sha256(b'{"v": 4}').hexdigest() in message
    assert (err.value.existing_sha256, err.value.new_sha256) == (
        hashlib.sha256(b'{"v": 3}').hexdigest(),
        hashlib.sha256(b'{"v": 4}').hexdigest(),
    )
    assert store.read_bytes(key) == b'{"v": 3}'
    assert leftovers(store) == []


def test_write_if_absent_or_same_races(store: ArtifactStore) -> None:
    """Eight writers of the same versioned key: exactly one creates it, the rest see it."""
    key = "models/v7/best.onnx"
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: store.write_if_absent_or_same(key, b"weights"), range(8)))
    assert results.count(True) == 1 and results.count(False) == 7
    assert store.read_bytes(key) == b"weights"


BAD_KEYS = ["", "/etc/passwd", "a/../b", "..", "../x", "a/..", "a\\b", "a//b", "./a", "a/./b", "a/", ".tmp-x", "a/.tmp-y.part"]


@pytest.mark.parametrize("bad", BAD_KEYS)
def test_key_validation(store: ArtifactStore, tmp_path: Path, bad: str) -> None:
    local_file = tmp_path / "f"
    local_file.write_bytes(b"x")
    for call in [
        lambda: store.write_bytes(bad, b"x"),
        lambda: store.write_if_absent_or_same(bad, b"x"),
        lambda: store.upload_file(local_file, bad),
        lambda: store.read_bytes(bad),
        lambda: store.stat(bad),
        lambda: store.exists(bad),
        lambda: store.uri(bad),
        lambda: store.download_file(bad, tmp_path / "out"),
        lambda: store.delete(bad),
    ]:
        with pytest.raises(InvalidKeyError, match="invalid storage key") as err:
            call()
        assert isinstance(err.value, ValueError)
    with pytest.raises(InvalidKeyError):
        with store.local_copy(bad):
            pass
    assert list(store.list_keys("")) == []
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad", ["/abs/", "a/../", "..", "a\\b/", "a//", "./"])
def test_prefix_validation(store: ArtifactStore, bad: str) -> None:
    with pytest.raises(InvalidKeyError):
        list(store.list_keys(bad))
    with pytest.raises(InvalidKeyError):
        store.list_prefixes(bad)


# --------------------------------------------------------------------------- S3 specifics


@pytest.mark.integration
def test_s3_keys_live_under_the_prefix(s3_endpoint: str, s3_bucket: str) -> None:
    store = S3ArtifactStore(bucket=s3_bucket, prefix="/team/lbzf/", endpoint_url=s3_endpoint, region_name=REGION)
    store.write_bytes("frames/a.jpg", b"a")
    raw = raw_client(s3_endpoint).list_objects_v2(Bucket=s3_bucket)
    assert [o["Key"] for o in raw["Contents"]] == ["team/lbzf/frames/a.jpg"]
    assert store.uri("frames/a.jpg") == f"s3://{s3_bucket}/team/lbzf/frames/a.jpg"
    assert [o.key for o in store.list_keys("")] == ["frames/a.jpg"]
    assert store.list_prefixes("") == ["frames/"]
    head = raw_client(s3_endpoint).head_object(Bucket=s3_bucket, Key="team/lbzf/frames/a.jpg")
    assert head["ContentType"] == "image/jpeg"  # guessed from the key


@pytest.mark.integration
def test_s3_client_is_cached_and_configured(s3_store: S3ArtifactStore) -> None:
    client = s3_store._get_client()
    assert s3_store._get_client() is client
    assert client.meta.config.retries.get("total_max_attempts", client.meta.config.retries.get("max_attempts")) in (8, 9)
    assert client.meta.config.connect_timeout and client.meta.config.read_timeout


@pytest.fixture
def kms_key_arn(s3_endpoint: str) -> str:
    return raw_client(s3_endpoint, "kms").create_key(Description="lbzf artifacts")["KeyMetadata"]["Arn"]


def _record_requests(store: S3ArtifactStore) -> list[tuple[str, dict[str, Any]]]:
    """Every S3 request's operation and parameters, via botocore's event system."""
    seen: list[tuple[str, dict[str, Any]]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        seen.append((model.name, dict(params)))

    store._get_client().meta.events.register("provide-client-params.s3", record)
    return seen


@pytest.mark.integration
def test_s3_sse_kms_on_every_write(s3_endpoint: str, s3_bucket: str, kms_key_arn: str, tmp_path: Path) -> None:
    store = S3ArtifactStore(
        bucket=s3_bucket, endpoint_url=s3_endpoint, region_name=REGION, kms_key_id=kms_key_arn, multipart_threshold_mb=5
    )
    seen = _record_requests(store)
    random_file(tmp_path / "small.bin", 1000)
    random_file(tmp_path / "big.bin", 11 * MiB)

    store.write_bytes("a/bytes.bin", b"secret")
    store.upload_file(tmp_path / "small.bin", "a/small.bin")
    store.upload_file(tmp_path / "big.bin", "a/big.bin")  # multipart
    assert store.write_if_absent_or_same("a/versioned.json", b"{}") is True

    writes = [(op, params) for op, params in seen if op in ("PutObject", "CreateMultipartUpload")]
    assert sorted(op for op, _ in writes) == ["CreateMultipartUpload", "PutObject", "PutObject", "PutObject"]
    for op, params in writes:
        assert params["ServerSideEncryption"] == "aws:kms", op
        assert params["SSEKMSKeyId"] == kms_key_arn, op

    s3 = raw_client(s3_endpoint)
    for key in ["a/bytes.bin", "a/small.bin", "a/big.bin", "a/versioned.json"]:
        head = s3.head_object(Bucket=s3_bucket, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms", key
        assert head["SSEKMSKeyId"] == kms_key_arn, key
    assert store.read_bytes("a/big.bin") == (tmp_path / "big.bin").read_bytes()


@pytest.mark.integration
def test_s3_no_unencrypted_fallback(s3_endpoint: str, s3_bucket: str, kms_key_arn: str) -> None:
    """If the encrypted write is refused, the error surfaces; nothing is retried without SSE."""
    store = S3ArtifactStore(bucket=s3_bucket, endpoint_url=s3_endpoint, region_name=REGION, kms_key_id=kms_key_arn)
    seen = _record_requests(store)

    def refuse(**_: Any) -> None:
        raise ClientError(
            {"Error": {"Code": "KMS.DisabledException", "Message": "key disabled (simulated)"},
             "ResponseMetadata": {"HTTPStatusCode": 400}},
            "PutObject",
        )

    store._get_client().meta.events.register("before-call.s3.PutObject", refuse)
    with pytest.raises(S3RequestError, match=r"KMS.DisabledException.*never falls back") as err:
        store.write_bytes("a/x.bin", b"x")
    assert isinstance(err.value.__cause__, ClientError) and f"s3://{s3_bucket}/a/x.bin" in str(err.value)
    with pytest.raises(S3RequestError, match=r"a/y.bin.*KMS.DisabledException"):
        store.write_if_absent_or_same("a/y.bin", b"y")
    puts = [params for op, params in seen if op == "PutObject"]
    assert len(puts) == 2 and all(p.get("ServerSideEncryption") == "aws:kms" for p in puts)
    assert "Contents" not in raw_client(s3_endpoint).list_objects_v2(Bucket=s3_bucket)

    empty_key = S3ArtifactStore(bucket=s3_bucket, endpoint_url=s3_endpoint, region_name=REGION, kms_key_id=" ")
    with pytest.raises(ValueError, match="Refusing to write unencrypted"):
        empty_key.write_bytes("a/z.bin", b"z")
    assert "Contents" not in raw_client(s3_endpoint).list_objects_v2(Bucket=s3_bucket)


# --------------------------------------------------------------------------- as a Dagster resource


def test_store_as_dagster_resource(make_store: StoreFactory) -> None:
    import dagster as dg

    @dg.asset
    def manifest(store: ArtifactStore) -> str:
        info = store.write_bytes("manifests/run.json", b'{"ok": true}')
        return info.key

    result = dg.materialize([manifest], resources={"store": make_store()})
    assert result.success
    assert result.output_for_node("manifest") == "manifests/run.json"
    assert make_store().read_bytes("manifests/run.json") == b'{"ok": true}'
