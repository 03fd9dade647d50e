"""Reading raw data files with errors that name the file, the record and the field.

Every loader and the QARecord JSONL reader go through these helpers, so a malformed line, a
missing column or a wrong type is reported the same way everywhere: as
:class:`~harmonia.errors.DataError` with the path, ``record='line N'`` (or ``'index N'`` for
items of a JSON list) and the field.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harmonia.data.schema import QARecord
from harmonia.errors import DataError


def require_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found" if not path.exists() else "not a file")
    return path


def read_text(path: str | Path) -> str:
    path = require_file(path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def iter_json_lines(path: str | Path) -> Iterator[tuple[str, Any]]:
    """Yield ``('line N', value)`` for each non-blank line of a JSON Lines file."""
    path = require_file(path)
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield f"line {number}", json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    path, f"malformed JSON: {exc.msg} at column {exc.colno}", record=f"line {number}"
                ) from None


def read_json(path: str | Path) -> Any:
    path = require_file(path)
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(path, f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def iter_json_rows(path: str | Path) -> Iterator[tuple[str, Any]]:
    """Rows of a ``.jsonl`` file, or of a ``.json`` file holding a list (or JSON Lines in disguise).

    TOFU ships JSON Lines under a ``.json`` suffix, so a ``.json`` file whose first non-blank
    character is not ``[`` is read line by line.
    """
    path = require_file(path)
    if path.suffix == ".jsonl" or _first_char(path) != "[":
        yield from iter_json_lines(path)
        return
    for index, row in enumerate(read_json(path)):
        yield f"index {index}", row


def _first_char(path: Path) -> str:
    with path.open(encoding="utf-8", errors="replace") as handle:
        while chunk := handle.read(4096):
            stripped = chunk.lstrip()
            if stripped:
                return stripped[0]
    return ""


def iter_csv_rows(
    path: str | Path, *, required: tuple[str, ...] = ()
) -> Iterator[tuple[str, dict[str, str]]]:
    """Yield ``('line N', row)`` for each CSV row (N = the line the row starts on; header is line 1)."""
    path = require_file(path)
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise DataError(
                path, f"CSV header {header} lacks column(s) {missing}", record="line 1", field=missing[0]
            )
        start = reader.line_num + 1
        for row in reader:
            if None in row or any(v is None for v in row.values()):
                got = sum(v is not None for k, v in row.items() if k is not None) + len(row.get(None) or [])
                raise DataError(path, f"expected {len(header)} columns, got {got}", record=f"line {start}")
            yield f"line {start}", row
            start = reader.line_num + 1


def require_object(value: Any, path: str | Path, ref: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise DataError(path, f"expected a JSON object, got {type(value).__name__}", record=ref)
    return value


def get_str(
    row: Mapping[str, Any], key: str, path: str | Path, ref: str, *, allow_empty: bool = False
) -> str:
    """``row[key]`` as a string; missing, non-string or (unless allowed) blank values are errors."""
    if key not in row:
        raise DataError(path, "missing field", record=ref, field=key)
    value = row[key]
    if not isinstance(value, str):
        raise DataError(path, f"expected a string, got {type(value).__name__}", record=ref, field=key)
    if not allow_empty and not value.strip():
        raise DataError(path, "must not be empty", record=ref, field=key)
    return value


def get_str_list(row: Mapping[str, Any], key: str, path: str | Path, ref: str) -> list[str]:
    if key not in row:
        raise DataError(path, "missing field", record=ref, field=key)
    value = row[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(path, "expected a list of strings", record=ref, field=key)
    return list(value)


def get_int(row: Mapping[str, Any], key: str, path: str | Path, ref: str) -> int:
    if key not in row:
        raise DataError(path, "missing field", record=ref, field=key)
    value = row[key]
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(
            path, f"expected an integer, got {type(value).__name__} {value!r}", record=ref, field=key
        )
    return value


def data_error_from_validation(exc: ValidationError, path: str | Path | None, ref: str | None) -> DataError:
    """Translate pydantic's error into a DataError naming the first offending field."""
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or None
    if first["type"] == "missing":
        message = "missing field"
    elif first["type"] == "extra_forbidden":
        message = "unknown field"
    else:
        message = first["msg"]
    more = len(exc.errors()) - 1
    if more:
        message += f" (and {more} more problem{'s' if more > 1 else ''})"
    return DataError(path, message, record=ref, field=field)


def make_record(path: str | Path | None, ref: str | None, **fields: Any) -> QARecord:
    """Build a QARecord, reporting schema violations as a DataError about ``path``/``ref``."""
    try:
        return QARecord(**fields)
    except ValidationError as exc:
        raise data_error_from_validation(exc, path, ref) from None
