"""Base weights: resolve what configuration names, say exactly what was used, refuse the unknown.

Model weights are pickles: a `.pt` file is loaded only when its sha256 is on the allow-list (the
official COCO YOLOv8n and the pipeline's own outputs) — loading an unknown pickle runs its code.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline import keys
from pipeline.errors import PipelineInputError
from pipeline.hashing import sha256_file

OFFICIAL_YOLOV8N_SHA256 = "f59b3d833e2ff32e194b5bb8e08d211dc7c5bdf144b90d2c8412c47ccfc83b36"
OFFICIAL_WEIGHTS = {OFFICIAL_YOLOV8N_SHA256: "yolov8n.pt (official COCO, Ultralytics)"}
UNTRAINED_WARNING = "baseline is untrained: not a Stage A measurement"
UNTRAINED_BASE_WARNING = ("Stage B was fine-tuned from an untrained base: its figures are not a measurement of "
                          "fine-tuning the official weights")


@dataclass(frozen=True)
class ResolvedWeights:
    source: str  # what configuration asked for
    path: str  # what is loaded (a local .pt file, or an architecture .yaml when untrained and not stored)
    sha256: str | None
    official_coco: bool
    untrained: bool
    note: str
    key: str | None = None  # where the weights live in the store (the untrained stand-in), else None

    def to_metadata(self) -> dict:
        return asdict(self)


def check_allowed(path: Path, allowed: dict[str, str], setting: str = "LBZF_BASE_WEIGHTS") -> str:
    """sha256 of `path` if it is on the allow-list, else a clear refusal."""
    digest = sha256_file(path)
    if digest not in allowed:
        raise PipelineInputError(str(path), setting, digest,
                                 "weights are pickles and load only when their sha256 is allow-listed: use the "
                                 "official yolov8n.pt or a model this pipeline produced, or add the hash to "
                                 "LBZF_ALLOWED_WEIGHTS after checking where the file came from",
                                 problem="weights not on the allow-list")
    return digest


def resolve_base_weights(setting: str, *, local_candidate: Path | None, allowed: dict[str, str],
                         allow_untrained: bool = True, architecture: str = "yolov8n.yaml") -> ResolvedWeights:
    """Resolve `LBZF_BASE_WEIGHTS`. `local_candidate` is the file the setting points to after any
    download from storage (None if nothing could be fetched). Falls back to the untrained
    architecture only when allowed, and then says so loudly."""
    if local_candidate is not None and Path(local_candidate).exists():
        digest = check_allowed(Path(local_candidate), allowed)
        official = digest in OFFICIAL_WEIGHTS
        return ResolvedWeights(setting, str(local_candidate), digest, official, False,
                               OFFICIAL_WEIGHTS.get(digest, allowed[digest]))
    if not allow_untrained:
        raise PipelineInputError(setting, "LBZF_BASE_WEIGHTS", setting,
                                 "place yolov8n.pt (sha256 " + OFFICIAL_YOLOV8N_SHA256[:12] + "...) at that path or "
                                 "storage key, or allow the untrained fallback for a demo", problem="weights not found")
    return ResolvedWeights(setting, architecture, None, False, True,
                           f"{UNTRAINED_WARNING} ('{setting}' could not be found or downloaded here; "
                           f"the {architecture} architecture with random weights stands in)")


# --------------------------------------------------------------------------- the pipeline's own weights
#
# Every `.pt` the pipeline writes (Stage B, training profiles, Stage C candidates) is recorded under
# `registry/weights/<sha256>.json` before it is uploaded; a `.pt` read back from the store is loaded
# only when its sha256 is official, allow-listed by LBZF_ALLOWED_WEIGHTS, or recorded there (and, where
# the caller knows which bytes it expects, equal to them). The record is write-once per hash, so
# concurrent producers never race on a shared list.

PRODUCED_PREFIX = keys.PRODUCED_WEIGHTS_PREFIX
produced_key = keys.produced_weights_key


def publish_weights(store, local: Path, key: str, *, producer: str, run_id: str | None = None) -> str:
    """Record `local`'s sha256 as the pipeline's own output, then upload it to `key`. Returns the sha256."""
    digest = sha256_file(Path(local))
    _record(store, digest, {"sha256": digest, "first_key": key, "producer": producer, "run_id": run_id})
    store.upload_file(Path(local), key)
    return digest


def _record(store, digest: str, fields: dict) -> None:
    """Write the hash's record once; a record another writer made first (other fields) is as good."""
    import json

    record = produced_key(digest)
    if store.exists(record):
        return
    try:
        store.write_if_absent_or_same(record, json.dumps(fields, indent=2).encode())
    except Exception:
        if not store.exists(record):
            raise


