"""The model registry: which version is in production, how it got there, and the way back.

`registry/production.json` is the production pointer. Its top-level fields describe the current
production model (version, weights and engine sha256, when, why, run id); `history` lists every
entry that was ever current, oldest first, the current one last. Pointer and history are one object,
written in one atomic write (a temp file and rename locally, a single PUT on S3), so a reader never
sees a pointer without its history or the other way round.

Before the first promotion there is no pointer file: production is the off-the-shelf model Stage A
measured (what the line runs until a fine-tuned model passes its launch gate), and the first
promotion (v0's launch, or a monthly candidate when Stage B was skipped) records it as the first
history entry, so a rollback can return to it.

* `promote` is idempotent: promoting the version that is already production changes nothing, and a
  retried run (same root run id) does not write twice.
* `rollback` makes the version that preceded the current one production again (a stack: v0 -> v0.1
  -> v0.2, one rollback gives v0.1, another gives v0), keeps every entry in the history, and records
  which version was rolled back, so the monthly gate does not quietly promote it again.
* `current_model_version` is what stamps `model_version` on cycle-event rows and on the Jetson.

Candidate versions are reserved under `registry/versions/<version>.json` (write-if-absent), keyed
by the candidate's identity: a re-run of the same month with the same data, parent and recipe gets
the same version; anything else gets the next one.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pipeline import keys
from pipeline.errors import PipelineInputError
from pipeline.hashing import sha256_bytes
from pipeline import model_record
from pipeline.model_record import ModelRecord
from pipeline.versioning import is_version, latest_version, next_version

PRODUCTION_KEY = keys.PRODUCTION_POINTER
VERSIONS_PREFIX = keys.VERSIONS_PREFIX
SELECTED_MODEL_KEY = keys.SELECTED_MODEL
STAGE_A_REPORT_KEY = keys.STAGE_A_REPORT
OFF_SHELF = model_record.OFF_SHELF
MAX_AGE_DAYS = 35
ENTRY_FIELDS = ("version", "model", "weights_key", "weights_sha256", "engine_key", "engine_sha256", "imgsz",
                "model_created_at", "action", "at", "why", "run_id", "previous", "rolled_back_from", "sequence")


class RegistryError(PipelineInputError):
    """A registry action that cannot be done (nothing to roll back to, weights missing, ...)."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat(timespec="seconds")


def _parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


# --------------------------------------------------------------------------- reading


def read_pointer(store) -> dict | None:
    """The pointer document (current entry + history), or None before the first promotion."""
    if not store.exists(PRODUCTION_KEY):
        return None
    return json.loads(store.read_bytes(PRODUCTION_KEY))


def bootstrap_entry(store) -> dict | None:
    """Production before any promotion: the off-the-shelf model, which runs on the line until a
    fine-tuned model passes its launch gate (v0 in shadow beside it, then `v0_launch`). Its weights
    are the ones Stage A measured (its report records them); when the gate said skip, Stage B
    selected them too."""
    if not store.exists(SELECTED_MODEL_KEY):
        return None
    selected = json.loads(store.read_bytes(SELECTED_MODEL_KEY))
    base = {}
    if store.exists(STAGE_A_REPORT_KEY):
        base = json.loads(store.read_bytes(STAGE_A_REPORT_KEY)).get("weights") or {}
    elif selected.get("version") != OFF_SHELF:
        raise RegistryError(STAGE_A_REPORT_KEY, "weights", None, "run stage_a_baseline: it records the off-the-shelf "
                            "weights that stay in production until v0 passes its launch gate",
                            problem="no record of the off-the-shelf model")
    info = store.stat(STAGE_A_REPORT_KEY) if store.exists(STAGE_A_REPORT_KEY) else None
    untrained = " (the untrained stand-in: no pretrained weights here)" if base.get("untrained") else ""
    why = (f"the off-the-shelf model{untrained}: Stage B selected it ({selected.get('why', '')})"
           if selected.get("version") == OFF_SHELF else
           f"the off-the-shelf model{untrained} runs on the line until {selected.get('version')} passes its launch "
           "gate (shadow beside it, then v0_launch)")
    return {"version": OFF_SHELF, "model": OFF_SHELF, "weights_key": base.get("key"),
            "weights_path": base.get("path") or selected.get("path"),
            "weights_sha256": base.get("sha256") or selected.get("sha256"), "engine_key": None, "engine_sha256": None,
            "imgsz": selected.get("imgsz"), "model_created_at": _iso(info.last_modified) if info else None,
            "action": "bootstrap", "at": _iso(info.last_modified) if info else None, "why": why, "run_id": None,
            "previous": None, "rolled_back_from": None, "sequence": 0}


