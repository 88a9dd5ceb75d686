"""Errors that tell an operator what is wrong and how to fix it."""
from __future__ import annotations


class PipelineInputError(ValueError):
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
