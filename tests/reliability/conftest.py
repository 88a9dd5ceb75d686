"""Fixtures and result recording of the reliability suite.

A test claims one fault class of ``catalog.py`` with ``@pytest.mark.fault("<id>")`` and reports what it
observed through the ``fault`` fixture:

    fault.sources(path, (store, "raw/"), frame)  # source bytes/objects, hashed now and again at teardown
    fault.watch(store)                           # also scanned for partial artifacts at teardown
    with fault.rejects(BadFootageError, "empty file"):   # outcome "rejected" (or quarantined)
        ...
    fault.partial(n)         # partial objects found at final keys after the injection (must stay 0)
    fault.observed("survived")   # for faults that must be absorbed, after the test's own assertions

A refusal must be the project's structured error: ``rejects`` reads ``file``, ``field``, ``value`` and
``remedy`` from the exception's attributes (pipeline/errors.py ``error_parts``), not from the message; the
needles only pin what this fault's message must say. Every class gets a partial-artifact check (the test's
``tmp_path`` and whatever it watches are scanned for temporaries) and a source check (what it registered
with ``sources``/``source``). The fixture fails a test that declares no source, whose outcome differs from
the catalog's, that left a partial artifact or changed a source.

When ``LBZF_RELIABILITY_RESULTS`` names a file, the session writes every test's record there as JSON (the
teardown included, so a contract violation found there counts as a failure);
``scripts/reliability_report.py`` reads it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any, Iterator

import pytest

from pipeline.errors import PARTS, error_parts

try:
    from reliability.catalog import FAULTS, KNOWN_UNSTRUCTURED
    from reliability.s3_fault_proxy import S3FaultProxy
except ImportError:  # pragma: no cover - run as the tests.reliability package
    from tests.reliability.catalog import FAULTS, KNOWN_UNSTRUCTURED
    from tests.reliability.s3_fault_proxy import S3FaultProxy

_RECORDS: dict[str, dict[str, Any]] = {}
TEMP_MARKS = (".tmp-", ".part", ".partial", ".tmp", ".incomplete")


def pytest_configure(config):
    config.addinivalue_line("markers", "fault(id): the catalog fault class a reliability test injects")


def _short(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _is_temp_name(name: str) -> bool:
    return name.startswith(".tmp-") or any(name.endswith(m) for m in TEMP_MARKS[1:])


class _S3Bucket:
    """A bucket on the moto endpoint itself (not the proxy, which is gone at teardown)."""

    def __init__(self, endpoint: str, bucket: str, prefix: str = ""):
        self.endpoint, self.bucket, self.prefix = endpoint, bucket, prefix

    def _client(self):
        try:
            from s3_server import client
        except ImportError:  # pragma: no cover
            from tests.s3_server import client
        return client(self.endpoint)

    def hashes(self) -> dict[str, str]:
        c = self._client()
        keys = [o["Key"] for o in c.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix).get("Contents", [])]
        return {k: hashlib.sha256(c.get_object(Bucket=self.bucket, Key=k)["Body"].read()).hexdigest() for k in keys}

    def partials(self) -> list[str]:
        c = self._client()
        open_uploads = [u["Key"] for u in c.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])]
        temps = [k for k in self.hashes() if _is_temp_name(k.rsplit("/", 1)[-1])]
        return open_uploads + temps


def s3_bucket(endpoint: str, bucket: str, prefix: str = "") -> _S3Bucket:
    return _S3Bucket(endpoint, bucket, prefix)


def _digest(thing: Any) -> Any:
    """What 'the source bytes' of a registered thing are: file/tree hashes, store hashes, or its pickle."""
    if isinstance(thing, tuple) and len(thing) == 2 and hasattr(thing[0], "list_keys"):
        return store_hashes(*thing)
    if isinstance(thing, _S3Bucket):
        return thing.hashes()
    if hasattr(thing, "list_keys") and hasattr(thing, "read_bytes"):
        return store_hashes(thing)
    if isinstance(thing, Path):
        return tree_hashes(thing) if thing.is_dir() else hashlib.sha256(thing.read_bytes()).hexdigest()
    if isinstance(thing, (bytes, bytearray)):
        return hashlib.sha256(thing).hexdigest()
    return hashlib.sha256(pickle.dumps(thing)).hexdigest()


def _partials(thing: Any) -> list[str]:
    if isinstance(thing, _S3Bucket):
        return thing.partials()
    root = getattr(thing, "root", None) if not isinstance(thing, Path) else thing
    if root is None:
        raise TypeError(f"cannot scan {thing!r} for partial artifacts")
    root = Path(root)
    return [str(p) for p in root.rglob("*") if _is_temp_name(p.name)] if root.exists() else []


class FaultRecorder:
    def __init__(self, fault_id: str, workdir: Path):
        if fault_id not in FAULTS:
            raise KeyError(f"unknown fault id {fault_id!r}: add it to tests/reliability/catalog.py")
        self.id = fault_id
        self.expected = FAULTS[fault_id].expected
        self.outcome: str | None = None
        self.error = ""
        self.error_type = ""
        self.parts: dict[str, str] = {}
        self.missing: list[str] = []
        self.partial_found = 0
        self.partial_checks = 0
        self.source_changed = 0
        self.source_checks = 0
        self.rerun_identical: bool | None = None
        self._sources: list[tuple[Any, Any]] = []
        self._watched: list[Any] = [workdir]

    # ------------------------------------------------------------ errors
    def _structured(self, error: BaseException | None, parts: dict | None) -> None:
        found = error_parts(error) if error is not None else {k: v for k, v in (parts or {}).items()
                                                              if k in PARTS and v not in (None, "")}
        self.parts = {k: _short(v) for k, v in found.items()}
        self.missing = [p for p in PARTS if p not in found]
        if error is not None:
            self.error_type = type(error).__name__
            self.error = str(error)[:400]

    @contextlib.contextmanager
    def rejects(self, exc: type[BaseException] | tuple, *needles: str,
                outcome: str = "rejected") -> Iterator[dict]:
        """The body must raise `exc` carrying file/field/value/remedy attributes, its message holding every
        needle. A Dagster wrapper (DagsterExecutionStepExecutionError) is unwrapped to the asset's error."""
        seen: dict = {}
        try:
            yield seen
        except BaseException as raised:  # noqa: B902 - unwrapped and checked below
            error = getattr(raised, "user_exception", None) or raised
            if not isinstance(error, exc):
                raise
            seen["error"] = error
            self._structured(error, None)
            message = str(error)
            missing = [n for n in needles if n not in message]
            if missing:
                self.outcome = "unclear_error"
                raise AssertionError(f"error for {self.id} lacks {missing}: {message}") from error
            self.outcome = outcome
            return
        self.outcome = "silently_accepted"
        pytest.fail(f"fault {self.id} was silently accepted (no {exc} raised)")

    def observed(self, outcome: str, note: str = "", *, error: BaseException | None = None,
                 parts: dict | None = None) -> None:
        """Record the outcome the test's own assertions established. A refusal seen other than through
        `rejects` (a quarantine record, a failed run's error) must come with its error or its parts."""
        if outcome in ("rejected", "quarantined"):
            if error is None and parts is None:
                raise AssertionError(f"{self.id}: a {outcome!r} outcome needs the error (or its parts) to check")
            self._structured(error, parts)
        self.outcome = outcome
        if note:
            self.error = note[:400]

    # ------------------------------------------------------------ partial artifacts and sources
    def partial(self, count: int) -> None:
        self.partial_checks += 1
        self.partial_found += int(count)

    def watch(self, *things: Any) -> None:
        """Scan these (a Path, a LocalArtifactStore, `s3_bucket(...)`) for partial artifacts at teardown."""
        self._watched.extend(things)

    def sources(self, *things: Any) -> None:
        """Register source inputs: hashed now and again at teardown (they must not change)."""
        for thing in things:
            self._sources.append((thing, _digest(thing)))

    def source(self, before: Any, after: Any) -> None:
        self.source_checks += 1
        if before != after:
            self.source_changed += 1

    def rerun(self, first: Any, second: Any) -> None:
        self.rerun_identical = first == second
        assert first == second, f"re-run after the fix of {self.id} is not byte-identical"

    def finish(self) -> None:
        """The teardown checks every class gets."""
        for thing, before in self._sources:
            self.source(before, _digest(thing))
        for thing in self._watched:
            self.partial(len(_partials(thing)))


