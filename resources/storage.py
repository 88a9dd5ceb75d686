"""The artifact store: resources hide where bytes live.

Every asset reads and writes its bytes through an :class:`ArtifactStore`
resource, never through paths or S3 URLs of its own.  Keys are POSIX paths
relative to the store root, for example ``raw/videos/manifest.csv`` or
``frames/ops/<video>/<t>.jpg``.  The same key means the same object whether
the store is a local directory (:class:`LocalArtifactStore`) or an S3 bucket
(:class:`S3ArtifactStore`); both implementations have the same semantics and
are exercised by the same test suite (``tests/test_storage.py``).

Guarantees
----------
* Writes are atomic: a reader sees either the old object or the complete new
  one, never a partial one.  Locally: temp file ``.tmp-*`` in the target's
  directory, fsync, ``os.replace``.  On S3: a single PUT below
  ``multipart_threshold_mb``, otherwise a multipart upload that is aborted on
  any failure, so nothing remains at the final key and no upload stays open.
* Downloads are atomic on the local side (temp file next to the target, then
  ``os.replace``).
* Keys are validated: no empty keys, no absolute keys, no ``..`` or ``.``
  segments, no empty segments, no backslashes, and no segment starting with
  ``.tmp-`` (reserved for in-flight local writes).
* Source prefixes (:data:`SOURCE_PREFIXES`: ``raw/``, ``buffer/``,
  ``annotations/incoming/``) are read-only to the pipeline: every write method
  refuses them with :class:`SourceWriteError` unless the store was built with
  ``allow_source_writes=True`` (only the demo generator and tests that seed
  sources do that).
* Versioned artifacts use :meth:`ArtifactStore.write_if_absent_or_same`, which
  never replaces an existing object with different bytes.
* With ``kms_key_id`` set, every S3 write (PutObject, CreateMultipartUpload)
  carries ``ServerSideEncryption='aws:kms'`` and ``SSEKMSKeyId``; there is no
  unencrypted fallback.  A failed encrypted write is an error.

Deployment environment variables
--------------------------------
The deployment module (not this one) builds the store from the environment:

``LBZF_STORAGE_ROOT``
    Root directory of a :class:`LocalArtifactStore` (used when no bucket is
    configured).
``LBZF_S3_BUCKET``
    Bucket of an :class:`S3ArtifactStore`; when set, S3 is used.
``LBZF_S3_PREFIX``
    Optional key prefix inside the bucket (``S3ArtifactStore.prefix``).
``LBZF_S3_ENDPOINT_URL``
    Optional endpoint for S3-compatible servers (MinIO, Ceph, moto in tests).
``LBZF_S3_REGION``
    Optional region name.
``LBZF_S3_KMS_KEY_ID``
    Optional KMS key id/ARN/alias; when set, all writes use SSE-KMS with it.

Credentials come from the standard boto3 chain (environment, profile,
instance/container role); they are never configuration of this resource.
"""
from __future__ import annotations

import abc
import contextlib
import io
import logging
import math
import mimetypes
import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import IO, Any, BinaryIO, Callable, Iterator

import dagster as dg
from pydantic import PrivateAttr

from pipeline.errors import StructuredError
from pipeline.hashing import sha256_bytes

__all__ = [
    "SOURCE_PREFIXES",
    "ArtifactConflictError",
    "ArtifactStore",
    "InvalidKeyError",
    "LocalArtifactStore",
    "ObjectInfo",
    "S3ArtifactStore",
    "SourceReadError",
    "SourceWriteError",
    "StorageError",
    "validate_key",
    "validate_prefix",
]

log = logging.getLogger(__name__)

#: Prefixes that hold source data; the pipeline only reads them.
SOURCE_PREFIXES: tuple[str, ...] = ("raw/", "buffer/", "annotations/incoming/")

#: Name prefix of in-flight local temp files; never a valid key segment.
TMP_PREFIX = ".tmp-"

_MiB = 1024 * 1024
_COPY_CHUNK = 1 * _MiB
_S3_MIN_PART = 5 * _MiB
_S3_MAX_PARTS = 10_000
_S3_MAX_SINGLE_PUT = 5 * 1024 * _MiB
_DEFAULT_PART = 8 * _MiB
_UNKNOWN_SIZE_PART = 16 * _MiB
_UPLOAD_WORKERS = 4
_DOWNLOAD_ATTEMPTS = 3

# Client creation is serialised (botocore sessions are not thread-safe) and the
# parsed service models are shared between stores (loading them is the slow part).
_CLIENT_LOCK = threading.Lock()
_SHARED_LOADER: Any = None


# --------------------------------------------------------------------------- errors


class StorageError(StructuredError, Exception):
    """Base class of the artifact store's own errors; each sets ``file`` (the key or URI), ``field``, ``value``
    and ``remedy`` (pipeline.errors.StructuredError)."""


