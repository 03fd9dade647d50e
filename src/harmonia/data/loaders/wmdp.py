"""WMDP multiple-choice questions, in either published layout (detected from the fields).

- PyRIT / original release JSON: ``{"questions": [{"question", "choices": [{"index", "text"}],
  "correct_answer": int}], "source_indices": [...]}`` (the shipped ``cyber_questions_dev.json``).
- Hugging Face ``cais/wmdp`` rows ``{"question", "choices": [str], "answer": int}``, exported as
  JSON Lines, a JSON list, or Parquet (Parquet needs ``pyarrow``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from harmonia.data.readers import (
    get_int,
    get_str,
    iter_json_rows,
    make_record,
    read_json,
    require_file,
    require_object,
)
from harmonia.data.schema import QARecord, Role
from harmonia.errors import DataError

SOURCE = "wmdp"


def _parquet_rows(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            path, "reading Parquet needs pyarrow (pip install pyarrow), or export the split as JSON Lines"
        ) from None
    for i, row in enumerate(pq.read_table(path).to_pylist()):
        yield f"index {i}", row


def _rows(path: Path) -> tuple[list[tuple[str, Any]], list[int] | None]:
    """(ref, row) pairs and, for the PyRIT layout, each question's index in the original file."""
    require_file(path)
    if path.suffix == ".parquet":
        return list(_parquet_rows(path)), None
    if path.suffix == ".json":
        data = read_json(path)
        if isinstance(data, Mapping) and "questions" in data:
            questions = data["questions"]
            if not isinstance(questions, list):
                raise DataError(path, "expected a list", field="questions")
            indices = data.get("source_indices")
            if indices is not None and (not isinstance(indices, list) or len(indices) != len(questions)):
                raise DataError(path, "must be a list as long as 'questions'", field="source_indices")
            return [(f"questions[{i}]", q) for i, q in enumerate(questions)], indices
    return list(iter_json_rows(path)), None


def _choices(row: Mapping[str, Any], path: Path, ref: str) -> tuple[list[str], int]:
    raw = row.get("choices")
    if not isinstance(raw, list) or len(raw) < 2:
        raise DataError(path, "expected a list of at least two choices", record=ref, field="choices")
    if all(isinstance(c, Mapping) for c in raw):  # PyRIT: [{"index", "text"}], answer in correct_answer
        ordered = sorted(raw, key=lambda c: c.get("index", 0))
        if [c.get("index") for c in ordered] != list(range(len(raw))):
            raise DataError(path, "choice indices must be 0..n-1", record=ref, field="choices")
        texts = [get_str(c, "text", path, ref, allow_empty=True) for c in ordered]
        correct = get_int(row, "correct_answer", path, ref)
    elif all(isinstance(c, str) for c in raw):  # Hugging Face: [str], answer in answer
        texts = list(raw)
        correct = get_int(row, "answer", path, ref)
    else:
        raise DataError(
            path, "choices must all be strings or all be {index, text} objects", record=ref, field="choices"
        )
    if not 0 <= correct < len(texts):
        field = "correct_answer" if "correct_answer" in row else "answer"
        raise DataError(path, f"answer index {correct} outside 0..{len(texts) - 1}", record=ref, field=field)
    return texts, correct


def load_wmdp(path: str | Path, *, role: Role, group: str = "cyber") -> list[QARecord]:
    """WMDP MCQ records; ``answer`` is the correct option's text, ``correct`` its index."""
    path = Path(path)
    rows, source_indices = _rows(path)
    records = []
    for i, (ref, row) in enumerate(rows):
        row = require_object(row, path, ref)
        choices, correct = _choices(row, path, ref)
        metadata: dict[str, Any] = {"row": i}
        if source_indices is not None:
            metadata["source_index"] = source_indices[i]
        records.append(
            make_record(
                path,
                ref,
                id=f"{SOURCE}/{group}/{i}",
                question=get_str(row, "question", path, ref),
                answer=choices[correct],
                role=role,
                source=SOURCE,
                group=group,
                choices=choices,
                correct=correct,
                metadata=metadata,
            )
        )
    if not records:
        raise DataError(path, "no questions found")
    return records
