"""Turn MCQ and raw text into plain question-answer records (METHOD.md Part 1).

MCQ -> QA: the options are written into the question as lettered lines ("A. ...") and the answer
is ``"B. <option text>"`` (``style="letter_text"``, the default: the model has to say the content,
not only a letter, so distillation positions carry knowledge) or just ``"B"``
(``style="letter"``). The converted record is plain QA (``choices``/``correct`` are None, so no
consumer formats the options twice); the original options, correct index, raw question and style
are kept in ``metadata["mcq"]``.

Raw text -> QA, two ways:

- offline and deterministic: split each document into consecutive passages of
  ``prefix_length + continuation_length`` units (words, or tokens of a given tokenizer); the
  prefix becomes the question "Continue the passage:\\n<prefix>" and the continuation the answer.
  A final passage whose continuation is shorter than half of ``continuation_length`` is dropped.
- LLM-assisted (the paper's way): split into passages of ``passage_length`` units, ask a
  :class:`~harmonia.data.generators.QAGenerator` for N pairs per passage with the prompt template
  shipped in ``resources/data/prompts/text_to_qa.txt``, and parse its replies tolerantly
  (:func:`parse_qa_pairs`). Dropped fragments are counted in a :class:`GenerationReport`; no
  usable pair from any passage is an error, never an empty dataset.
"""

from __future__ import annotations

import json
import logging
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harmonia.data.readers import read_text
from harmonia.data.schema import QARecord, Role
from harmonia.data.tokens import decode_plain, encode_plain
from harmonia.errors import DataError

log = logging.getLogger(__name__)

MCQStyle = Literal["letter_text", "letter"]
Unit = Literal["words", "tokens"]
LETTERS = string.ascii_uppercase
CONTINUE_PROMPT = "Continue the passage:\n{prefix}"


# ---------------------------------------------------------------- MCQ -> QA


def format_mcq_question(question: str, choices: Sequence[str]) -> str:
    """``question`` followed by one ``"A. option"`` line per choice."""
    if len(choices) > len(LETTERS):
        raise ValueError(f"at most {len(LETTERS)} choices can be lettered, got {len(choices)}")
    return question.rstrip() + "\n" + "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))


def mcq_answer(choices: Sequence[str], correct: int, style: MCQStyle = "letter_text") -> str:
    letter = LETTERS[correct]
    return letter if style == "letter" else f"{letter}. {choices[correct]}"


def mcq_to_qa(record: QARecord, *, style: MCQStyle = "letter_text") -> QARecord:
    """The QA form of an MCQ record (see module docstring); QA records are returned unchanged."""
    if not record.is_mcq:
        return record
    choices, correct = list(record.choices or []), int(record.correct or 0)
    metadata = {
        **record.metadata,
        "mcq": {"question": record.question, "choices": choices, "correct": correct, "style": style},
    }
    return record.model_copy(
        update={
            "question": format_mcq_question(record.question, choices),
            "answer": mcq_answer(choices, correct, style),
            "choices": None,
            "correct": None,
            "metadata": metadata,
        }
    )


def standardise_mcq(records: Sequence[QARecord], *, style: MCQStyle = "letter_text") -> list[QARecord]:
    return [mcq_to_qa(r, style=style) for r in records]


# ---------------------------------------------------------------- text -> passages


class _Units:
    """A document as a sequence of units (words or tokens) that can be cut back into text."""

    def __init__(self, text: str, unit: Unit, tokenizer: Any = None) -> None:
        self.unit = unit
        if unit == "words":
            # Each piece keeps its trailing whitespace, so joining pieces restores the original text.
            self._pieces = re.findall(r"\S+\s*", text.strip())
            self._n = len(self._pieces)
        else:
            if tokenizer is None:
                raise ValueError("unit='tokens' needs a tokenizer")
            self._tokenizer = tokenizer
            self._ids = encode_plain(tokenizer, text.strip())
            self._n = len(self._ids)

    def __len__(self) -> int:
        return self._n

    def span(self, start: int, end: int) -> str:
        if self.unit == "words":
            return "".join(self._pieces[start:end]).strip()
        return decode_plain(self._tokenizer, self._ids[start:end]).strip()


