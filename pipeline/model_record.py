"""What every record of a model holds: `models/selected_model.json`, a model card, a registry entry.

One typed record, so the three documents cannot drift apart. The JSON each is stored as keeps its
own spelling (selected_model.json says `key` / `path` / `sha256`; model cards and registry entries
say `weights_key` / `weights_path` / `weights_sha256`); the record converts both ways.
"""
from __future__ import annotations

from dataclasses import dataclass

OFF_SHELF = "off-shelf"  # version and model of the off-the-shelf weights (Stage B skipped)


@dataclass(frozen=True)
class ModelRecord:
    version: str  # v0, v0.1, ... or "off-shelf"
    model: str | None  # yolov8n_lbzf_<version>, or "off-shelf"
    weights_key: str | None  # in the store; None for off-the-shelf weights read from a local path
    weights_sha256: str | None
    imgsz: int | None
    weights_path: str | None = None  # off-the-shelf weights on disk
    engine_key: str | None = None
    engine_sha256: str | None = None
    model_created_at: str | None = None
    why: str | None = None

    # ------------------------------------------------------------------ selected_model.json

    @classmethod
    def from_selected(cls, doc: dict) -> ModelRecord:
        return cls(version=doc.get("version") or OFF_SHELF, model=doc.get("model"), weights_key=doc.get("key"),
                   weights_sha256=doc.get("sha256"), imgsz=doc.get("imgsz"), weights_path=doc.get("path"),
                   why=doc.get("why"))

    def to_selected(self) -> dict:
        """The selected_model.json document (`path` only for weights outside the store)."""
        doc = {"model": self.model, "key": self.weights_key}
        if not self.weights_key:
            doc["path"] = self.weights_path
        doc.update({"sha256": self.weights_sha256, "why": self.why, "version": self.version, "imgsz": self.imgsz})
        return doc

    # ------------------------------------------------------------------ model cards, registry entries

    @classmethod
    def from_entry(cls, doc: dict) -> ModelRecord:
        """From a model card or a registry entry (they share these field names)."""
        return cls(version=doc["version"], model=doc.get("model"), weights_key=doc.get("weights_key"),
                   weights_sha256=doc.get("weights_sha256"), imgsz=doc.get("imgsz"),
                   weights_path=doc.get("weights_path"), engine_key=doc.get("engine_key"),
                   engine_sha256=doc.get("engine_sha256"), model_created_at=doc.get("model_created_at"),
                   why=doc.get("why"))

    def entry_fields(self) -> dict:
        """The model's fields of a model card or a registry entry."""
        return {"version": self.version, "model": self.model, "weights_key": self.weights_key,
                "weights_sha256": self.weights_sha256, "engine_key": self.engine_key,
                "engine_sha256": self.engine_sha256, "imgsz": self.imgsz, "model_created_at": self.model_created_at}