def production(store) -> dict | None:
    """The current production entry (pointer, else the Stage B selection), or None if neither exists."""
    pointer = read_pointer(store)
    if pointer is not None:
        return {k: pointer.get(k) for k in pointer if k != "history"}
    return bootstrap_entry(store)


def current_model_version(store) -> str:
    """The version that stamps `model_version` on cycle-event rows and on the Jetson ('unknown'
    before Stage B has selected a model)."""
    entry = production(store)
    return str(entry["version"]) if entry and entry.get("version") else "unknown"


def history(store) -> list[dict]:
    pointer = read_pointer(store)
    if pointer is not None:
        return list(pointer["history"])
    entry = bootstrap_entry(store)
    return [entry] if entry else []


def rolled_back(store_or_pointer, version: str) -> dict | None:
    """The rollback entry that took `version` out of production, if it ever was rolled back."""
    pointer = store_or_pointer if isinstance(store_or_pointer, dict) else read_pointer(store_or_pointer)
    if not pointer:
        return None
    found = [e for e in pointer["history"] if e.get("action") == "rollback" and e.get("rolled_back_from") == version]
    return found[-1] if found else None


def fetch_entry_weights(store, entry: dict, folder) -> Path:
    """A checked local copy of a registry entry's weights (production, a history entry, the bootstrap)."""
    from pipeline.hashing import sha256_file
    from pipeline.weights import check_weights

    if entry.get("weights_key"):
        target = Path(folder) / Path(entry["weights_key"]).name
        store.download_file(entry["weights_key"], target)
        source = store.uri(entry["weights_key"])
    elif entry.get("weights_path") and Path(entry["weights_path"]).is_file():
        target, source = Path(entry["weights_path"]), None
    else:
        raise RegistryError(PRODUCTION_KEY, "weights", entry.get("version"),
                            "give production real weights (LBZF_BASE_WEIGHTS, or run Stage B and launch v0) before "
                            "retraining or comparing against it", problem="production model has no weights file")
    if entry.get("weights_sha256") and sha256_file(target) != entry["weights_sha256"]:
        raise RegistryError(str(target), "weights_sha256", sha256_file(target),
                            "restore the production weights recorded in registry/production.json",
                            problem="production weights differ from the pointer")
    check_weights(store, target, source=source)
    return target


# --------------------------------------------------------------------------- writing


def _write(store, current: dict, entries: list[dict]) -> dict:
    document = {**current, "history": entries}
    store.write_bytes(PRODUCTION_KEY, json.dumps(document, indent=2, sort_keys=True, default=str).encode())
    return document


def _start(store) -> tuple[dict, list[dict]]:
    pointer = read_pointer(store)
    if pointer is not None:
        return {k: v for k, v in pointer.items() if k != "history"}, list(pointer["history"])
    entry = bootstrap_entry(store)
    if entry is None:
        raise RegistryError(PRODUCTION_KEY, "production", None, "run Stage B (training_job) first: it selects v0",
                            problem="no production model to start from")
    return entry, [entry]


def promote(store, candidate: dict, *, why: str, run_id: str, now: datetime | None = None) -> tuple[dict, bool]:
    """Make `candidate` (version, model, weights_key, weights_sha256, engine_key, engine_sha256, imgsz,
    model_created_at) production. Returns (pointer document, changed). Idempotent: the version already
    in production, or a retry of the run that promoted it, changes nothing."""
    current, entries = _start(store)
    if current.get("version") == candidate["version"] and current.get("weights_sha256") == \
            candidate["weights_sha256"]:
        return {**current, "history": entries}, False
    if any(e.get("run_id") == run_id and e.get("version") == candidate["version"] for e in entries):
        return {**current, "history": entries}, False  # this run already promoted it; a later change stands
    key = candidate.get("weights_key")
    if not key or not store.exists(key):
        raise RegistryError(str(key), "weights_key", key, "train the candidate first (candidate_model)",
                            problem="candidate weights missing")
    actual = sha256_bytes(store.read_bytes(key))
    if actual != candidate["weights_sha256"]:
        raise RegistryError(key, "weights_sha256", actual, "the weights changed after the candidate was recorded; "
                            "re-run candidate_model", problem=f"weights sha256 is not the recorded "
                                                             f"{candidate['weights_sha256']}")
    entry = ModelRecord.from_entry(candidate).entry_fields()
    entry.update({"action": "promote", "at": _iso(now or _now()), "why": why, "run_id": run_id,
                  "previous": current.get("version"), "rolled_back_from": None,
                  "sequence": int(current.get("sequence") or 0) + 1})
    return _write(store, entry, entries + [entry]), True