@dataclass(frozen=True)
class Passage:
    """A piece of document ``doc``; offline passages split into ``text`` (prefix) and ``continuation``."""

    doc: int
    index: int
    text: str
    continuation: str = ""


def continuation_passages(
    documents: Sequence[str],
    *,
    prefix_length: int,
    continuation_length: int,
    unit: Unit = "words",
    tokenizer: Any = None,
) -> list[Passage]:
    """Consecutive, non-overlapping prefix/continuation passages of every document."""
    if prefix_length < 1 or continuation_length < 1:
        raise ValueError("prefix_length and continuation_length must be >= 1")
    min_continuation = max(1, continuation_length // 2)
    out = []
    for d, text in enumerate(documents):
        units = _Units(text, unit, tokenizer)
        for p, start in enumerate(range(0, len(units), prefix_length + continuation_length)):
            if len(units) - start - prefix_length < min_continuation:
                break
            middle = start + prefix_length
            out.append(
                Passage(
                    d,
                    p,
                    units.span(start, middle),
                    units.span(middle, min(middle + continuation_length, len(units))),
                )
            )
    return out


def generation_passages(
    documents: Sequence[str], *, length: int, unit: Unit = "words", tokenizer: Any = None
) -> list[Passage]:
    """Consecutive passages of ``length`` units.

    A tail shorter than half a passage is dropped, unless it is the whole document.
    """
    if length < 1:
        raise ValueError("length must be >= 1")
    out = []
    for d, text in enumerate(documents):
        units = _Units(text, unit, tokenizer)
        for p, start in enumerate(range(0, len(units), length)):
            if start > 0 and len(units) - start < length // 2:
                break
            out.append(Passage(d, p, units.span(start, start + length)))
    return out


def continuation_question(prefix: str) -> str:
    """The question asking to continue ``prefix`` (also used for MUSE verbmem prompts)."""
    return CONTINUE_PROMPT.format(prefix=prefix)


def continuation_records(
    passages: Sequence[Passage], *, role: Role, source: str, group: str, id_prefix: str
) -> list[QARecord]:
    """Offline text -> QA: one "continue the passage" record per passage."""
    return [
        QARecord(
            id=f"{id_prefix}/{p.doc}/{p.index}",
            question=continuation_question(p.text),
            answer=p.continuation,
            role=role,
            source=source,
            group=group,
            metadata={"format": "continuation", "doc": p.doc, "passage": p.index},
        )
        for p in passages
    ]


# ---------------------------------------------------------------- LLM-assisted text -> QA


def load_prompt_template(path: str | Path) -> str:
    """Read a text->QA prompt template; it must use exactly the fields ``{n}`` and ``{passage}``."""
    template = read_text(path)
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise DataError(path, f"not a valid format template: {exc}") from None
    if fields != {"n", "passage"}:
        raise DataError(
            path, f"template must use the fields {{n}} and {{passage}} only, found {sorted(fields)}"
        )
    return template


_MARK = r"(?:\*\*|__)?"
_Q_LINE = re.compile(
    rf"^\s*(?:[-*•]\s*)?(?:\d+\s*[.)]\s*)?{_MARK}\s*(?:q|question)\s*\d*\s*{_MARK}\s*[:.)-]\s*"
    rf"{_MARK}\s*(?P<text>.*)$",
    re.IGNORECASE,
)
_A_LINE = re.compile(
    rf"^\s*(?:[-*•]\s*)?{_MARK}\s*(?:a|answer)\s*\d*\s*{_MARK}\s*[:.)-]\s*{_MARK}\s*(?P<text>.*)$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ParsedPairs:
    pairs: list[tuple[str, str]]
    malformed: int  # question without answer, answer without question, or a blank side


def parse_qa_pairs(text: str) -> ParsedPairs:
    """Extract ``Q:``/``A:`` pairs from generated text, tolerating numbering, markdown and chatter.

    Lines that continue a question or answer are joined to it; a blank line ends an answer;
    unrelated lines are ignored. When no Q/A line is found, a JSON list of
    ``{"question", "answer"}`` objects anywhere in the text is accepted instead.
    """
    pairs: list[tuple[str, str]] = []
    malformed = 0
    question: str | None = None
    answer: str | None = None
    current: str | None = None
    saw_marker = False

    def flush() -> None:
        nonlocal question, answer, malformed
        if question is not None:
            q, a = question.strip(), (answer or "").strip()
            if q and a:
                pairs.append((q, a))
            else:
                malformed += 1
        question = answer = None

    for line in text.splitlines():
        if m := _Q_LINE.match(line):
            saw_marker = True
            flush()
            question, current = m["text"], "q"
        elif m := _A_LINE.match(line):
            saw_marker = True
            if question is None or answer is not None:
                malformed += 1  # an answer with no open question
                current = None
            else:
                answer, current = m["text"], "a"
        elif not line.strip():
            if current == "a":
                current = None
        elif current == "q":
            question = f"{question} {line.strip()}"
        elif current == "a":
            answer = f"{answer} {line.strip()}"
    flush()
    if not saw_marker:
        return _parse_json_pairs(text)
    return ParsedPairs(pairs, malformed)


def _parse_json_pairs(text: str) -> ParsedPairs:
    start, end = text.find("["), text.rfind("]")
    if start == -1 or end <= start:
        return ParsedPairs([], 0)
    try:
        items = json.loads(text[start : end + 1])
    except json.JSONDecodeError:
        return ParsedPairs([], 0)
    pairs, malformed = [], 0
    for item in items if isinstance(items, list) else []:
        q = item.get("question") if isinstance(item, dict) else None
        a = item.get("answer") if isinstance(item, dict) else None
        if isinstance(q, str) and isinstance(a, str) and q.strip() and a.strip():
            pairs.append((q.strip(), a.strip()))
        else:
            malformed += 1
    return ParsedPairs(pairs, malformed)


@dataclass
class GenerationReport:
    """What the generator produced: pairs kept, fragments dropped, shortfall against the request."""

    passages: int = 0
    requested: int = 0
    kept: int = 0
    malformed: int = 0
    extra: int = 0  # pairs beyond the N asked for, dropped
    empty_outputs: int = 0  # passages whose reply held no usable pair

    @property
    def dropped(self) -> int:
        return self.malformed + self.extra

    @property
    def missing(self) -> int:
        return self.requested - self.kept

    def summary(self) -> str:
        return (
            f"{self.kept}/{self.requested} QA pairs from {self.passages} passages; dropped {self.dropped} "
            f"({self.malformed} malformed, {self.extra} extra); {self.empty_outputs} passages gave none"
        )


def generated_records(
    passages: Sequence[Passage],
    generator: Any,
    *,
    template: str,
    pairs_per_passage: int,
    role: Role,
    source: str,
    group: str,
    id_prefix: str,
) -> tuple[list[QARecord], GenerationReport]:
    """LLM-assisted text -> QA (see module docstring). ``generator`` is a QAGenerator."""
    if pairs_per_passage < 1:
        raise ValueError("pairs_per_passage must be >= 1")
    report = GenerationReport(passages=len(passages), requested=len(passages) * pairs_per_passage)
    if not passages:
        return [], report
    prompts = [template.format(n=pairs_per_passage, passage=p.text) for p in passages]
    outputs = generator.generate(prompts)
    if len(outputs) != len(prompts):
        raise DataError(None, f"generator returned {len(outputs)} replies for {len(prompts)} prompts")
    records = []
    for passage, output in zip(passages, outputs, strict=True):
        parsed = parse_qa_pairs(output)
        kept = parsed.pairs[:pairs_per_passage]
        report.malformed += parsed.malformed
        report.extra += len(parsed.pairs) - len(kept)
        report.kept += len(kept)
        report.empty_outputs += not kept
        for j, (question, answer) in enumerate(kept):
            records.append(
                QARecord(
                    id=f"{id_prefix}/{passage.doc}/{passage.index}/{j}",
                    question=question,
                    answer=answer,
                    role=role,
                    source=source,
                    group=group,
                    metadata={"format": "generated", "doc": passage.doc, "passage": passage.index},
                )
            )
    if not records:
        first = outputs[0][:300] if outputs else ""
        raise DataError(
            None,
            f"the generator gave no parseable QA pair for any of {len(passages)} passages "
            f"of '{id_prefix}'; first reply: {first!r}",
        )
    if report.dropped or report.missing:
        log.warning("text->QA for %s: %s", id_prefix, report.summary())
    return records, report
