"""Any JSON / JSON Lines / CSV file of QA or MCQ rows, through a field mapping; plain text as documents.

The mapping names, for each QARecord field, the column that holds it, e.g.
``{"question": "prompt", "answer": "response"}``. Mappable fields: ``question`` (required),
``answer`` (required unless ``choices`` and ``correct`` are mapped), ``id``, ``group``, ``prefill``,
``choices`` (one column holding a list, or a list of columns, one per option) and ``correct``
(an index, a letter A-Z, or the text of the right option). Unmapped columns go to ``metadata``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from harmonia.data.readers import (
    get_str,
    iter_csv_rows,
    iter_json_rows,
    make_record,
    read_json,
    read_text,
    require_file,
    require_object,
)
from harmonia.data.schema import QARecord, Role
from harmonia.errors import DataError

FileFormat = Literal["json", "jsonl", "csv"]
MAPPABLE = ("question", "answer", "id", "group", "prefill", "choices", "correct")


def _rows(path: Path, fmt: FileFormat | None, records_key: str | None) -> Iterator[tuple[str, Any]]:
    fmt = fmt or {".jsonl": "jsonl", ".csv": "csv"}.get(path.suffix, "json")
    if fmt == "csv":
        yield from iter_csv_rows(path)
    elif fmt == "jsonl" or records_key is None:
        yield from iter_json_rows(path)
    else:
        data = read_json(path)
        rows = data.get(records_key) if isinstance(data, Mapping) else None
        if not isinstance(rows, list):
            raise DataError(path, "expected a list under this key", field=records_key)
        for i, row in enumerate(rows):
            yield f"{records_key}[{i}]", row


def _correct_index(value: Any, choices: list[str], path: Path, ref: str, column: str) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool):
        index = value
    elif isinstance(value, str) and len(value.strip()) == 1 and value.strip().isalpha():
        index = ord(value.strip().upper()) - ord("A")
    elif isinstance(value, str) and value in choices:
        index = choices.index(value)
    else:
        raise DataError(path, f"cannot read the correct option from {value!r}", record=ref, field=column)
    if not 0 <= index < len(choices):
        raise DataError(
            path, f"correct option {index} outside 0..{len(choices) - 1}", record=ref, field=column
        )
    return index


def _choices(row: Mapping[str, Any], spec: str | list[str], path: Path, ref: str) -> list[str]:
    if isinstance(spec, list):
        return [get_str(row, column, path, ref, allow_empty=True) for column in spec]
    value = row.get(spec)
    if spec not in row:
        raise DataError(path, "missing field", record=ref, field=spec)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(path, "expected a list of strings", record=ref, field=spec)
    return list(value)


def load_generic(
    path: str | Path,
    *,
    role: Role,
    fields: Mapping[str, str | list[str]],
    source: str = "custom",
    fmt: FileFormat | None = None,
    records_key: str | None = None,
) -> list[QARecord]:
    """Records from a JSON/JSONL/CSV file through ``fields`` (see module docstring)."""
    path = require_file(path)
    unknown = sorted(set(fields) - set(MAPPABLE))
    if unknown:
        raise DataError(path, f"cannot map field(s) {unknown}; mappable: {list(MAPPABLE)}", field=unknown[0])
    if "question" not in fields or not ("answer" in fields or {"choices", "correct"} <= set(fields)):
        raise DataError(path, "the field mapping needs 'question' and 'answer' (or 'choices' and 'correct')")
    if "correct" in fields and "choices" not in fields:
        raise DataError(path, "'correct' needs 'choices' mapped too", field="choices")
    for target, spec in fields.items():
        if isinstance(spec, list) and target != "choices":
            raise DataError(path, "only 'choices' may map to a list of columns", field=target)
    used = {c for spec in fields.values() for c in ([spec] if isinstance(spec, str) else spec)}
    records = []
    for i, (ref, row) in enumerate(_rows(path, fmt, records_key)):
        row = require_object(row, path, ref)
        choices = correct = None
        if "choices" in fields:
            choices = _choices(row, fields["choices"], path, ref)
            if "correct" not in fields:
                raise DataError(path, "'choices' needs 'correct' mapped too", field="correct")
            column = str(fields["correct"])
            if column not in row:
                raise DataError(path, "missing field", record=ref, field=column)
            correct = _correct_index(row[column], choices, path, ref, column)
        answer = get_str(row, str(fields["answer"]), path, ref) if "answer" in fields else choices[correct]  # type: ignore[index]
        ident = get_str(row, str(fields["id"]), path, ref) if "id" in fields else str(i)
        records.append(
            make_record(
                path,
                ref,
                id=f"{source}/{ident}",
                question=get_str(row, str(fields["question"]), path, ref),
                answer=answer,
                role=role,
                source=source,
                group=get_str(row, str(fields["group"]), path, ref, allow_empty=True)
                if "group" in fields
                else "",
                prefill=get_str(row, str(fields["prefill"]), path, ref, allow_empty=True)
                if "prefill" in fields
                else "",
                choices=choices,
                correct=correct,
                metadata={"row": i, **{k: v for k, v in row.items() if k not in used}},
            )
        )
    if not records:
        raise DataError(path, "no records found")
    return records


def load_text(path: str | Path, *, split: Literal["file", "paragraph", "line"] = "file") -> list[str]:
    """Plain text as documents: the whole file, blank-line separated paragraphs, or non-blank lines."""
    text = read_text(path)
    if split == "file":
        docs = [text] if text.strip() else []
    elif split == "paragraph":
        docs = [p.strip() for p in text.replace("\r\n", "\n").split("\n\n")]
    else:
        docs = [line.strip() for line in text.splitlines()]
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise DataError(path, "no text found")
    return docs