@pytest.fixture
def fault(request, tmp_path) -> Iterator[FaultRecorder]:
    marker = request.node.get_closest_marker("fault")
    if marker is None:
        raise RuntimeError(f"{request.node.nodeid} uses `fault` without @pytest.mark.fault(<id>)")
    recorder = FaultRecorder(marker.args[0], tmp_path)
    request.node._fault_recorder = recorder
    yield recorder
    if getattr(request.node, "rep_call_failed", False):  # the test itself failed: its failure is the report
        return
    recorder.finish()
    # the catalog's contract, checked in every run (not only when the report is regenerated)
    expected = FAULTS[recorder.id].expected
    assert recorder.outcome == expected, \
        f"{recorder.id}: observed {recorder.outcome!r}, the catalog expects {expected!r}"
    assert recorder.source_checks > 0, f"{recorder.id}: no source registered (fault.sources / fault.source)"
    assert recorder.partial_found == 0, f"{recorder.id}: {recorder.partial_found} partial artifact(s) found"
    assert recorder.source_changed == 0, f"{recorder.id}: source bytes modified"
    if recorder.outcome in ("rejected", "quarantined"):
        if recorder.id in KNOWN_UNSTRUCTURED:
            assert recorder.missing, (f"{recorder.id}: the error now carries file/field/value/remedy: remove it "
                                      "from KNOWN_UNSTRUCTURED in tests/reliability/catalog.py")
        else:
            assert not recorder.missing, \
                f"{recorder.id}: {recorder.error_type} lacks {recorder.missing} (pipeline.errors.StructuredError)"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.rep_call_failed = report.failed
    elif report.when == "setup":
        item.rep_call_failed = False
    marker = item.get_closest_marker("fault")
    if marker is None:
        return
    recorder: FaultRecorder | None = getattr(item, "_fault_recorder", None)
    record = _RECORDS.get(item.nodeid)
    if record is None:
        if report.when == "setup" and report.passed:
            return
        record = _RECORDS[item.nodeid] = {"nodeid": item.nodeid, "fault": marker.args[0],
                                          "expected": FAULTS[marker.args[0]].expected, "teardown_failed": False}
        record["status"] = "skipped" if report.skipped else ("passed" if report.passed else "failed")
    elif report.when == "teardown" and report.failed:
        record["status"], record["teardown_failed"] = "failed", True
    if recorder is not None:
        record.update({
            "outcome": recorder.outcome, "error": recorder.error, "error_type": recorder.error_type,
            "parts": recorder.parts, "missing": recorder.missing,
            "partial": recorder.partial_found, "partial_checks": recorder.partial_checks,
            "source_modified": recorder.source_changed, "source_checks": recorder.source_checks,
            "rerun_identical": recorder.rerun_identical,
        })
    else:
        record.setdefault("outcome", None)


def pytest_sessionfinish(session, exitstatus):
    target = os.environ.get("LBZF_RELIABILITY_RESULTS")
    if target and _RECORDS:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        records = sorted(_RECORDS.values(), key=lambda r: r["nodeid"])
        Path(target).write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")


# --------------------------------------------------------------------------- helpers


def tree_hashes(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under root (the 'source bytes unchanged' check)."""
    root = Path(root)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def store_hashes(store, prefix: str = "") -> dict[str, str]:
    return {i.key: hashlib.sha256(store.read_bytes(i.key)).hexdigest() for i in store.list_keys(prefix)}


@pytest.fixture
def fault_proxy(s3_endpoint: str) -> Iterator[S3FaultProxy]:
    with S3FaultProxy(s3_endpoint) as proxy:
        yield proxy
