"""CVAT label names -> our classes."""
from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.errors import PipelineInputError


DEFAULT_LABEL_MAPPING: dict[str, str] = {
    "person": "person",
    "people": "person",
    "kid": "person",
    "pedestrian": "person",
    "player": "person",
    "worker": "person",
}


def _norm_label(label: str) -> str:
    return str(label).strip().casefold()



@dataclass
class LabelMapping:
    """CVAT label name (case-insensitive) -> our class name; ``classes`` index = YOLO class id.

    Labels in ``ignore`` are dropped but counted; any other unmapped label is an error.
    """

    mapping: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_LABEL_MAPPING))
    classes: list[str] = field(default_factory=lambda: ["person"])
    ignore: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not self.classes or len(set(self.classes)) != len(self.classes):
            raise PipelineInputError("LabelMapping", "classes", self.classes,
                                     "give a non-empty list of distinct class names", problem="bad class list")
        normalized: dict[str, str] = {}
        for label, target in self.mapping.items():
            key = _norm_label(label)
            if target not in self.classes:
                raise PipelineInputError("LabelMapping", f"mapping[{label!r}]", target,
                                         f"map labels only to one of the classes {self.classes}",
                                         problem="label mapped to an unknown class")
            if normalized.get(key, target) != target:
                raise PipelineInputError("LabelMapping", f"mapping[{label!r}]", target,
                                         "labels differing only in case must map to the same class",
                                         problem="conflicting mapping")
            normalized[key] = target
        ignored = {_norm_label(label) for label in self.ignore}
        both = sorted(ignored & normalized.keys())
        if both:
            raise PipelineInputError("LabelMapping", "ignore", both, "a label is either mapped or ignored, not both",
                                     problem="label both mapped and ignored")
        self._lookup = normalized
        self._ignored = ignored
        self._class_id = {name: i for i, name in enumerate(self.classes)}

    def resolve(self, label: str) -> tuple[str, int] | None:
        """(class_name, class_id) for a mapped label, None for an ignored one; KeyError if neither."""
        key = _norm_label(label)
        if key in self._lookup:
            name = self._lookup[key]
            return name, self._class_id[name]
        if key in self._ignored:
            return None
        raise KeyError(label)

    def maps(self, label: str) -> bool:
        return _norm_label(label) in self._lookup

    def allowed(self) -> list[str]:
        return sorted(self._lookup) + [f"{label} (ignored)" for label in sorted(self._ignored)]
