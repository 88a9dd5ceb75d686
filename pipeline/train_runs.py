"""A training run's folder kept in the store while it trains, so a run resumes on another machine.

The run folder lives on local disk (`Trainer.runs_dir`); a pod that is lost takes it along. At every
checkpoint Ultralytics saves, `save_run` copies the files a resume needs (`SYNCED_FILES`) to
``train_runs/<run>/files/<sha256>-<name>`` and then writes ``train_runs/<run>/manifest.json`` naming
them: the manifest is written last, so the store always holds one whole checkpoint, never a mix of
two. `restore_run` brings them back into an empty local folder; `clear_run` removes them once the run
has finished.

A checkpoint is a pickle. The manifest carries the sha256 of ``weights/last.pt`` that the pipeline
pinned when it saved it (`CHECKPOINT_PIN`), a restored file must have exactly that
sha256, and the pin written beside it is that value, so `pipeline.training.train` resumes only from
the bytes the pipeline itself saved. The store is trusted as it is for `registry/weights/` records.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from pipeline import keys
from pipeline.errors import PipelineInputError
from pipeline.hashing import sha256_file

CHECKPOINT_PIN = "last.pt.sha256"  # beside weights/last.pt: the sha256 of the checkpoint this pipeline saved
CHECKPOINT = "weights/last.pt"
PIN = f"weights/{CHECKPOINT_PIN}"
SYNCED_FILES = (CHECKPOINT, "results.csv", "args.yaml")
MANIFEST = "manifest.json"


def _start_over(name: str) -> str:
    return f"delete the keys under {keys.train_run_prefix(name)} in the store to train that run from the start"


def manifest_key(name: str) -> str:
    return f"{keys.train_run_prefix(name)}{MANIFEST}"


def read_manifest(store, name: str) -> dict | None:
    key = manifest_key(name)
    if not store.exists(key):
        return None
    try:
        manifest = json.loads(store.read_bytes(key))
    except ValueError:
        manifest = None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(
            isinstance(e, dict) and isinstance(e.get("key"), str) and isinstance(e.get("sha256"), str)
            for e in files.values()) or CHECKPOINT not in files:
        raise PipelineInputError(store.uri(key), "files", None, _start_over(name),
                                 problem="unreadable training run manifest")
    return manifest


def save_run(store, run_dir: Path, name: str) -> dict | None:
    """Copy the run's checkpoint, curves and arguments to the store; None when there is no pinned checkpoint."""
    run_dir = Path(run_dir)
    checkpoint, pin = run_dir / CHECKPOINT, run_dir / PIN
    if not checkpoint.exists() or not pin.exists():
        return None
    pinned = pin.read_text().strip()
    prefix = keys.train_run_prefix(name)
    files = {}
    for rel in SYNCED_FILES:
        path = run_dir / rel
        if not path.exists():
            continue
        digest = sha256_file(path)
        if rel == CHECKPOINT and digest != pinned:
            raise PipelineInputError(str(path), "sha256", digest, f"the checkpoint is not the one pinned in {pin.name} "
                                     f"({pinned}); nothing was copied to the store", problem="unpinned checkpoint")
        key = f"{prefix}files/{digest}-{path.name}"
        if not store.exists(key):
            store.upload_file(path, key)
        files[rel] = {"key": key, "sha256": digest}
    previous = read_manifest(store, name)
    manifest = {"run": name, "files": files, "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    store.write_bytes(manifest_key(name), json.dumps(manifest, indent=2, sort_keys=True).encode())
    kept = {entry["key"] for entry in files.values()}
    for entry in (previous or {}).get("files", {}).values():
        if entry.get("key") not in kept and str(entry.get("key", "")).startswith(prefix):
            store.delete(entry["key"])
    return manifest


def restore_run(store, run_dir: Path, name: str) -> bool:
    """Bring the run back from the store into a local folder that has no checkpoint; True when restored.

    Every file is downloaded into a staging folder beside ``run_dir`` and checked against the sha256 the
    manifest recorded; only then is it moved into place, with the checkpoint pin. A damaged or foreign
    file fails with its key and nothing is placed.
    """
    run_dir = Path(run_dir)
    if (run_dir / CHECKPOINT).exists():
        return False
    manifest = read_manifest(store, name)
    if manifest is None:
        return False
    files = manifest["files"]
    unknown = sorted(set(files) - set(SYNCED_FILES))
    if unknown:
        raise PipelineInputError(store.uri(manifest_key(name)), "files", unknown, _start_over(name),
                                 problem="unexpected file in a training run manifest")
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=run_dir.parent, prefix=f".{run_dir.name}.restore-"))
    try:
        for rel, entry in files.items():
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            store.download_file(entry["key"], target)
            digest = sha256_file(target)
            if digest != entry["sha256"]:
                raise PipelineInputError(store.uri(entry["key"]), "sha256", digest,
                                         f"the manifest recorded {entry['sha256']}; {_start_over(name)}",
                                         problem="damaged training checkpoint in the store")
        (staging / PIN).write_text(files[CHECKPOINT]["sha256"] + "\n")
        for rel in (*files, PIN):
            target = run_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / rel, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True


def clear_run(store, name: str) -> int:
    """Remove the run from the store (manifest first, so no half-removed run is ever restored)."""
    prefix = keys.train_run_prefix(name)
    removed = int(store.delete(manifest_key(name)))
    for info in list(store.list_keys(prefix)):
        removed += int(store.delete(info.key))
    return removed


ARCHIVED_SUFFIXES = (".csv", ".yaml", ".png", ".jpg", ".pt")


def archive_run(store, run_dir: Path, prefix: str) -> list[str]:
    """Keep a finished Ultralytics run folder (results.csv, args.yaml, plots, weights) in the store under
    `prefix` (the plan's `train_run_<version>`, beside the model). Returns the keys written, sorted."""
    run_dir = Path(run_dir)
    written = []
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file() and p.suffix in ARCHIVED_SUFFIXES):
        key = prefix + path.relative_to(run_dir).as_posix()
        store.upload_file(path, key)
        written.append(key)
    return written
