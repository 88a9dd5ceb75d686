"""Errors that tell an operator what is wrong and how to fix it.

Every refusal of bad input raises a *structured* error: an exception carrying ``file`` (the file, key or
setting that holds the problem), ``field``, ``value`` and ``remedy`` as attributes, so tools (and the
reliability report) can read them instead of searching the message. :class:`PipelineInputError` is the
usual one; errors of other layers (the artifact store's) mix in :class:`StructuredError` and set the same
attributes.
"""
from __future__ import annotations

PARTS = ("file", "field", "value", "remedy")
_ABSENT = object()


class StructuredError:
    """Mixin for exceptions that carry ``file``, ``field``, ``value`` and ``remedy`` attributes."""

    file: str
    field: str
    value: object
    remedy: str


def error_parts(error: BaseException) -> dict[str, object]:
    """The structured parts an error carries (``PARTS`` that are set and not empty)."""
    parts: dict[str, object] = {}
    for name in PARTS:
        value = getattr(error, name, _ABSENT)
        if value is _ABSENT or (name != "value" and (value is None or str(value).strip() == "")):
            continue
        parts[name] = value
    return parts


def missing_parts(error: BaseException) -> list[str]:
    """Which of file/field/value/remedy ``error`` does not carry as attributes (empty: a clear error)."""
    present = error_parts(error)
    return [name for name in PARTS if name not in present]


class PipelineInputError(StructuredError, ValueError):
    """Bad input: names the file, the field, the bad value and the remedy."""

    def __init__(self, file: str, field: str, value: object, remedy: str, problem: str = "invalid value"):
        self.file = str(file)
        self.field = field
        self.value = value
        self.remedy = remedy
        self.problem = problem
        shown = repr(value)
        if len(shown) > 200:
            shown = shown[:197] + "..."
        super().__init__(f"{self.file}: {problem} in field '{field}' (value {shown}). Remedy: {remedy}")


class BadFootageError(PipelineInputError):
    """A video or photo that cannot be used; the source file is left untouched."""


class AnnotationError(PipelineInputError):
    """A CVAT export that fails validation."""


class SplitError(PipelineInputError):
    """A split that cannot be made or that leaks."""
