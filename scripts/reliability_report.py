#!/usr/bin/env python
"""Write docs/reliability.md from what a run of the reliability and security suite observed.

    .venv/bin/python scripts/reliability_report.py                 # run tests/reliability, write the doc
    .venv/bin/python scripts/reliability_report.py --check         # run it, exit 1 if the doc would change
    .venv/bin/python scripts/reliability_report.py --results R --check   # CI: compare a run's records (R)

The suite's conftest (tests/reliability/conftest.py) writes one JSON record per test (fault class, pytest
status including teardown, observed outcome, the error's type and its structured parts read from its
attributes, partial artifacts found, source checks and changes, re-run identical) to the file named by
LBZF_RELIABILITY_RESULTS. This script joins the records with the catalog (tests/reliability/catalog.py)
and renders the document from them only: counts, verdicts and classes, nothing that differs between
machines (no timings, paths or library messages), so a fresh run on any machine renders the same file and
`--check` can run in CI (.ci/run passes the records of the main pytest run). It exits non-zero when a test
failed (teardown included), a fault was silently accepted, a class was skipped or not run, a partial
artifact was found, a source was modified, or a verdict differs from the catalog's.
"""
from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
COMMAND = ".venv/bin/python scripts/reliability_report.py"

# Known gaps found while building the suite (kept here so the doc says them every time it is regenerated).
GAPS = [
    "**Postgres password in a failed connection:** the canary is in `DAGSTER_PG_PASSWORD` during the failing "
    "materialization of `secrets.kms_and_event_log` and is absent from its event log; the production instance "
    "is run against a real PostgreSQL in tests/test_postgres_instance.py, but with trust authentication, so an "
    "authentication failure's error is not searched for the password.",
    "**Objects directly under `buffer/`** (e.g. `buffer/080000.mp4`, no camera folder) never start a run, but the "
    "buffer sensor's warning counts only keys and folders inside a camera folder: it lists folders, not the "
    "objects beside them, so a clip uploaded to the bucket's `buffer/` root is ignored without a log line.",
    "**The record of the pipeline's own weights lives in the artifact bucket.** Whoever may write "
    "`registry/weights/` (or `models/selected_model.json`, model cards) can allow-list a pickle; the pipeline "
    "checks, it cannot protect its own bucket. docs/deployment.md (IAM roles) says how to keep that prefix "
    "to the training role; the shipped policy grants the pipeline role all of `registry/*`.",
    "**A duplicate upload is refused at the split, not at upload.** Identical bytes under two video ids are "
    "caught by `video_sha256` when `dataset_split` is built (and frames of both copies are extracted before); "
    "`video_manifest` does not hash the videos, so the refusal comes one step later than it could.",
    "**No mutation run is kept.** That each check can fail rests on the tests' own assertions, not on a "
    "recorded run against a deliberately broken pipeline.",
]

# Fixes and closed gaps, each with the class that measures it: rendered with that class's verdict in this run.
CLOSED = [
    ("annotations.archive_corrupt", "a zip member with damaged compressed data used to raise a bare `zlib.error` "
     "out of `read_export`; it is reported as `unreadable zip member` naming the export."),
    ("storage.s3_error_names_key", "S3 errors name `s3://bucket/key`, S3's error code and a remedy "
     "(`S3RequestError`)."),
    ("model.produced_weights_swapped", "the pipeline's own `.pt` files are recorded under "
     "`registry/weights/<sha256>.json` when written and checked before every load."),
    ("model.checkpoint_tampered", "training checkpoints are pinned by sha256 before a resume."),
    ("footage.key_without_camera_day", "the buffer sensor logs a warning counting and naming the keys it ignores."),
    ("footage.duplicate_upload", "a duplicate upload under another name is refused by `dataset_split`."),
    ("storage.local_writer_killed", "a local write killed mid-way leaves nothing at the final key; "
     "`store_housekeeping_job` removes orphaned `.tmp-*` files."),
    ("storage.s3_writer_killed", "an S3 multipart write killed mid-way leaves nothing at the final key; "
     "`store_housekeeping_job` aborts open multipart uploads older than a day."),
]