class InvalidKeyError(StorageError, ValueError):
    """A key or prefix that is not a clean relative POSIX path."""

    def __init__(self, key: object, problem: str):
        self.key = key
        self.problem = problem
        self.file, self.field, self.value = str(key), "key", key
        self.remedy = ("use a relative POSIX path such as 'frames/ops/<video>/<t>.jpg' (no leading '/', no '..' or "
                       "'.' segments, no empty segments, no backslashes, no '.tmp-' names)")
        super().__init__(
            f"invalid storage key {key!r}: {problem}. Keys are relative POSIX paths such as "
            "'frames/ops/<video>/<t>.jpg' (no leading '/', no '..' or '.' segments, no empty "
            "segments, no backslashes, no '.tmp-' names)."
        )


class SourceWriteError(StorageError, PermissionError):
    """A write under a source prefix by a store that may not write sources."""

    def __init__(self, key: str, uri: str):
        self.key = key
        prefix = next(p for p in SOURCE_PREFIXES if key.startswith(p))
        self.file, self.field, self.value = uri, "key prefix", prefix
        self.remedy = ("write derived artifacts outside the source prefixes; only the demo generator and tests that "
                       "seed sources construct the store with allow_source_writes=True")
        super().__init__(
            f"refusing to write {key!r} ({uri}): keys under {prefix!r} are source data and "
            f"read-only to the pipeline (source prefixes: {', '.join(SOURCE_PREFIXES)}). "
            "Write derived artifacts elsewhere; only the demo generator and tests that seed "
            "sources construct the store with allow_source_writes=True."
        )


class SourceReadError(StorageError, OSError):
    """The stream being written failed part-way; nothing was stored at the key (an existing object is kept).

    The stream's own exception is the ``__cause__``. An ``OSError`` so callers catching I/O errors of the
    source still catch it."""

    def __init__(self, key: str, uri: str, error: BaseException, bytes_read: int):
        self.key = key
        self.bytes_read = bytes_read
        self.file, self.field, self.value = uri, "source stream", f"{type(error).__name__}: {error}"
        self.remedy = ("nothing was stored at the key (an existing object is unchanged); re-run the write once the "
                       "source can be read to its end (see the cause below)")
        super().__init__(f"writing {key!r} ({uri}): reading the source failed after {bytes_read} bytes "
                         f"({self.value}). Remedy: {self.remedy}")


class _SourceReader:
    """The caller's stream, read through the store: remembers the stream's own error (and how far it got) so
    the store can tell it from its own and name the key it was writing."""

    def __init__(self, fileobj: BinaryIO):
        self._fileobj = fileobj
        self.bytes_read = 0
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._fileobj.read(size)
        except Exception as exc:
            self.error = exc
            raise
        self.bytes_read += len(data or b"")
        return data


@contextlib.contextmanager
def _reading_source(fileobj: BinaryIO, key: str, uri: Callable[[str], str]) -> Iterator[_SourceReader]:
    """Yield ``fileobj`` wrapped in a `_SourceReader`; its own error leaves as a `SourceReadError`."""
    reader = _SourceReader(fileobj)
    try:
        yield reader
    except Exception as exc:
        if exc is not reader.error:
            raise
        error = SourceReadError(key, uri(key), exc, reader.bytes_read)
        for note in getattr(exc, "__notes__", []):  # e.g. a failed multipart abort
            error.add_note(note)
        raise error from exc


class ArtifactConflictError(StorageError):
    """A versioned artifact exists with different bytes than the ones being written."""

    def __init__(self, key: str, uri: str, existing_sha256: str, new_sha256: str):
        self.key = key
        self.uri = uri
        self.existing_sha256 = existing_sha256
        self.new_sha256 = new_sha256
        self.file, self.field, self.value = uri, "sha256", {"existing": existing_sha256, "new": new_sha256}
        self.remedy = "versioned artifacts are immutable: write the new content under a new version key"
        super().__init__(
            f"refusing to overwrite versioned artifact {key!r} ({uri}): it exists with "
            f"sha256 {existing_sha256} but the new bytes have sha256 {new_sha256}. "
            "Versioned artifacts are immutable; write the new content under a new version key."
        )


class S3RequestError(StorageError):
    """An S3 request that failed (after botocore's retries), naming the object, the S3 error and a remedy.

    ``code`` and ``status`` are S3's error code and HTTP status ('' and 0 when no answer came back);
    the botocore exception is the ``__cause__``."""

    def __init__(self, operation: str, where: str, code: str, status: int, detail: str):
        self.operation = operation
        self.where = where
        self.code = code
        self.status = status
        what = f"{code} (HTTP {status})" if status else (code or "no answer")
        self.file, self.field, self.value = where, f"S3 {operation}", what
        self.remedy = _s3_remedy(code, status)
        super().__init__(f"S3 {operation} of {where} failed: {what}: {detail}. Remedy: {self.remedy}")


