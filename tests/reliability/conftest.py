"""Fixtures and result recording of the reliability suite.

A test claims one fault class of ``catalog.py`` with ``@pytest.mark.fault("<id>")`` and reports what it
observed through the ``fault`` fixture:

    with fault.rejects(BadFootageError, "empty file", "Remedy:"):   # outcome "rejected" (or quarantined)
        ...
    fault.partial(n)         # partial objects found at final keys after the injection (must stay 0)
    fault.source(before, after)  # hashes of the source bytes before/after (must be equal)
    fault.observed("survived")   # for faults that must be absorbed

When ``LBZF_RELIABILITY_RESULTS`` names a file, the session writes every test's record there as JSON;
``scripts/reliability_report.py`` reads it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

import pytest

try:
    from reliability.catalog import FAULTS
    from reliability.s3_fault_proxy import S3FaultProxy
except ImportError:  # pragma: no cover - run as the tests.reliability package
    from tests.reliability.catalog import FAULTS
    from tests.reliability.s3_fault_proxy import S3FaultProxy

_RECORDS: list[dict[str, Any]] = []


def pytest_configure(config):
    config.addinivalue_line("markers", "fault(id): the catalog fault class a reliability test injects")


class FaultRecorder:
    def __init__(self, fault_id: str):
        if fault_id not in FAULTS:
            raise KeyError(f"unknown fault id {fault_id!r}: add it to tests/reliability/catalog.py")
        self.id = fault_id
        self.expected = FAULTS[fault_id].expected
        self.outcome: str | None = None
        self.error = ""
        self.partial_found = 0
        self.source_changed = 0
        self.rerun_identical: bool | None = None

    @contextlib.contextmanager
    def rejects(self, exc: type[BaseException] | tuple = Exception, *needles: str,
                outcome: str = "rejected") -> Iterator[dict]:
        """The body must raise `exc` whose message holds every needle (the clear-error contract)."""
        seen: dict = {}
        try:
            yield seen
        except exc as error:  # noqa: B902 - any of the expected types
            message = str(error)
            seen["error"] = error
            self.error = message[:400]
            missing = [n for n in needles if n not in message]
            if missing:
                self.outcome = "unclear_error"
                raise AssertionError(f"error for {self.id} lacks {missing}: {message}") from error
            self.outcome = outcome
            return
        self.outcome = "silently_accepted"
        pytest.fail(f"fault {self.id} was silently accepted (no {exc} raised)")

    def observed(self, outcome: str, note: str = "") -> None:
        self.outcome = outcome
        if note:
            self.error = note[:400]

    def partial(self, count: int) -> None:
        self.partial_found += int(count)

    def source(self, before: Any, after: Any) -> None:
        if before != after:
            self.source_changed += 1

    def rerun(self, first: Any, second: Any) -> None:
        self.rerun_identical = first == second
        assert first == second, f"re-run after the fix of {self.id} is not byte-identical"


@pytest.fixture
def fault(request) -> Iterator[FaultRecorder]:
    marker = request.node.get_closest_marker("fault")
    if marker is None:
        raise RuntimeError(f"{request.node.nodeid} uses `fault` without @pytest.mark.fault(<id>)")
    recorder = FaultRecorder(marker.args[0])
    request.node._fault_recorder = recorder
    yield recorder
    # the catalog's contract, checked in every run (not only when the report is regenerated)
    expected = FAULTS[recorder.id].expected
    assert recorder.outcome == expected, \
        f"{recorder.id}: observed {recorder.outcome!r}, the catalog expects {expected!r}"
    assert recorder.partial_found == 0, f"{recorder.id}: {recorder.partial_found} partial artifact(s) found"
    assert recorder.source_changed == 0, f"{recorder.id}: source bytes modified"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("fault")
    if marker is None or report.when not in ("call", "setup"):
        return
    if report.when == "setup" and report.passed:
        return
    recorder: FaultRecorder | None = getattr(item, "_fault_recorder", None)
    _RECORDS.append({
        "nodeid": item.nodeid, "fault": marker.args[0], "expected": FAULTS[marker.args[0]].expected,
        "status": "skipped" if report.skipped else ("passed" if report.passed else "failed"),
        "outcome": recorder.outcome if recorder else None, "error": recorder.error if recorder else "",
        "partial": recorder.partial_found if recorder else 0,
        "source_modified": recorder.source_changed if recorder else 0,
        "rerun_identical": recorder.rerun_identical if recorder else None,
        "duration_s": round(report.duration, 3),
    })


def pytest_sessionfinish(session, exitstatus):
    target = os.environ.get("LBZF_RELIABILITY_RESULTS")
    if target and _RECORDS:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text(json.dumps(_RECORDS, indent=1, sort_keys=True) + "\n")


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
