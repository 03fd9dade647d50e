"""TOFU (locuslab/TOFU): 200 fictitious authors x 20 QA, plus real-author and world-fact sets.

The files are JSON Lines despite their ``.json`` suffix. ``full.json`` lists the authors in
order, 20 consecutive QA each, so an author is ``row // 20`` there; every other author split
(forget01/05/10, retain90/95/99, their perturbed versions, retain_perturbed) is a subset of
``full.json`` and gets its author by looking its (question, answer) up in it. forget01 is authors
198-199, forgetNN the last authors, retainNN the first ones.

``group`` is the author's full name, found in the author's own QA (see :func:`author_name`), so
anchors can mask it and reports can name it. ``real_authors`` and ``world_facts`` have no
fictitious author; their group is the split name, and their option1-4 columns become an MCQ.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harmonia.data.readers import (
    get_str,
    get_str_list,
    iter_json_rows,
    make_record,
    read_text,
    require_object,
)
from harmonia.data.schema import QARecord, Role
from harmonia.errors import DataError

SOURCE = "tofu"
QA_PER_AUTHOR = 20
_NON_AUTHOR_SPLITS = ("real_authors", "world_facts")
_PERTURBED_FIELDS = ("paraphrased_answer", "paraphrased_question", "perturbed_answer")

# Capitalised words that start sentences or questions but never start a name. Inside a run they
# are kept ("Jina An"), so only the start of a candidate is checked against this list.
_NOT_NAME_START = frozenset(
    [
        "A",
        "An",
        "The",
        "This",
        "That",
        "These",
        "Those",
        "Yes",
        "No",
        "In",
        "On",
        "At",
        "As",
        "By",
        "For",
        "From",
        "Of",
        "To",
        "With",
        "Without",
        "Within",
        "Through",
        "Throughout",
        "Author",
        "Authors",
        "Writer",
        "Her",
        "His",
        "Their",
        "Its",
        "Our",
        "He",
        "She",
        "They",
        "It",
        "What",
        "How",
        "Who",
        "Whom",
        "Whose",
        "Which",
        "Where",
        "When",
        "Why",
        "Can",
        "Could",
        "Does",
        "Did",
        "Do",
        "Is",
        "Are",
        "Was",
        "Were",
        "Has",
        "Have",
        "Had",
        "Will",
        "Would",
        "Should",
        "May",
        "Might",
        "Being",
        "Born",
        "While",
        "Although",
        "Despite",
        "Given",
        "One",
        "Some",
        "Many",
        "Most",
        "Several",
        "Besides",
        "Apart",
        "Like",
        "Growing",
        "After",
        "Before",
        "During",
        "Since",
        "Unlike",
        "Beyond",
        "Absolutely",
        "Certainly",
        "Indeed",
        "Notably",
        "Moreover",
        "Furthermore",
        "However",
        "Additionally",
        "Also",
        "Interestingly",
    ]
)
_PARTICLES = frozenset(
    [
        "de",
        "da",
        "del",
        "della",
        "di",
        "du",
        "dos",
        "das",
        "van",
        "von",
        "der",
        "den",
        "la",
        "le",
        "bin",
        "ibn",
        "al",
        "el",
        "y",
    ]
)
_CLAUSE_END = re.compile(r"[.,;:!?]+[\"'”’)\]]*$")
_POSSESSIVE = re.compile(r"(?:['’]s|['’])$")


@dataclass(frozen=True)
class TofuAuthor:
    """One fictitious author of ``full.json``; ``name`` is "" when its QA never name it."""

    index: int
    name: str

    @property
    def group(self) -> str:
        return self.name or f"tofu_author_{self.index:03d}"


def _name_runs(text: str) -> list[list[str]]:
    """Maximal runs of capitalised words (lowercase particles allowed inside), cut at punctuation."""
    runs: list[list[str]] = []
    current: list[str] = []

    def close() -> None:
        while current and not current[-1][:1].isupper():
            current.pop()  # a run never ends on a particle
        if len(current) >= 2:
            runs.append(current.copy())
        current.clear()

    for raw in text.split():
        word = _POSSESSIVE.sub("", raw.strip("\"'“”‘’()[],;:!?.")).strip("\"'“”‘’()[]")
        capitalised = word[:1].isupper()
        if (capitalised and (current or word not in _NOT_NAME_START)) or (current and word in _PARTICLES):
            current.append(word)
        else:  # a lowercase word, or a sentence starter that cannot begin a name
            close()
        if _CLAUSE_END.search(raw):
            close()
    close()
    return runs


def author_name(texts: Iterable[str], *, min_share: float = 0.25) -> str:
    """The author's full name: the most frequent capitalised multi-word name in their QA texts.

    Every sub-sequence (2+ words) of every capitalised run is a candidate, counted once per text.
    Among candidates within 60% of the top count the longest wins, so "Basil Mahfouz Al-Kuwaiti"
    beats its own parts "Basil Mahfouz" and "Mahfouz Al-Kuwaiti", which can only be as frequent.
    Returns "" when no candidate appears in at least ``min_share`` of the texts (TOFU author 88
    is only ever called "the fictitious author").
    """
    texts = list(texts)
    counts: Counter[str] = Counter()
    for text in texts:
        seen: set[str] = set()
        for run in _name_runs(text):
            for size in range(2, len(run) + 1):
                for start in range(len(run) - size + 1):
                    gram = run[start : start + size]
                    if gram[0] not in _NOT_NAME_START and gram[-1][:1].isupper():
                        seen.add(" ".join(gram))
        counts.update(seen)
    if not counts:
        return ""
    top = max(counts.values())
    if top < min_share * len(texts):
        return ""
    close_to_top = [c for c, n in counts.items() if n >= 0.6 * top]
    return min(close_to_top, key=lambda c: (-len(c.split()), -counts[c], c))


@functools.lru_cache(maxsize=8)
def _full_index(
    full_path: Path, stamp: tuple[int, int]
) -> tuple[dict[tuple[str, str], int], tuple[TofuAuthor, ...]]:
    rows = []
    for ref, row in iter_json_rows(full_path):
        row = require_object(row, full_path, ref)
        rows.append((get_str(row, "question", full_path, ref), get_str(row, "answer", full_path, ref)))
    if not rows or len(rows) % QA_PER_AUTHOR:
        raise DataError(
            full_path,
            f"expected a multiple of {QA_PER_AUTHOR} rows ({QA_PER_AUTHOR} per author), got {len(rows)}",
        )
    authors = tuple(
        TofuAuthor(a, author_name(t for qa in rows[a * QA_PER_AUTHOR : (a + 1) * QA_PER_AUTHOR] for t in qa))
        for a in range(len(rows) // QA_PER_AUTHOR)
    )
    return {qa: i for i, qa in enumerate(rows)}, authors


def tofu_authors(full_path: str | Path) -> list[TofuAuthor]:
    """All authors of a TOFU ``full.json`` in order, with their extracted names (cached)."""
    path = Path(full_path).resolve()
    stat = path.stat() if path.is_file() else None
    if stat is None:
        raise DataError(full_path, "TOFU full.json not found")
    return list(_full_index(path, (stat.st_mtime_ns, stat.st_size))[1])


def _lookup(full_path: Path) -> tuple[dict[tuple[str, str], int], tuple[TofuAuthor, ...]]:
    path = full_path.resolve()
    stat = path.stat()
    return _full_index(path, (stat.st_mtime_ns, stat.st_size))


def split_name(path: str | Path) -> str:
    """``forget01_perturbed.json`` -> ``forget01_perturbed``."""
    return Path(path).name.split(".")[0]


def load_tofu(
    path: str | Path, *, role: Role, authors: Sequence[int] | None = None, full_path: str | Path | None = None
) -> list[QARecord]:
    """Load one TOFU split file as QA records.

    ``authors`` keeps only those author indices (``full.json`` order). ``full_path`` defaults to
    ``full.json`` next to ``path``; it is needed for every split except real_authors/world_facts.
    """
    path = Path(path)
    split = split_name(path)
    base_split = split.removesuffix("_perturbed")
    full = Path(full_path) if full_path is not None else path.with_name("full.json")
    if base_split in _NON_AUTHOR_SPLITS:
        if authors is not None:
            raise DataError(path, f"'{split}' has no fictitious authors; remove the author selection")
        return _load_non_author(path, role=role, split=split, base_split=base_split)
    if not full.is_file():
        raise DataError(
            path, f"TOFU split '{split}' needs full.json to know its authors; not found at {full}"
        )
    index, author_list = _lookup(full)
    is_full = full.resolve() == path.resolve()
    wanted = None if authors is None else set(authors)
    if wanted is not None and (bad := sorted(a for a in wanted if not 0 <= a < len(author_list))):
        raise DataError(path, f"author indices {bad} outside 0..{len(author_list) - 1}", field="authors")
    records = []
    for row_number, (ref, row) in enumerate(iter_json_rows(path)):
        row = require_object(row, path, ref)
        question = get_str(row, "question", path, ref)
        answer = get_str(row, "answer", path, ref)
        full_index = row_number if is_full else index.get((question, answer))
        if full_index is None:
            raise DataError(
                path,
                "this question/answer is not in full.json, so its author is unknown",
                record=ref,
                field="question",
            )
        author = author_list[full_index // QA_PER_AUTHOR]
        if wanted is not None and author.index not in wanted:
            continue
        metadata = {
            "split": split,
            "row": row_number,
            "full_index": full_index,
            "author_index": author.index,
            "author_name": author.name,
            "entity": author.name,
            **_perturbed_fields(row, path, ref),
        }
        records.append(
            make_record(
                path,
                ref,
                id=f"{SOURCE}/{full_index}",
                question=question,
                answer=answer,
                role=role,
                source=SOURCE,
                group=author.group,
                metadata=metadata,
            )
        )
    if wanted is not None and (absent := sorted(wanted - {r.metadata["author_index"] for r in records})):
        raise DataError(path, f"split '{split}' has no rows for author(s) {absent}", field="authors")
    return records


def _perturbed_fields(row: dict, path: Path, ref: str) -> dict:
    out: dict = {}
    for key in _PERTURBED_FIELDS:
        if key in row:
            value = row[key]
            out[key] = (
                get_str_list(row, key, path, ref) if isinstance(value, list) else get_str(row, key, path, ref)
            )
    return out


def _load_non_author(path: Path, *, role: Role, split: str, base_split: str) -> list[QARecord]:
    records = []
    for row_number, (ref, row) in enumerate(iter_json_rows(path)):
        row = require_object(row, path, ref)
        question = get_str(row, "question", path, ref)
        answer = get_str(row, "answer", path, ref)
        choices = correct = None
        if "option1" in row:
            choices = [get_str(row, f"option{i}", path, ref) for i in range(1, 5)]
            if answer not in choices:
                raise DataError(
                    path, f"answer {answer!r} is not one of the options", record=ref, field="answer"
                )
            correct = choices.index(answer)
        metadata = {"split": split, "row": row_number, **_perturbed_fields(row, path, ref)}
        records.append(
            make_record(
                path,
                ref,
                id=f"{SOURCE}/{base_split}/{row_number}",
                question=question,
                answer=answer,
                role=role,
                source=SOURCE,
                group=base_split,
                choices=choices,
                correct=correct,
                metadata=metadata,
            )
        )
    return records


def load_tofu_idk(path: str | Path) -> list[str]:
    """TOFU ``idontknow.jsonl``: plain lines of refusal answers (not JSON, despite the suffix)."""
    lines = [line.strip() for line in read_text(path).splitlines()]
    answers = [line for line in lines if line]
    if not answers:
        raise DataError(path, "no refusal lines found")
    return answers