def _s3_remedy(code: str, status: int) -> str:
    """What an operator can do about an S3 error code (docs/deployment.md, "IAM and bucket policy")."""
    if "KMS" in code:
        return ("check that the KMS key in LBZF_S3_KMS_KEY_ID is enabled and that the pipeline role may use it "
                "(kms:GenerateDataKey to write, kms:Decrypt to read); the pipeline never falls back to "
                "unencrypted writes")
    if code in ("AccessDenied", "Forbidden", "403") or status == 403:
        return ("check that the pipeline role's IAM policy allows this action on this key "
                "(docs/deployment.md, IAM policy; source prefixes are read-only), that the request uses TLS and, "
                "for writes, SSE-KMS with the key the bucket policy expects (LBZF_S3_KMS_KEY_ID)")
    if code == "NoSuchBucket":
        return "check LBZF_S3_BUCKET and LBZF_S3_REGION: the bucket does not exist or is in another region"
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "NoCredentials"):
        return ("give the pipeline valid AWS credentials (the pod's IAM role, or AWS_ACCESS_KEY_ID / "
                "AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN); they are read from the standard chain, never from "
                "configuration files")
    if code in ("SlowDown", "Throttling", "RequestLimitExceeded", "ServiceUnavailable") or status in (429, 503) \
            or status >= 500 or code in ("EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError",
                                         "ConnectTimeoutError"):
        return ("S3 kept failing after botocore's retries (8 attempts with backoff); nothing partial was left at "
                "the key, so re-run the step when the endpoint (LBZF_S3_ENDPOINT_URL, network) is healthy")
    return "see the S3 error code above in the S3 documentation; nothing partial was left at the key"


# --------------------------------------------------------------------------- keys


def _check_segments(value: str, segments: list[str]) -> None:
    for segment in segments:
        if segment == "":
            raise InvalidKeyError(value, "empty path segment ('//')")
        if segment in (".", ".."):
            raise InvalidKeyError(value, f"'{segment}' segment")
        if segment.startswith(TMP_PREFIX):
            raise InvalidKeyError(value, f"segment {segment!r} uses the reserved prefix {TMP_PREFIX!r}")