def rollback(store, *, why: str, run_id: str, to_version: str | None = None,
             now: datetime | None = None) -> tuple[dict, bool]:
    """Make the previous production version current again (or `to_version`, any version that was
    production before). History is kept; the new entry says which version was rolled back and why.
    A retry of the same run changes nothing."""
    pointer = read_pointer(store)
    if pointer is None:
        raise RegistryError(PRODUCTION_KEY, "history", None, "nothing has been promoted yet, so production is "
                            "still the Stage B selection", problem="no previous version to roll back to")
    current = {k: v for k, v in pointer.items() if k != "history"}
    entries = list(pointer["history"])
    if current.get("action") == "rollback" and current.get("run_id") == run_id:
        return pointer, False
    target = to_version or current.get("previous")
    if not target:
        raise RegistryError(PRODUCTION_KEY, "previous", None, f"{current.get('version')} has no predecessor in "
                            "the history", problem="no previous version to roll back to")
    if target == current.get("version"):
        raise RegistryError(PRODUCTION_KEY, "to_version", target, "name a version other than the current one",
                            problem="already production")
    earlier = [e for e in entries if e.get("version") == target and e.get("action") in ("promote", "bootstrap")]
    if not earlier:
        raise RegistryError(PRODUCTION_KEY, "to_version", target, "roll back only to a version that was "
                            f"production before: {sorted({e['version'] for e in entries})}",
                            problem="version was never production")
    base = earlier[-1]
    entry = {**{field: base.get(field) for field in ENTRY_FIELDS}, "weights_path": base.get("weights_path")}
    entry.update({"action": "rollback", "at": _iso(now or _now()), "why": why, "run_id": run_id,
                  "previous": base.get("previous"), "rolled_back_from": current.get("version"),
                  "sequence": int(current.get("sequence") or 0) + 1})
    return _write(store, entry, entries + [entry]), True


# --------------------------------------------------------------------------- freshness


def freshness(entry: dict | None, *, now: datetime | None = None, max_age_days: float = MAX_AGE_DAYS) -> dict:
    """Is the production model younger than `max_age_days` (trained, or selected, that long ago)?"""
    now = now or _now()
    if not entry:
        return {"passed": False, "age_days": None, "max_age_days": max_age_days,
                "reason": "no production model (run Stage B, then the monthly cycle)"}
    stamp = entry.get("model_created_at") or entry.get("at")
    if not stamp:
        return {"passed": False, "age_days": None, "max_age_days": max_age_days, "version": entry.get("version"),
                "reason": f"production model {entry.get('version')} has no creation time"}
    age = (now - _parse_time(stamp)) / timedelta(days=1)
    passed = age <= max_age_days
    reason = (f"production model {entry.get('version')} is {age:.1f} days old (limit {max_age_days:g})" if passed
              else f"STALE: production model {entry.get('version')} is {age:.1f} days old, older than "
                   f"{max_age_days:g} days: the monthly cycle has not promoted a newer model (check the last "
                   "production_model decision and its reasons)")
    return {"passed": bool(passed), "age_days": round(age, 2), "max_age_days": max_age_days,
            "version": entry.get("version"), "model_created_at": stamp, "reason": reason}


# --------------------------------------------------------------------------- candidate versions


def reservations(store) -> list[dict]:
    return [json.loads(store.read_bytes(i.key)) for i in store.list_keys(VERSIONS_PREFIX) if i.key.endswith(".json")]


def reserve_version(store, *, identity: str, month: str) -> tuple[str, bool]:
    """The version of the candidate with this identity: its existing reservation (reused=True), or
    the next version after every version reserved or in production (v0 -> v0.1 -> v0.2)."""
    for _ in range(20):
        known = reservations(store)
        for reservation in known:
            if reservation["identity"] == identity:
                return reservation["version"], True
        seen = [r["version"] for r in known] + [e.get("version") for e in history(store)]
        version = next_version(latest_version([v for v in seen if v and is_version(v)]))
        data = json.dumps({"version": version, "identity": identity, "month": month,
                           "weights_key": keys.weights_key(version)}, indent=2, sort_keys=True).encode()
        try:
            store.write_if_absent_or_same(keys.version_reservation_key(version), data)
            return version, False
        except Exception as exc:  # the store's ArtifactConflictError: another run took this version first
            if not hasattr(exc, "existing_sha256"):
                raise
            continue
    raise RegistryError(VERSIONS_PREFIX, "version", None, "retry the run", problem="could not reserve a version")