def accept_weights(store, digest: str, *, source: str, producer: str) -> None:
    """Record allow-listed (not produced) weights the pipeline went on with, so later steps accept them too."""
    if digest not in OFFICIAL_WEIGHTS:
        _record(store, digest, {"sha256": digest, "first_key": source, "producer": producer, "run_id": None})


def check_weights(store, path: Path, *, source: str | None = None, recorded_by: str = "the pipeline",
                  expected_sha256: str | None = None, extra: tuple[str, ...] | list[str] = ()) -> str:
    """sha256 of the local `path`, or a clear refusal naming `source` (the store uri or path): not the
    bytes `recorded_by` recorded, or not allow-listed (official, `extra`, or the pipeline's own record)."""
    shown = source or str(path)
    digest = sha256_file(Path(path))
    if expected_sha256 and digest != expected_sha256:
        raise PipelineInputError(shown, "sha256", digest,
                                 f"these are not the weights {recorded_by} recorded (sha256 {expected_sha256}); "
                                 "restore them or re-run the step that produced them", problem="weights sha256 mismatch")
    if digest in OFFICIAL_WEIGHTS or digest in set(extra) or store.exists(produced_key(digest)):
        return digest
    raise PipelineInputError(shown, "sha256", digest,
                             "weights are pickles and load only when their sha256 is allow-listed: use the official "
                             f"yolov8n.pt or a model this pipeline produced (recorded under {PRODUCED_PREFIX}), or add "
                             "the hash to LBZF_ALLOWED_WEIGHTS after checking where the file came from",
                             problem="weights not on the allow-list")


def fetch_weights(store, key: str, target: Path, *, expected_sha256: str | None = None,
                  recorded_by: str = "the pipeline", extra: tuple[str, ...] | list[str] = ()) -> Path:
    """Download the `.pt` at `key` to `target` and check it before anything unpickles it; a refused
    file is removed again, so nothing unchecked is left for a later load."""
    store.download_file(key, target)
    try:
        check_weights(store, target, source=store.uri(key), recorded_by=recorded_by, expected_sha256=expected_sha256,
                      extra=extra)
    except Exception:
        Path(target).unlink(missing_ok=True)
        raise
    return Path(target)


# --------------------------------------------------------------------------- the untrained stand-in
#
# Where no pretrained weights can be had (these machines reach no model hub), the "off-the-shelf"
# model is the architecture with random weights. It is made once, with a fixed seed, and kept in the
# store like any produced model, so every later step (evaluation's baseline, the v0 launch's shadow
# run, a parent in Stage C, the device) uses the very same bytes, checked by sha256.


def untrained_stand_in(store, cache_dir: Path, resolved: ResolvedWeights, *, seed: int = 0) -> ResolvedWeights:
    """`resolved` (an untrained fallback) backed by a stored, hashed checkpoint: made once (seeded) and
    reused from the store afterwards."""
    from pipeline.offline import ultralytics_yolo

    key = keys.untrained_weights_key(resolved.path)
    local = Path(cache_dir) / Path(key).name
    local.parent.mkdir(parents=True, exist_ok=True)
    if not store.exists(key):
        import torch

        torch.manual_seed(seed)
        ultralytics_yolo()(resolved.path).save(local)
        digest = sha256_file(local)
        _record(store, digest, {"sha256": digest, "first_key": key, "run_id": None,
                                "producer": f"untrained stand-in for {resolved.source} ({resolved.path}, seed {seed})"})
        try:
            store.write_if_absent_or_same(key, local.read_bytes())
        except Exception:  # another step made its own stand-in first: the stored one is the one everyone uses
            if not store.exists(key):
                raise
    fetch_weights(store, key, local, recorded_by="the untrained stand-in record")
    digest = sha256_file(local)
    return ResolvedWeights(resolved.source, str(local), digest, False, True,
                           f"{resolved.note}; kept in the store as {key} (sha256 {digest[:12]}...) so every step "
                           "uses the same weights", key=key)