def _check_common(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidKeyError(value, f"{what} must be a str, got {type(value).__name__}")
    if "\\" in value:
        raise InvalidKeyError(value, "contains a backslash")
    if "\x00" in value:
        raise InvalidKeyError(value, "contains a NUL character")
    if value.startswith("/"):
        raise InvalidKeyError(value, f"absolute {what} (leading '/')")
    return value


def validate_key(key: object) -> str:
    """Return ``key`` if it is a valid object key, else raise :class:`InvalidKeyError`."""
    key = _check_common(key, "key")
    if key == "":
        raise InvalidKeyError(key, "empty key")
    if key.endswith("/"):
        raise InvalidKeyError(key, "ends with '/' (that is a prefix, not an object key)")
    _check_segments(key, key.split("/"))
    return key


def validate_prefix(prefix: object) -> str:
    """Return ``prefix`` if it is a valid listing prefix ('' means everything)."""
    prefix = _check_common(prefix, "prefix")
    if prefix == "":
        return prefix
    segments = prefix.split("/")
    if segments[-1] == "":  # trailing '/'
        segments = segments[:-1]
        _check_segments(prefix, segments)
    else:
        # the last segment may be partial ('buffer/cam1/2026-'), but not '.' or '..'
        _check_segments(prefix, segments[:-1])
        if segments[-1] in (".", ".."):
            raise InvalidKeyError(prefix, f"'{segments[-1]}' segment")
    return prefix


# --------------------------------------------------------------------------- info


@dataclass(frozen=True)
class ObjectInfo:
    """What the store knows about one object."""

    key: str
    size: int
    etag: str
    last_modified: datetime  # timezone-aware, UTC


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


# --------------------------------------------------------------------------- base


class ArtifactStore(dg.ConfigurableResource, abc.ABC):
    """Where the pipeline's bytes live.  Keys are relative POSIX paths.

    Subclasses implement the primitives; key validation and the source-prefix
    guard are applied here so both implementations behave the same.
    """

    allow_source_writes: bool = False

    # ---- helpers shared by both implementations

    @staticmethod
    def is_source_key(key: str) -> bool:
        """True when ``key`` lies under a source prefix (read-only to the pipeline)."""
        return any(key.startswith(prefix) for prefix in SOURCE_PREFIXES)

    def _check_writable(self, key: str) -> str:
        key = validate_key(key)
        if self.is_source_key(key) and not self.allow_source_writes:
            raise SourceWriteError(key, self.uri(key))
        return key

    # ---- interface

    @abc.abstractmethod
    def uri(self, key: str) -> str:
        """``file:///...`` or ``s3://bucket/prefix/key`` of ``key``."""

    @abc.abstractmethod
    def stat(self, key: str) -> ObjectInfo | None:
        """Size, etag and modification time of ``key``; None when absent."""

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    @abc.abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """All bytes of ``key``; :class:`FileNotFoundError` when absent."""

    @abc.abstractmethod
    def write_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> ObjectInfo:
        """Atomically create or replace ``key`` with ``data``."""

    @abc.abstractmethod
    def upload_fileobj(
        self, fileobj: BinaryIO, key: str, *, content_type: str | None = None, size_hint: int | None = None
    ) -> ObjectInfo:
        """Atomically store everything read from ``fileobj`` (until EOF) at ``key``.

        If reading fails part-way nothing is left at ``key`` (an existing object
        stays as it was).
        """

    def upload_file(self, local_path: str | os.PathLike[str], key: str, *, content_type: str | None = None) -> ObjectInfo:
        """Atomically store the local file ``local_path`` at ``key``."""
        self._check_writable(key)
        with open(local_path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            return self.upload_fileobj(handle, key, content_type=content_type, size_hint=size)

    @abc.abstractmethod
    def download_file(self, key: str, local_path: str | os.PathLike[str]) -> Path:
        """Copy ``key`` to ``local_path`` atomically (temp file, then ``os.replace``)."""

    @abc.abstractmethod
    def list_keys(self, prefix: str = "", start_after: str | None = None) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (recursive), sorted by key.

        ``prefix`` is a plain string prefix, as in S3 (``'frames/ops/vid'``
        matches ``frames/ops/video1/...``).  With ``start_after`` only keys
        strictly greater than it are returned.
        """

    @abc.abstractmethod
    def list_prefixes(self, prefix: str = "", start_after: str | None = None) -> list[str]:
        """The immediate "sub-folders" under ``prefix`` (delimiter ``'/'``), sorted.

        Each entry is a full prefix ending with ``'/'``: ``list_prefixes('buffer/cam1/')``
        gives ``['buffer/cam1/2026-07-01/', ...]``.  Objects directly under
        ``prefix`` are not included; a folder appears only when it holds at least
        one object (S3 has no empty folders).  With ``start_after`` only folders
        that sort strictly after it are returned (S3's ``StartAfter``):
        ``start_after='buffer/cam1/2026-07-02'`` skips the earlier days without
        reading them and keeps ``buffer/cam1/2026-07-02/``.  Give a folder-level
        bound like that one; a bound inside a folder is not portable (S3 servers
        differ on whether that folder is returned).
        """

    @abc.abstractmethod
    def local_copy(self, key: str) -> contextlib.AbstractContextManager[Path]:
        """Context manager yielding a local filesystem path holding ``key``'s bytes.

        Treat the path as read-only: for the local store it is the stored file
        itself; for S3 it is a temporary download removed on exit.
        """

    @abc.abstractmethod
    def write_if_absent_or_same(self, key: str, data: bytes, *, content_type: str | None = None) -> bool:
        """Create ``key`` with ``data`` unless it exists.

        Returns True when written, False when the identical bytes were already
        there; raises :class:`ArtifactConflictError` (naming the key and both
        sha256s) when different bytes are there.  Creation is atomic and never
        replaces an existing object.
        """

    @abc.abstractmethod
    def delete(self, key: str) -> bool:
        """Remove ``key``; True if it existed.  Refused under source prefixes."""

    @abc.abstractmethod
    def sweep_incomplete(self, older_than_s: float = 86400.0) -> list[str]:
        """Clean up writes that were killed before they finished and are older than ``older_than_s``:
        orphaned ``.tmp-*.part`` files locally, open multipart uploads on S3 (aborted; a bucket
        lifecycle rule does the same, this covers servers without one). Returns what was removed
        (keys, or the temp files' store-relative paths). Finished objects are never touched."""

    def _conflict_or_same(self, key: str, existing: bytes, data: bytes) -> bool:
        if existing == data:
            return False
        raise ArtifactConflictError(key, self.uri(key), sha256_bytes(existing), sha256_bytes(data))


# --------------------------------------------------------------------------- local


def _fsync_dir(path: Path) -> None:
    """Persist a rename in ``path`` (best effort; not all platforms allow it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def _atomic_temp(target: Path) -> Iterator[tuple[IO[bytes], Path]]:
    """A temp file next to ``target``; removed unless the caller moved it away."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle, tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _finish_temp(handle: IO[bytes]) -> None:
    handle.flush()
    os.fsync(handle.fileno())


class LocalArtifactStore(ArtifactStore):
    """Artifacts in a directory: ``root/<key>``."""

    root: str

    _root_cache: Path | None = PrivateAttr(default=None)

    def _root(self) -> Path:
        if self._root_cache is None:
            if not self.root:
                raise ValueError("LocalArtifactStore.root is empty; set it to a directory (LBZF_STORAGE_ROOT)")
            self._root_cache = Path(self.root).expanduser().resolve()
        return self._root_cache

    def _path(self, key: str) -> Path:
        return self._root().joinpath(*validate_key(key).split("/"))

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    def _info(self, key: str, st: os.stat_result) -> ObjectInfo:
        return ObjectInfo(
            key=key,
            size=st.st_size,
            etag=f"{st.st_size:x}-{st.st_mtime_ns:x}",
            last_modified=datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=timezone.utc),
        )

    def stat(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not path.is_file():
            return None
        return self._info(key, st)

    def _existing_file(self, key: str) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(f"no object {key!r} at {path.as_uri()}")
        return path

    def read_bytes(self, key: str) -> bytes:
        return self._existing_file(key).read_bytes()

    def write_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> ObjectInfo:
        return self.upload_fileobj(io.BytesIO(data), key, content_type=content_type)

    def upload_fileobj(
        self, fileobj: BinaryIO, key: str, *, content_type: str | None = None, size_hint: int | None = None
    ) -> ObjectInfo:
        key = self._check_writable(key)
        target = self._path(key)
        with _reading_source(fileobj, key, self.uri) as source, _atomic_temp(target) as (handle, tmp):
            shutil.copyfileobj(source, handle, _COPY_CHUNK)
            _finish_temp(handle)
            os.replace(tmp, target)
        _fsync_dir(target.parent)
        return self._info(key, target.stat())

    def download_file(self, key: str, local_path: str | os.PathLike[str]) -> Path:
        source = self._existing_file(key)
        target = Path(local_path)
        with open(source, "rb") as src, _atomic_temp(target) as (handle, tmp):
            shutil.copyfileobj(src, handle, _COPY_CHUNK)
            _finish_temp(handle)
            os.replace(tmp, target)
        return target

    def list_keys(self, prefix: str = "", start_after: str | None = None) -> Iterator[ObjectInfo]:
        prefix = validate_prefix(prefix)
        if start_after is not None:
            validate_prefix(start_after)
        root = self._root()
        base_rel = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = root.joinpath(*base_rel.split("/")) if base_rel else root
        if not base.is_dir():
            return
        found: list[tuple[str, str]] = []
        for dirpath, dirnames, filenames in os.walk(base):
            rel_dir = os.path.relpath(dirpath, root)
            rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
            # prune directories that cannot contain matching keys
            dirnames[:] = [
                d for d in dirnames
                if (rel_dir + d + "/").startswith(prefix) or prefix.startswith(rel_dir + d + "/")
            ]
            for name in filenames:
                if name.startswith(TMP_PREFIX):
                    continue
                key = rel_dir + name
                if not key.startswith(prefix):
                    continue
                if start_after is not None and key <= start_after:
                    continue
                found.append((key, os.path.join(dirpath, name)))
        found.sort()
        for key, path in found:
            try:
                st = os.stat(path)
            except FileNotFoundError:  # removed while listing
                continue
            if os.path.isfile(path):
                yield self._info(key, st)

    def _has_object(self, directory: str | os.PathLike[str]) -> bool:
        """True when ``directory`` holds an object at any depth. Stops at the first one: a folder
        of a thousand day folders costs one path down, not a read of every entry (as os.walk did)."""
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if not entry.is_dir():
                        if not entry.name.startswith(TMP_PREFIX):
                            return True
                    elif not entry.is_symlink() and self._has_object(entry.path):  # os.walk skips dir links too
                        return True
        except OSError:  # removed meanwhile, or unreadable (os.walk ignored those as well)
            pass
        return False

    def list_prefixes(self, prefix: str = "", start_after: str | None = None) -> list[str]:
        prefix = validate_prefix(prefix)
        if start_after is not None:
            validate_prefix(start_after)
        base_rel, _, partial = prefix.rpartition("/")
        base = self._root().joinpath(*base_rel.split("/")) if base_rel else self._root()
        if not base.is_dir():
            return []
        head = base_rel + "/" if base_rel else ""
        out = []
        with os.scandir(base) as entries:
            for entry in entries:
                if not entry.name.startswith(partial):
                    continue
                folder = f"{head}{entry.name}/"
                if start_after is not None and folder <= start_after:
                    continue  # skipped unread
                if entry.is_dir() and self._has_object(Path(entry.path)):
                    out.append(folder)
        return sorted(out)

    @contextlib.contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        yield self._existing_file(key)

    def write_if_absent_or_same(self, key: str, data: bytes, *, content_type: str | None = None) -> bool:
        key = self._check_writable(key)
        target = self._path(key)
        if target.is_file():
            return self._conflict_or_same(key, target.read_bytes(), data)
        with _atomic_temp(target) as (handle, tmp):
            handle.write(data)
            _finish_temp(handle)
            try:
                os.link(tmp, target)  # atomic create; never replaces
            except FileExistsError:
                return self._conflict_or_same(key, self.read_bytes(key), data)
            except OSError:  # filesystem without hard links
                if target.exists():
                    return self._conflict_or_same(key, self.read_bytes(key), data)
                os.replace(tmp, target)
        _fsync_dir(target.parent)
        return True

    def delete(self, key: str) -> bool:
        key = self._check_writable(key)
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            return False
        return True

    def sweep_incomplete(self, older_than_s: float = 86400.0) -> list[str]:
        root, cutoff, removed = self._root(), time.time() - older_than_s, []
        for path in sorted(root.rglob(f"{TMP_PREFIX}*.part")):
            rel = path.relative_to(root).as_posix()
            if self.is_source_key(rel) and not self.allow_source_writes:
                continue  # source folders are not the pipeline's to touch
            with contextlib.suppress(FileNotFoundError):
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed.append(rel)
        return removed


# --------------------------------------------------------------------------- S3


def _read_up_to(reader: BinaryIO, size: int) -> bytes:
    """Read ``size`` bytes, fewer only at EOF (``read`` may return short counts)."""
    chunks: list[bytes] = []
    remaining = size
    while remaining > 0:
        chunk = reader.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _error_code(exc: Exception) -> tuple[str, int]:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def _is_not_found(exc: Exception) -> bool:
    code, status = _error_code(exc)
    return code in ("NoSuchKey", "404", "NotFound") or status == 404


def _response_time(response: dict[str, Any]) -> datetime:
    header = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    if header:
        with contextlib.suppress(TypeError, ValueError):
            return _utc(parsedate_to_datetime(header))
    return datetime.now(timezone.utc)


def _part_size(size_hint: int | None) -> int:
    if size_hint is None:
        return _UNKNOWN_SIZE_PART
    needed = math.ceil(size_hint / _S3_MAX_PARTS)
    return max(_DEFAULT_PART, math.ceil(needed / _MiB) * _MiB)


class _PushbackReader:
    """A reader that first returns already-read ``head`` bytes, then the stream."""

    def __init__(self, head: bytes, rest: BinaryIO):
        self._head = head
        self._rest = rest

    def read(self, size: int) -> bytes:
        if self._head:
            out, self._head = self._head[:size], self._head[size:]
            return out
        return self._rest.read(size)


class _ClientSlot:
    """Holds a store's lazily made client and the settings it was made with.

    A ``model_copy(update=...)`` shares the slot, so the client is rebuilt when the
    endpoint or region differ; deep copies and pickles start empty (a boto3
    client can be neither copied nor pickled)."""

    __slots__ = ("client", "settings")

    def __init__(self) -> None:
        self.client: Any = None
        self.settings: tuple[str | None, str | None] | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> _ClientSlot:
        return _ClientSlot()

    def __reduce__(self) -> tuple[type[_ClientSlot], tuple[()]]:
        return (_ClientSlot, ())


class S3ArtifactStore(ArtifactStore):
    """Artifacts in an S3 (or S3-compatible) bucket: ``s3://bucket/prefix/<key>``."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region_name: str | None = None
    kms_key_id: str | None = None
    multipart_threshold_mb: int = 64

    _client_slot: _ClientSlot = PrivateAttr(default_factory=lambda: _ClientSlot())

    # ---- client and key mapping

    def _get_client(self) -> Any:
        """The boto3 S3 client, created on first use and cached on the resource."""
        settings = (self.endpoint_url or None, self.region_name or None)
        slot = self._client_slot
        if slot.client is None or slot.settings != settings:
            with _CLIENT_LOCK:
                if slot.client is None or slot.settings != settings:
                    slot.client, slot.settings = self._make_client(), settings
        return slot.client

    def _make_client(self) -> Any:
        global _SHARED_LOADER
        import boto3
        import botocore.session
        from botocore.config import Config
        from botocore.loaders import create_loader

        if not self.bucket:
            raise ValueError("S3ArtifactStore.bucket is empty; set it (LBZF_S3_BUCKET)")
        if self.multipart_threshold_mb * _MiB < _S3_MIN_PART:
            raise ValueError(
                f"S3ArtifactStore.multipart_threshold_mb={self.multipart_threshold_mb} is below "
                "S3's 5 MiB minimum part size; use 5 or more"
            )
        validate_prefix(self._root_prefix())
        options: dict[str, Any] = {
            "retries": {"max_attempts": 8, "mode": "standard"},
            "connect_timeout": 10,
            "read_timeout": 120,
            "max_pool_connections": 32,
        }
        if self.endpoint_url:
            # S3-compatible servers (MinIO, Ceph, moto) expect path-style addressing.
            options["s3"] = {"addressing_style": "path"}
        if _SHARED_LOADER is None:
            _SHARED_LOADER = create_loader()
        # A session of its own (credentials resolved now, from the standard chain),
        # sharing only the loader of service models.
        core = botocore.session.get_session()
        core.register_component("data_loader", _SHARED_LOADER)
        return boto3.session.Session(botocore_session=core).client(
            "s3",
            endpoint_url=self.endpoint_url or None,
            region_name=self.region_name or None,
            config=Config(**options),
        )

    def _root_prefix(self) -> str:
        stripped = self.prefix.strip("/")
        return f"{stripped}/" if stripped else ""

    def _full(self, key: str) -> str:
        return self._root_prefix() + validate_key(key)

    def _sse_args(self) -> dict[str, str]:
        if self.kms_key_id is None:
            return {}
        if not self.kms_key_id.strip():
            raise ValueError(
                "S3ArtifactStore.kms_key_id is set but empty; give a KMS key id/ARN/alias "
                "(LBZF_S3_KMS_KEY_ID) or leave it unset. Refusing to write unencrypted."
            )
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.kms_key_id}

    def _content_type(self, key: str, content_type: str | None) -> str:
        return content_type or mimetypes.guess_type(key)[0] or "application/octet-stream"

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._full(key)}"

    @contextlib.contextmanager
    def _request(self, operation: str, key: str, *, prefix: bool = False) -> Iterator[None]:
        """Turn botocore's errors into `S3RequestError`s that name the object and a remedy."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            code, status = _error_code(exc)
            message = str((getattr(exc, "response", None) or {}).get("Error", {}).get("Message", "")) or str(exc)
            raise S3RequestError(getattr(exc, "operation_name", "") or operation, self._where(key, prefix),
                                 code, status, message) from exc
        except BotoCoreError as exc:
            code = "NoCredentials" if type(exc).__name__ == "NoCredentialsError" else type(exc).__name__
            raise S3RequestError(operation, self._where(key, prefix), code, 0, str(exc)) from exc

    def _where(self, key: str, prefix: bool) -> str:
        if prefix:
            return f"s3://{self.bucket}/{self._root_prefix()}{key}" + ("" if not key or key.endswith("/") else "*")
        return self.uri(key)

    # ---- reads

    def stat(self, key: str) -> ObjectInfo | None:
        from botocore.exceptions import ClientError

        with self._request("HeadObject", key):
            try:
                head = self._get_client().head_object(Bucket=self.bucket, Key=self._full(key))
            except ClientError as exc:
                if _is_not_found(exc):
                    return None
                raise
        return ObjectInfo(
            key=key,
            size=int(head["ContentLength"]),
            etag=str(head.get("ETag", "")).strip('"'),
            last_modified=_utc(head["LastModified"]),
        )

    def _stream_to(self, key: str, handle: IO[bytes]) -> None:
        """Write the object's bytes to ``handle`` (from its start), retrying broken streams."""
        from botocore.exceptions import (
            ClientError,
            ConnectionClosedError,
            IncompleteReadError,
            ReadTimeoutError,
            ResponseStreamingError,
        )

        full = self._full(key)
        with self._request("GetObject", key):
            for attempt in range(1, _DOWNLOAD_ATTEMPTS + 1):
                handle.seek(0)
                handle.truncate()
                try:
                    response = self._get_client().get_object(Bucket=self.bucket, Key=full)
                    for chunk in response["Body"].iter_chunks(_COPY_CHUNK):
                        handle.write(chunk)
                    return
                except ClientError as exc:
                    if _is_not_found(exc):
                        raise FileNotFoundError(f"no object {key!r} at {self.uri(key)}") from exc
                    raise
                except (ResponseStreamingError, IncompleteReadError, ReadTimeoutError, ConnectionClosedError):
                    if attempt == _DOWNLOAD_ATTEMPTS:
                        raise
                    log.warning("download of %s broke off (attempt %d); retrying", self.uri(key), attempt)

    def read_bytes(self, key: str) -> bytes:
        buffer = io.BytesIO()
        self._stream_to(key, buffer)
        return buffer.getvalue()

    def download_file(self, key: str, local_path: str | os.PathLike[str]) -> Path:
        target = Path(local_path)
        self._full(key)  # validate before creating anything
        with _atomic_temp(target) as (handle, tmp):
            self._stream_to(key, handle)
            _finish_temp(handle)
            os.replace(tmp, target)
        return target

    def list_keys(self, prefix: str = "", start_after: str | None = None) -> Iterator[ObjectInfo]:
        prefix = validate_prefix(prefix)
        root = self._root_prefix()
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": root + prefix}
        if start_after is not None:
            args["StartAfter"] = root + validate_prefix(start_after)
        paginator = self._get_client().get_paginator("list_objects_v2")
        pages = iter(paginator.paginate(**args))
        while True:
            with self._request("ListObjectsV2", prefix, prefix=True):
                page = next(pages, None)
            if page is None:
                return
            for item in page.get("Contents", []):
                full = item["Key"]
                if full.endswith("/"):  # "folder" marker objects made by consoles
                    continue
                yield ObjectInfo(
                    key=full[len(root):],
                    size=int(item["Size"]),
                    etag=str(item.get("ETag", "")).strip('"'),
                    last_modified=_utc(item["LastModified"]),
                )

    def list_prefixes(self, prefix: str = "", start_after: str | None = None) -> list[str]:
        prefix = validate_prefix(prefix)
        root = self._root_prefix()
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": root + prefix, "Delimiter": "/"}
        if start_after is not None:
            args["StartAfter"] = root + validate_prefix(start_after)
        paginator = self._get_client().get_paginator("list_objects_v2")
        out: list[str] = []
        with self._request("ListObjectsV2", prefix, prefix=True):
            for page in paginator.paginate(**args):
                out.extend(entry["Prefix"][len(root):] for entry in page.get("CommonPrefixes", []))
        return sorted(out)

    @contextlib.contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        name = validate_key(key).rsplit("/", 1)[-1]
        with tempfile.TemporaryDirectory(prefix="lbzf-s3-") as tmpdir:
            yield self.download_file(key, Path(tmpdir) / name)

    # ---- writes

    def _put(self, key: str, data: bytes, content_type: str | None, **extra: Any) -> ObjectInfo:
        response = self._get_client().put_object(
            Bucket=self.bucket,
            Key=self._full(key),
            Body=data,
            ContentType=self._content_type(key, content_type),
            **self._sse_args(),
            **extra,
        )
        return ObjectInfo(
            key=key,
            size=len(data),
            etag=str(response.get("ETag", "")).strip('"'),
            last_modified=_response_time(response),
        )

    def write_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> ObjectInfo:
        return self.upload_fileobj(io.BytesIO(data), key, content_type=content_type, size_hint=len(data))

    def upload_fileobj(
        self, fileobj: BinaryIO, key: str, *, content_type: str | None = None, size_hint: int | None = None
    ) -> ObjectInfo:
        key = self._check_writable(key)
        sse = self._sse_args()  # fail on bad encryption settings before reading anything
        threshold = self.multipart_threshold_mb * _MiB
        with _reading_source(fileobj, key, self.uri) as source:
            head = _read_up_to(source, threshold)  # type: ignore[arg-type]
            if len(head) < threshold:
                with self._request("PutObject", key):
                    return self._put(key, head, content_type)
            with self._request("multipart upload", key):
                return self._multipart(key, _PushbackReader(head, source), content_type,  # type: ignore[arg-type]
                                       _part_size(size_hint), sse)

    def _multipart(
        self, key: str, reader: _PushbackReader, content_type: str | None, part_size: int, sse: dict[str, str]
    ) -> ObjectInfo:
        client = self._get_client()
        full = self._full(key)
        upload_id = client.create_multipart_upload(
            Bucket=self.bucket, Key=full, ContentType=self._content_type(key, content_type), **sse
        )["UploadId"]

        def send(number: int, body: bytes) -> dict[str, Any]:
            response = client.upload_part(
                Bucket=self.bucket, Key=full, UploadId=upload_id, PartNumber=number, Body=body
            )
            return {"PartNumber": number, "ETag": response["ETag"]}

        parts: list[dict[str, Any]] = []
        total = 0
        pool = ThreadPoolExecutor(max_workers=_UPLOAD_WORKERS, thread_name_prefix="s3-part")
        try:
            in_flight: set[Future[dict[str, Any]]] = set()
            number = 0
            while True:
                body = _read_up_to(reader, part_size)  # type: ignore[arg-type]
                if not body:
                    break
                number += 1
                if number > _S3_MAX_PARTS:
                    raise StorageError(
                        f"upload to {self.uri(key)} needs more than {_S3_MAX_PARTS} parts of "
                        f"{part_size} bytes; pass size_hint so the part size can grow"
                    )
                total += len(body)
                in_flight.add(pool.submit(send, number, body))
                if len(in_flight) >= _UPLOAD_WORKERS:
                    done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    parts.extend(f.result() for f in done)
                if len(body) < part_size:
                    break
            parts.extend(f.result() for f in wait(in_flight).done)
            parts.sort(key=lambda part: part["PartNumber"])
            response = client.complete_multipart_upload(
                Bucket=self.bucket, Key=full, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException as exc:
            pool.shutdown(wait=True, cancel_futures=True)  # no part may land after the abort
            try:
                client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)
            except Exception as abort_exc:  # keep the original error; say what is left over
                log.error("could not abort multipart upload %s of %s: %s", upload_id, self.uri(key), abort_exc)
                exc.add_note(f"abort of multipart upload {upload_id} for {self.uri(key)} also failed: {abort_exc}")
            raise
        finally:
            pool.shutdown(wait=True)
        return ObjectInfo(
            key=key,
            size=total,
            etag=str(response.get("ETag", "")).strip('"'),
            last_modified=_response_time(response),
        )

    def _create(self, key: str, data: bytes, content_type: str | None) -> str:
        """PUT with If-None-Match: '*' (atomic create): 'created', 'exists' (412) or 'busy' (409, a
        concurrent conditional write in flight); any other error is raised."""
        from botocore.exceptions import ClientError

        try:
            self._put(key, data, content_type, IfNoneMatch="*")
            return "created"
        except ClientError as exc:
            code, status = _error_code(exc)
            if status == 409 or code == "ConditionalRequestConflict":
                return "busy"
            if status == 412 or code == "PreconditionFailed":
                return "exists"
            raise

    def write_if_absent_or_same(self, key: str, data: bytes, *, content_type: str | None = None) -> bool:
        key = self._check_writable(key)
        if len(data) > _S3_MAX_SINGLE_PUT:
            raise StorageError(f"{self.uri(key)}: versioned artifacts are limited to 5 GiB (single PUT)")
        for _attempt in range(3):
            with self._request("PutObject", key):
                answer = self._create(key, data, content_type)
            if answer == "created":
                return True
            if answer == "busy":
                continue  # a concurrent write to the same key is in flight; S3 asks to retry
            try:
                existing = self.read_bytes(key)
            except FileNotFoundError:
                continue  # deleted in between; try to create again
            return self._conflict_or_same(key, existing, data)
        raise StorageError(f"{self.uri(key)}: could not create the object after repeated conflicts")

    def delete(self, key: str) -> bool:
        key = self._check_writable(key)
        if self.stat(key) is None:
            return False
        with self._request("DeleteObject", key):
            self._get_client().delete_object(Bucket=self.bucket, Key=self._full(key))
        return True

    def sweep_incomplete(self, older_than_s: float = 86400.0) -> list[str]:
        root = self._root_prefix()
        cutoff = time.time() - older_than_s
        client, removed = self._get_client(), []
        with self._request("ListMultipartUploads", "", prefix=True):
            pages = client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=root)
            uploads = [u for page in pages for u in page.get("Uploads", [])]
        for upload in uploads:
            key = upload["Key"][len(root):]
            if _utc(upload["Initiated"]).timestamp() >= cutoff or (self.is_source_key(key) and not self.allow_source_writes):
                continue
            with self._request("AbortMultipartUpload", key):
                try:
                    client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                except Exception as exc:  # already completed or aborted by someone else: nothing left to do
                    if not _is_not_found(exc) and _error_code(exc)[0] != "NoSuchUpload":
                        raise
                    continue
            removed.append(key)
        return removed