def load_catalog():
    spec = importlib.util.spec_from_file_location("reliability_catalog", ROOT / "tests" / "reliability" / "catalog.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.FAULTS, module.KNOWN_UNSTRUCTURED


def run_suite(results: Path, extra: list[str]) -> int:
    env = dict(os.environ, LBZF_RELIABILITY_RESULTS=str(results))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rxs",
                           "tests/reliability", *extra], cwd=ROOT, env=env)
    return proc.returncode


def summarise(faults, known_unstructured: dict, records: list[dict]) -> dict:
    by_fault: dict[str, list[dict]] = collections.defaultdict(list)
    for r in records:
        by_fault[r["fault"]].append(r)
    rows, counts = [], collections.Counter()
    for fid, fault in faults.items():
        recs = by_fault.get(fid, [])
        ran = [r for r in recs if r["status"] != "skipped"]
        outcomes = sorted({r.get("outcome") or "none" for r in ran})
        ok = bool(ran) and all(r["status"] == "passed" for r in ran)
        if not ran:
            verdict = "not run" if not recs else "skipped"
        elif any(r.get("outcome") == "silently_accepted" for r in ran):
            verdict = "SILENTLY ACCEPTED"
        elif not ok:
            verdict = "FAILED"
        elif outcomes == [fault.expected]:
            verdict = fault.expected
        else:
            verdict = "unexpected: " + ", ".join(outcomes)
        counts[verdict] += 1
        refusals = [r for r in ran if r.get("outcome") in ("rejected", "quarantined")]
        lacks = {m for r in refusals for m in r.get("missing", [])}
        missing = [part for part in ("file", "field", "value", "remedy") if part in lacks]
        rows.append({
            "id": fid, "stage": fault.stage, "name": fault.name, "injection": fault.injection,
            "expected": fault.expected, "verdict": verdict, "tests": len(ran),
            "partial": sum(r.get("partial", 0) for r in ran),
            "partial_checked": bool(ran) and all(r.get("partial_checks", 0) > 0 for r in ran),
            "source_modified": sum(r.get("source_modified", 0) for r in ran),
            "source_checked": bool(ran) and all(r.get("source_checks", 0) > 0 for r in ran),
            "rerun": [r["rerun_identical"] for r in ran if r.get("rerun_identical") is not None],
            "error_types": sorted({r["error_type"] for r in refusals if r.get("error_type")}),
            "fields": sorted({str(r.get("parts", {}).get("field", "")) for r in refusals} - {""}),
            "refused": bool(refusals), "missing": missing, "known_gap": known_unstructured.get(fid, ""),
            "note": next((r.get("error", "") for r in ran if not r.get("error_type") and r.get("error")), ""),
        })
    return {"rows": rows, "counts": counts,
            "tests": len(records), "failed": sum(r["status"] == "failed" for r in records),
            "teardown_failed": sum(bool(r.get("teardown_failed")) for r in records),
            "skipped": sum(r["status"] == "skipped" for r in records),
            "partial": sum(r.get("partial", 0) for r in records),
            "source_modified": sum(r.get("source_modified", 0) for r in records),
            "silent": sum(r.get("outcome") == "silently_accepted" for r in records),
            "unclear": sum(r.get("outcome") == "unclear_error" for r in records),
            "reruns": [r["rerun_identical"] for r in records if r.get("rerun_identical") is not None]}


def _cell(text: str, limit: int = 150) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text[:limit] + ("…" if len(text) > limit else "")


def _error_cell(r: dict) -> str:
    if not r["refused"]:
        return _cell(r["note"], 160)
    what = ", ".join(f"`{t}`" for t in r["error_types"])
    fields = "; ".join(f"`{_cell(f, 60)}`" for f in r["fields"][:3])
    parts = "lacks " + ", ".join(r["missing"]) if r["missing"] else "file, field, value, remedy"
    return f"{what}{' — field ' + fields if fields else ''} — {parts}"


