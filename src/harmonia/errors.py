"""Exceptions raised for bad user input. Each names the file, the record and the field."""

from __future__ import annotations

from pathlib import Path


class HarmoniaError(Exception):
    """Base class for errors harmonia reports to the user without a traceback."""


class DataError(HarmoniaError):
    """A data file is malformed: names the file, the record (line or index) and the field."""

    def __init__(self, path: str | Path | None, message: str, *, record: int | str | None = None,
                 field: str | None = None) -> None:
        self.path = str(path) if path is not None else None
        self.record = record
        self.field = field
        where = []
        if self.path:
            where.append(self.path)
        if record is not None:
            where.append(f"record {record}")
        if field:
            where.append(f"field '{field}'")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class ConfigError(HarmoniaError):
    """A configuration file or override is invalid: names the file and the key."""


class NonFiniteLossError(HarmoniaError):
    """Training produced a NaN or inf loss; names the step and the loss term."""

    def __init__(self, step: int, term: str, value: float) -> None:
        self.step = step
        self.term = term
        self.value = value
        super().__init__(f"non-finite loss at step {step}: term '{term}' = {value}")
