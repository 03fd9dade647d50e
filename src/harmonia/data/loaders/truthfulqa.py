"""TruthfulQA, the original CSV.

Columns: Type, Category, Question, Best Answer, Correct Answers, Incorrect Answers, Source.

As QA the answer is the best answer; all correct and incorrect answers (split on "; ") stay in
metadata for truthfulness metrics. As MCQ (``mcq=True``, the MC1 setting) the choices are the best
answer and the incorrect answers, shuffled per question with a seeded RNG so the correct option is
not always first.
"""

from __future__ import annotations

import random
from pathlib import Path

from harmonia.data.readers import get_str, iter_csv_rows, make_record
from harmonia.data.schema import QARecord, Role
from harmonia.errors import DataError

SOURCE = "truthfulqa"
COLUMNS = ("Type", "Category", "Question", "Best Answer", "Correct Answers", "Incorrect Answers")


def _split_answers(text: str) -> list[str]:
    return [a.strip() for a in text.split(";") if a.strip()]


def load_truthfulqa(path: str | Path, *, role: Role, mcq: bool = False, seed: int = 0) -> list[QARecord]:
    path = Path(path)
    records = []
    for i, (ref, row) in enumerate(iter_csv_rows(path, required=COLUMNS)):
        question = get_str(row, "Question", path, ref)
        best = get_str(row, "Best Answer", path, ref)
        correct_answers = _split_answers(row["Correct Answers"])
        incorrect = _split_answers(row["Incorrect Answers"])
        if mcq and not incorrect:
            raise DataError(
                path, "no incorrect answers to build an MCQ from", record=ref, field="Incorrect Answers"
            )
        metadata = {
            "row": i,
            "type": row["Type"],
            "category": row["Category"],
            "best_answer": best,
            "correct_answers": correct_answers,
            "incorrect_answers": incorrect,
            "reference": row.get("Source", ""),
        }
        choices = correct = None
        if mcq:
            choices = [best, *incorrect]
            random.Random(f"{seed}:{i}").shuffle(choices)
            correct = choices.index(best)
        records.append(
            make_record(
                path,
                ref,
                id=f"{SOURCE}/{i}",
                question=question,
                answer=best,
                role=role,
                source=SOURCE,
                group=row["Category"],
                choices=choices,
                correct=correct,
                metadata=metadata,
            )
        )
    return records
