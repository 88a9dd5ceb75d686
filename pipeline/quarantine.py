"""Quarantine for bad footage: a JSON record per video that failed with BadFootageError.

When a stored video cannot be used (empty, not a video, truncated, no video track, ...), the
asset that read it writes `quarantine/<source key>.json` through the store and then fails with
the error, naming the source key and the remedy. The record says what was wrong with which
bytes, so an operator can find every bad file under one prefix and check that a replacement is
really a different file:

    {"key": "raw/videos/op_collar_01.mp4", "size": 0, "sha256": "e3b0c442...",
     "field": "size", "value": 0, "problem": "empty file",
     "remedy": "re-copy the complete file from its source ...", "when": "2026-07-01T08:00:00+00:00",
     "error": "<the full error message>"}

Nothing is removed or changed at the source key (source prefixes are read-only to the
pipeline). A later successful read of the same key removes its stale record, so the prefix lists
the footage that is bad now; the run history keeps every failure.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.errors import BadFootageError
from pipeline.hashing import sha256_file

QUARANTINE_PREFIX = "quarantine/"


def quarantine_key(source_key: str) -> str:
    """`raw/videos/a.mp4` -> `quarantine/raw/videos/a.mp4.json`."""
    return f"{QUARANTINE_PREFIX}{source_key}.json"


def _json_safe(value: Any) -> Any:
    """The value as JSON can hold it: containers kept, non-finite floats and other objects as repr."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return repr(value)


@dataclass(frozen=True)
class QuarantineRecord:
    """Why one stored file is unusable, and which bytes that verdict is about."""

    key: str  # the source key in the store
    size: int | None  # bytes; None when the object could not be read back
    sha256: str | None
    field: str
    value: Any
    problem: str
    remedy: str
    when: str  # ISO 8601, UTC
    error: str  # the full error message

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> QuarantineRecord:
        return cls(**json.loads(data))


def build_record(source_key: str, local_path: str | Path | None, error: BadFootageError,
                 when: datetime | None = None) -> QuarantineRecord:
    """A record for `source_key` whose bytes are (or were) at `local_path`."""
    size = digest = None
    if local_path is not None:
        path = Path(local_path)
        if path.is_file():
            size, digest = path.stat().st_size, sha256_file(path)
    moment = (when or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return QuarantineRecord(
        key=source_key,
        size=size,
        sha256=digest,
        field=error.field,
        value=_json_safe(error.value),
        problem=error.problem,
        remedy=error.remedy,
        when=moment.isoformat(timespec="seconds"),
        error=str(error),
    )


def write_record(store: Any, record: QuarantineRecord) -> str:
    """Store `record` at `quarantine/<source key>.json` (replacing an older one); returns that key."""
    key = quarantine_key(record.key)
    store.write_bytes(key, record.to_json(), content_type="application/json")
    return key


def read_record(store: Any, source_key: str) -> QuarantineRecord | None:
    key = quarantine_key(source_key)
    return QuarantineRecord.from_json(store.read_bytes(key)) if store.exists(key) else None


def quarantine(store: Any, source_key: str, error: BadFootageError) -> BadFootageError:
    """Record `error` for `source_key` and return the error to raise: it names the source key (not a
    local copy's path), the problem, the remedy and where the record is."""
    try:
        with store.local_copy(source_key) as local:
            record = build_record(source_key, local, error)
    except FileNotFoundError:  # gone meanwhile: record what is known
        record = build_record(source_key, None, error)
    record_key = write_record(store, record)
    return BadFootageError(
        source_key,
        error.field,
        error.value,
        f"{error.remedy}; then put the good file at {source_key} and materialize again "
        f"(quarantine record: {store.uri(record_key)})",
        problem=error.problem,
    )


@contextmanager
def quarantine_bad_footage(store: Any, source_key: str) -> Iterator[None]:
    """Run the body; on BadFootageError, quarantine `source_key` and raise the error naming it.

    On success a stale record for `source_key` (the file was replaced by a good one) is removed.
    The source object itself is only ever read.
    """
    try:
        yield
    except BadFootageError as error:
        raise quarantine(store, source_key, error) from error
    if store.exists(quarantine_key(source_key)):
        store.delete(quarantine_key(source_key))
