"""MMLU CSVs in the Hugging Face re-export layout: ``{dev,test}/<subject>_<split>.csv``.

Each file has the header ``question,choice0,choice1,choice2,choice3,answer`` with ``answer`` a
0-3 index (A-D letters are accepted too). The subject comes from the file name and is the group.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from harmonia.data.readers import iter_csv_rows, make_record
from harmonia.data.schema import QARecord, Role
from harmonia.errors import DataError

SOURCE = "mmlu"
COLUMNS = ("question", "choice0", "choice1", "choice2", "choice3", "answer")


def subject_of(path: str | Path) -> str:
    """``computer_security_test.csv`` -> ``computer_security``."""
    stem = Path(path).stem
    for suffix in ("_test", "_dev", "_val", "_validation", "_train", "_auxiliary_train"):
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def mmlu_files(path: str | Path, *, split: str = "test", subjects: Sequence[str] | None = None) -> list[Path]:
    """The CSV files: ``path`` itself, or ``path/<split>/*_<split>.csv``, or ``path/*_<split>.csv``."""
    path = Path(path)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        folder = path / split if (path / split).is_dir() else path
        files = sorted(folder.glob(f"*_{split}.csv"))
        if not files:
            raise DataError(folder, f"no MMLU files *_{split}.csv found")
    else:
        raise DataError(path, "file or folder not found")
    if subjects is not None:
        available = {subject_of(f): f for f in files}
        unknown = sorted(set(subjects) - set(available))
        if unknown:
            raise DataError(
                path, f"unknown MMLU subject(s) {unknown}; available: {sorted(available)}", field="subjects"
            )
        files = [available[s] for s in sorted(set(subjects))]
    return files


def _answer_index(value: str, path: Path, ref: str) -> int:
    value = value.strip()
    if value in ("0", "1", "2", "3"):
        return int(value)
    if value in ("A", "B", "C", "D"):
        return "ABCD".index(value)
    raise DataError(path, f"answer must be 0-3 or A-D, got {value!r}", record=ref, field="answer")


def load_mmlu(
    path: str | Path, *, role: Role, split: str = "test", subjects: Sequence[str] | None = None
) -> list[QARecord]:
    """MMLU MCQ records, subjects in alphabetical order, rows in file order."""
    records = []
    for file in mmlu_files(path, split=split, subjects=subjects):
        subject = subject_of(file)
        for i, (ref, row) in enumerate(iter_csv_rows(file, required=COLUMNS)):
            choices = [row[f"choice{k}"] for k in range(4)]
            correct = _answer_index(row["answer"], file, ref)
            records.append(
                make_record(
                    file,
                    ref,
                    id=f"{SOURCE}/{split}/{subject}/{i}",
                    question=row["question"],
                    answer=choices[correct],
                    role=role,
                    source=SOURCE,
                    group=subject,
                    choices=choices,
                    correct=correct,
                    metadata={"split": split, "subject": subject, "row": i},
                )
            )
    return records