def render(summary: dict) -> str:
    rows, c = summary["rows"], summary["counts"]
    tried = sum(1 for r in rows if r["tests"])
    refused = [r for r in rows if r["refused"]]
    lacking = [r for r in refused if r["missing"]]
    stages = list(dict.fromkeys(r["stage"] for r in rows))
    verdict_of = {r["id"]: r["verdict"] for r in rows}
    lines = [
        "# Reliability and security",
        "",
        "What happens when the inputs, the storage, the models or the automation misbehave: every fault class "
        "of the catalog (`tests/reliability/catalog.py`) is injected on real bytes (videos encoded with PyAV, "
        "CVAT exports, ONNX graphs, pickles, a moto S3 server behind a fault-injecting proxy, a real OpenSSH "
        "server, a real Ultralytics worker process) by `tests/reliability/`, and the outcome is checked: "
        "refused with the project's structured error (`file`, `field`, `value` and `remedy` read from the "
        "exception's attributes); quarantined; survived (retries, waiting, idempotent ticks, resume after a "
        "kill); or flagged by an audit. Every class also gets a partial-artifact check (the test's working "
        "directory and the stores or buckets it watches are scanned for temporaries and open multipart "
        "uploads) and a source check (the inputs it registered are hashed before and after).",
        "",
        f"Everything below is rendered from one run's records: `{COMMAND}` runs the suite and rewrites this "
        "file; CI (`.ci/run`) runs `--check` on the records of its own test run, so this file must match a "
        "fresh run. The suite alone: `.venv/bin/python -m pytest tests/reliability`.",
        "",
        "## Results",
        "",
        "| measure | value |",
        "|---|---|",
        f"| fault classes in the catalog | {len(rows)} |",
        f"| classes tried | {tried} |",
        f"| rejected with an error | {c['rejected']} |",
        f"| quarantined (error + record under `quarantine/`) | {c['quarantined']} |",
        f"| survived (retried / waited / idempotent / resumed) | {c['survived']} |",
        f"| flagged by an audit or check | {c['flagged']} |",
        f"| ignored as not-input (no run, no crash) | {c['ignored']} |",
        f"| **silently accepted** (must be 0) | {summary['silent']} |",
        f"| refusing classes whose error lacks file, field, value or remedy (from its attributes) | "
        f"{len(lacking)} of {len(refused)} |",
        f"| errors whose message lacks what the test requires | {summary['unclear']} |",
        f"| classes with a partial-artifact check / with a source check | "
        f"{sum(r['partial_checked'] for r in rows)} / {sum(r['source_checked'] for r in rows)} of {len(rows)} |",
        f"| **partial artifacts found** (must be 0) | {summary['partial']} |",
        f"| **source bytes modified** (must be 0) | {summary['source_modified']} |",
        f"| re-runs after the fix byte-identical | {sum(summary['reruns'])} of {len(summary['reruns'])} |",
        f"| tests run / failed (teardown failures included) / skipped | {summary['tests'] - summary['skipped']} / "
        f"{summary['failed']} ({summary['teardown_failed']} in teardown) / {summary['skipped']} |",
        f"| classes skipped or not run | {sum(v for k, v in c.items() if k in ('skipped', 'not run'))} |",
        "",
        "## Fault classes",
        "",
    ]
    for stage in stages:
        lines += [f"### {stage}", "",
                  "| id | fault | injected as | expected | observed | tests | error (type, field, parts) or note |",
                  "|---|---|---|---|---|---|---|"]
        for r in (r for r in rows if r["stage"] == stage):
            observed = r["verdict"] + (" (re-run identical)" if r["rerun"] and all(r["rerun"]) else "")
            lines.append(f"| `{r['id']}` | {_cell(r['name'], 60)} | {_cell(r['injection'], 90)} | {r['expected']} | "
                         f"{observed} | {r['tests']} | {_error_cell(r)} |")
        lines.append("")
    lines += ["## Errors that are not yet the structured error", ""]
    if lacking:
        lines += [f"- `{r['id']}` ({', '.join(r['error_types'])}): lacks {', '.join(r['missing'])}"
                  + (f" — {r['known_gap']}" if r["known_gap"] else "") for r in lacking]
    else:
        lines.append("None: every refusal carries file, field, value and remedy.")
    lines += [
        "",
        "## How faults are injected",
        "",
        "- **Footage**: real H.264 MP4s are encoded per session and then broken (emptied, replaced by random "
        "bytes or text, cut before the `moov` index or mid-stream with the index first, codec tag patched, "
        "audio-only). They go through the store and `quarantine_bad_footage` as `video_frames` does; the test "
        "checks the error, the quarantine record's sha256, the source hashes before/after, that no JPEG was "
        "left, then replaces the file and checks two extractions are byte-identical and the record is gone.",
        "- **Annotations**: a valid COCO 1.0 / CVAT XML document built in the test (proved importable) gets one "
        "fault each, as a bare file and inside a zip; hostile zips are built member by member (traversal, "
        "absolute path, symlink mode, encrypted flag, 1000:1 bomb, member count, damaged deflate data). "
        "`tempfile`'s directory is redirected to prove nothing was extracted.",
        "- **Storage**: `tests/reliability/s3_fault_proxy.py` is a threaded `http.server` proxy on 127.0.0.1 "
        "in front of moto that, by rule, answers 500 / 503 SlowDown for the first N matching requests, cuts "
        "an UploadPart mid-body, cuts a GET response mid-body, or answers 403 `AccessDenied` "
        "(`KMS.AccessDeniedException`) to writes carrying SSE-KMS headers. `S3ArtifactStore(endpoint_url="
        "proxy.url)` is the code under test; boto3 is never patched. Writer processes are killed with SIGKILL "
        "mid-write (local store and S3 multipart) and the final keys inspected.",
        "- **Training**: a real tiny Ultralytics run in the Dagster Pipes worker process "
        "(`PipesSubprocessTrainer`) is killed with SIGKILL once epoch 1's checkpoint is pinned; the step must "
        "fail as a crash while the run goes on to its next asset, and the re-run must resume at epoch 2.",
        "- **Secrets**: canary values in `AWS_SECRET_ACCESS_KEY`, `DAGSTER_PG_PASSWORD` and a Jetson private "
        "key's passphrase; the storage layer, a real asset's materialization (`video_manifest` with KMS denied) "
        "and the Jetson builder against a real sshd are made to fail; exception strings (chained tracebacks, "
        "notes), DEBUG log records and every serialized event of the run are searched.",
        "",
        "## Fixes and closed gaps, as measured by this run",
        "",
        *[f"- `{fid}` ({verdict_of.get(fid, 'not in the catalog')}): {text}" for fid, text in CLOSED],
        "",
        "## Known gaps",
        "",
        *[f"- {g}" for g in GAPS],
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/reliability.md would change")
    parser.add_argument("--results", help="read this results JSON (LBZF_RELIABILITY_RESULTS of a pytest run) "
                                          "instead of running the suite")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments")
    args = parser.parse_args()
    faults, known_unstructured = load_catalog()
    if args.results:
        results, rc = Path(args.results), 0
    else:
        results = Path(tempfile.mkdtemp(prefix="lbzf-reliability-")) / "results.json"
        rc = run_suite(results, args.pytest_args)
    if not results.exists():
        print(f"no results at {results}; pytest exit {rc}", file=sys.stderr)
        return 2
    summary = summarise(faults, known_unstructured, json.loads(results.read_text()))
    text = render(summary)
    changed = not DOC.exists() or DOC.read_text() != text
    if not args.check:
        DOC.write_text(text)
    bad = rc != 0 or summary["silent"] or summary["partial"] or summary["source_modified"] or summary["failed"] \
        or any(r["verdict"] != r["expected"] for r in summary["rows"])
    print(f"{len(summary['rows'])} classes, {summary['tests']} tests, failed {summary['failed']} "
          f"({summary['teardown_failed']} in teardown), skipped {summary['skipped']}, silently accepted "
          f"{summary['silent']}, partial {summary['partial']}, source modified {summary['source_modified']}; "
          f"{'wrote' if not args.check else 'checked'} {DOC.relative_to(ROOT)}")
    if args.check and changed:
        import difflib

        old = DOC.read_text().splitlines() if DOC.exists() else []
        sys.stdout.writelines(line + "\n" for line in difflib.unified_diff(
            old, text.splitlines(), "docs/reliability.md", "fresh run", lineterm="", n=0))
        print(f"{DOC.relative_to(ROOT)} does not match this run: regenerate it with {COMMAND}", file=sys.stderr)
    return 1 if bad or (args.check and changed) else 0


if __name__ == "__main__":
    sys.exit(main())
