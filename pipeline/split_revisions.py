"""When a split may change: re-made openly before any model was trained from it, frozen after.

The plan labels in two waves (the Stage A sample first, the Stage B frames only if the gate asks),
so the split of a data version is made more than once while labels arrive. Every change is a new
*revision* with a reason (what was added, removed or moved), the earlier revision is kept, and the
record lists them all. Once a model was trained from a split (the training step writes a lock with
the split's sha256 before it starts), that split is never rewritten: a changed table is refused,
naming the model that froze it.
"""
from __future__ import annotations

import io
from dataclasses import asdict, dataclass

import pandas as pd

from pipeline.errors import SplitError


@dataclass(frozen=True)
class SplitChange:
    """What a new split table does to the current one."""

    added: int
    removed: int
    moved: int  # frames whose split changed (never expected: videos are assigned from the manifest)
    frames_before: int
    frames_after: int

    @property
    def unchanged(self) -> bool:
        return not (self.added or self.removed or self.moved)

    def why(self) -> str:
        parts = []
        if self.added:
            parts.append(f"{self.added} newly labelled frame(s) added")
        if self.removed:
            parts.append(f"{self.removed} frame(s) no longer labelled removed")
        if self.moved:
            parts.append(f"{self.moved} frame(s) moved to another split (manifest or split settings changed)")
        return f"{'; '.join(parts) or 'unchanged'} ({self.frames_before} -> {self.frames_after} frames)"

    def to_dict(self) -> dict:
        return {**asdict(self), "why": self.why()}


def _table(data: bytes) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)


def compare_splits(before: bytes | None, after: bytes) -> SplitChange:
    new = _table(after)
    if before is None:
        return SplitChange(len(new), 0, 0, 0, len(new))
    old = _table(before)
    merged = old[["frame_key", "split"]].merge(new[["frame_key", "split"]], on="frame_key", how="outer",
                                               suffixes=("_old", "_new"), indicator=True)
    both = merged[merged["_merge"] == "both"]
    return SplitChange(added=int((merged["_merge"] == "right_only").sum()),
                       removed=int((merged["_merge"] == "left_only").sum()),
                       moved=int((both["split_old"] != both["split_new"]).sum()),
                       frames_before=len(old), frames_after=len(new))


def check_not_frozen(lock: dict | None, current_sha256: str | None, new_sha256: str, change: SplitChange,
                     split_uri: str) -> None:
    """Refuse to rewrite a split that a model was trained from."""
    if lock is None or change.unchanged or current_sha256 == new_sha256:
        return
    raise SplitError(split_uri, "frames", change.why(),
                     f"this split (sha256 {lock.get('split_sha256')}) was used to train {lock.get('model')} "
                     f"(run {lock.get('run_id')}, {lock.get('at')}) and is never rewritten. Labels that arrive "
                     "after a model was trained go into the next version: the monthly cycle (monthly_retraining_job) "
                     "builds the versioned dataset v0.1, v0.2, ... from this split plus the new labels, with the "
                     "test split kept frozen", problem="split frozen by a trained model")


def next_record(record: dict | None, *, sha256: str, change: SplitChange, at: str, run_id: str,
                revision_key: str) -> dict:
    """The split record with one more revision (the first has revision 1)."""
    revisions = list((record or {}).get("revisions", []))
    revisions.append({"revision": len(revisions) + 1, "sha256": sha256, "at": at, "run_id": run_id,
                      "frames": change.frames_after, "change": change.to_dict(),
                      "why": "first split" if not revisions else f"re-made before any training: {change.why()}",
                      "key": revision_key})
    return {"current_sha256": sha256, "revisions": revisions}
