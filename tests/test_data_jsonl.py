"""QARecord JSONL: round trip, every kind of bad line named by file/line/field, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harmonia.data.jsonl import read_records, write_records
from harmonia.data.schema import QARecord
from harmonia.data.tokens import WhitespaceTokenizer
from harmonia.errors import DataError

GOOD = {
    "id": "a",
    "question": "Where is the Eiffel Tower?",
    "answer": "In Paris.",
    "role": "retain",
    "source": "t",
}


def _write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_round_trip(tmp_path):
    records = [
        QARecord(**GOOD),
        QARecord(
            id="b",
            question="Q?",
            answer="A.",
            role="forget",
            source="t",
            choices=["x", "y"],
            correct=1,
            prefill="Sure,",
            anchor_id="a",
            anchor_similarity=0.5,
            metadata={"k": [1, 2]},
        ),
    ]
    path = write_records(tmp_path / "out" / "d.jsonl", records)
    assert read_records(path) == records
    assert len(path.read_text().splitlines()) == 2


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        ('{"id": "b", "question": "Q?"', r"record line 2: malformed JSON"),
        ('["not", "an", "object"]', r"record line 2: expected a JSON object"),
        (
            json.dumps({k: v for k, v in GOOD.items() if k != "answer"} | {"id": "b"}),
            r"field 'answer': missing field",
        ),
        (json.dumps(GOOD | {"id": "b", "question": "   "}), r"field 'question': .*must not be empty"),
        (json.dumps(GOOD | {"id": "b", "answer": ""}), r"field 'answer': must not be empty"),
        (json.dumps(GOOD | {"id": "b", "answer": 42}), r"field 'answer': Input should be a valid string"),
        (json.dumps(GOOD | {"id": "b", "role": "teacher"}), r"field 'role'"),
        (json.dumps(GOOD | {"id": "b", "correct": 1}), r"'choices' and 'correct' must be given together"),
        (json.dumps(GOOD | {"id": "b", "colour": "red"}), r"field 'colour': unknown field"),
        (json.dumps(GOOD), r"field 'id': duplicate id 'a' \(first at line 1\)"),
    ],
)
def test_bad_lines_name_file_line_and_field(tmp_path, bad, expected):
    path = _write(tmp_path, json.dumps(GOOD), bad)
    with pytest.raises(DataError, match=expected) as info:
        read_records(path)
    assert str(info.value).startswith(f"{path}, record line 2")


def test_too_long_in_characters_and_tokens(tmp_path):
    long_answer = GOOD | {"answer": "word " * 30}
    path = _write(tmp_path, json.dumps(GOOD), "", json.dumps(long_answer | {"id": "b"}))
    assert len(read_records(path)) == 2
    with pytest.raises(
        DataError, match=r"record line 3, field 'answer': record is 176 characters long .*maximum 100"
    ):
        read_records(path, max_chars=100)
    with pytest.raises(
        DataError, match=r"record line 3, field 'answer': record is 35 tokens long .*maximum 20"
    ):
        read_records(path, max_tokens=20, tokenizer=WhitespaceTokenizer())
    assert len(read_records(path, max_tokens=35, tokenizer=WhitespaceTokenizer())) == 2


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_records(tmp_path / "nope.jsonl")


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    dest = tmp_path / "d.jsonl"
    original = Path.write_text

    def half_then_fail(self, text, *args, **kwargs):
        original(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_records(dest, [QARecord(**GOOD)])
    monkeypatch.undo()
    assert not dest.exists() and list(tmp_path.iterdir()) == []  # no temporary left either


def test_failed_overwrite_keeps_the_old_file(tmp_path):
    dest = write_records(tmp_path / "d.jsonl", [QARecord(**GOOD)])
    before = dest.read_text()

    def records():
        yield QARecord(**GOOD | {"id": "x"})
        raise RuntimeError("generator failed mid-way")

    with pytest.raises(RuntimeError):
        write_records(dest, records())
    assert dest.read_text() == before and sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl"]
