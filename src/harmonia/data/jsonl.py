"""QARecord JSON Lines: the on-disk form of a built dataset.

Reading validates every line and reports the first problem as a
:class:`~harmonia.errors.DataError` with the file, ``record='line N'`` and the field: malformed
JSON, a line that is not an object, missing or unknown fields, wrong types, an empty question or
answer, a duplicate id, or a record longer than the configured maximum (characters, or tokens of a
given tokenizer, counted over question + prefill + answer). Writing is atomic: a failure leaves
no file behind.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harmonia.data.readers import data_error_from_validation, iter_json_lines
from harmonia.data.schema import QARecord
from harmonia.data.tokens import count_tokens
from harmonia.errors import DataError
from harmonia.io import write_jsonl_atomic

_TEXT_FIELDS = ("question", "prefill", "answer")


def record_length(record: QARecord, tokenizer: Any = None) -> dict[str, int]:
    """Length of each text field, in tokens when a tokenizer is given, else in characters."""
    if tokenizer is None:
        return {f: len(getattr(record, f)) for f in _TEXT_FIELDS}
    return {f: count_tokens(tokenizer, getattr(record, f)) for f in _TEXT_FIELDS}


def check_length(
    record: QARecord,
    *,
    max_chars: int | None = None,
    max_tokens: int | None = None,
    tokenizer: Any = None,
    path: str | Path | None = None,
    ref: str | None = None,
) -> None:
    """Raise a DataError when the record exceeds ``max_chars`` or ``max_tokens`` (needs ``tokenizer``)."""
    if max_tokens is not None and tokenizer is None:
        raise ValueError("max_tokens needs a tokenizer")
    for limit, tok, unit in ((max_chars, None, "characters"), (max_tokens, tokenizer, "tokens")):
        if limit is None:
            continue
        lengths = record_length(record, tok)
        total = sum(lengths.values())
        if total > limit:
            longest = max(lengths, key=lambda f: lengths[f])
            parts = ", ".join(f"{f} {n}" for f, n in lengths.items())
            raise DataError(
                path,
                f"record is {total} {unit} long ({parts}), over the maximum {limit}",
                record=ref or record.id,
                field=longest,
            )


def parse_record(value: Any, *, path: str | Path | None, ref: str, require_answer: bool = True) -> QARecord:
    """Validate one decoded JSON value as a QARecord, with file/record/field in any error."""
    if not isinstance(value, dict):
        raise DataError(path, f"expected a JSON object, got {type(value).__name__}", record=ref)
    try:
        record = QARecord.model_validate(value, strict=True)
    except ValidationError as exc:
        raise data_error_from_validation(exc, path, ref) from None
    if require_answer and not record.answer.strip():
        raise DataError(path, "must not be empty", record=ref, field="answer")
    return record


def read_records(
    path: str | Path,
    *,
    max_chars: int | None = None,
    max_tokens: int | None = None,
    tokenizer: Any = None,
    require_answer: bool = True,
) -> list[QARecord]:
    """Read and validate a QARecord JSONL file (see module docstring)."""
    records: list[QARecord] = []
    seen: dict[str, str] = {}
    for ref, value in iter_json_lines(path):
        record = parse_record(value, path=path, ref=ref, require_answer=require_answer)
        if record.id in seen:
            raise DataError(
                path, f"duplicate id '{record.id}' (first at {seen[record.id]})", record=ref, field="id"
            )
        seen[record.id] = ref
        check_length(
            record, max_chars=max_chars, max_tokens=max_tokens, tokenizer=tokenizer, path=path, ref=ref
        )
        records.append(record)
    return records


def write_records(path: str | Path, records: Iterable[QARecord]) -> Path:
    """Write records as JSON Lines, atomically (a temporary file renamed onto ``path``)."""
    return write_jsonl_atomic(path, [r.model_dump(mode="json") for r in records])
