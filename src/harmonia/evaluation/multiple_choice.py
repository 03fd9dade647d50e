"""Multiple choice by option log-likelihood, in lm-eval's zero-shot format (WMDP, MMLU).

The prompt is lm-eval's (:mod:`harmonia.evaluation.metrics.mcq`): description, question,
lettered options, ``"Answer:"``; the options scored are the continuations ``" A" .. " D"``; the
prediction is the option with the highest log-likelihood. WMDP records (``source == "wmdp"``)
use their group as the WMDP domain (cyber, bio, chem); MMLU records (``source == "mmlu"``) their
subject; any other MCQ record gets the generic description with its group as the topic.

Two variants serve the multiple-choice prefill attack: ``format="chat"`` puts the same text in
the user turn of the chat template, and ``opener`` is written at the start of the answer
("The answer is") before the letter. An option letter is scored with a leading space unless the
prompt already ends in whitespace (after ``"Answer:"`` or an opener: ``" A"``; right after the
chat template's assistant header, which ends in a newline: ``"A"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, cast

from harmonia.data.schema import QARecord
from harmonia.errors import DataError
from harmonia.evaluation.loglik import encode_plain, next_token_logprobs, score_continuations
from harmonia.evaluation.metrics import mcq
from harmonia.evaluation.results import MetricEntry
from harmonia.evaluation.scoring import by_role, to_entry
from harmonia.models.chat import render_prompt

MCQFormat = Literal["plain", "chat"]


def mcq_text(record: QARecord) -> str:
    """lm-eval's zero-shot prompt for one MCQ record (see module docstring for the topic)."""
    if record.choices is None:
        raise DataError(None, "not a multiple-choice record (no choices)", record=record.id, field="choices")
    if record.source == "wmdp":
        if record.group not in mcq.WMDP_TOPICS:
            raise DataError(None, f"a WMDP record's group names its domain, one of {sorted(mcq.WMDP_TOPICS)}; "
                            f"got {record.group!r}", record=record.id, field="group")
        return mcq.wmdp_prompt(record.question, record.choices, record.group)
    if record.source == "mmlu":
        subject = record.metadata.get("subject") or record.group
        if not subject:
            raise DataError(None, "an MMLU record needs its subject (metadata['subject'] or group)",
                            record=record.id, field="metadata.subject")
        return mcq.mmlu_prompt(record.question, record.choices, str(subject))
    # Any other MCQ source: the generic description, about the record's group when it has one.
    topic = record.group.replace("_", " ") if record.group else "general knowledge"
    return mcq.build_mcq_prompt(record.question, record.choices, topic=topic)


def mcq_prompt(
    tokenizer: Any, record: QARecord, *, fmt: MCQFormat = "plain", system: str | None = None, opener: str = ""
) -> str:
    """The text after which the option letter is scored (plain lm-eval text, or chat-wrapped)."""
    text = mcq_text(record)
    if fmt == "plain":
        return text + (" " + opener if opener else "")
    if fmt == "chat":
        return render_prompt(tokenizer, text, system=system, prefill=opener)
    raise DataError(None, f"unknown multiple-choice format '{fmt}', use 'plain' or 'chat'", field="format")


def option_targets(prompt: str, n_choices: int) -> list[str]:
    """``[" A", " B", ...]``, or ``["A", ...]`` when the prompt already ends in whitespace."""
    letters = mcq.option_letters(n_choices)
    if prompt[-1:].isspace():
        return letters
    return [mcq.TARGET_DELIMITER + letter for letter in letters]


def option_loglikelihoods(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    targets: Sequence[Sequence[str]],
    *,
    batch_size: int = 8,
    max_length: int | None = None,
    progress: bool = True,
) -> list[list[float]]:
    """``log P(target | prompt)`` for every option of every question.

    Where each option is one token (the usual case for letters) one forward pass per prompt
    scores all options; other prompts are scored option by option. Both give the same numbers.
    """
    out: list[list[float]] = [[] for _ in prompts]
    buckets: dict[tuple[int, ...], list[int]] = {}
    multi: list[int] = []
    for i, opts in enumerate(targets):
        ids = [encode_plain(tokenizer, t) for t in opts]
        if all(len(x) == 1 for x in ids):
            buckets.setdefault(tuple(x[0] for x in ids), []).append(i)
        else:
            multi.append(i)
    for token_ids, idx in buckets.items():
        scores = next_token_logprobs(
            model,
            tokenizer,
            [prompts[i] for i in idx],
            token_ids,
            batch_size=batch_size,
            max_length=max_length,
            progress=progress,
        )
        for i, s in zip(idx, scores, strict=True):
            out[i] = s
    if multi:
        pairs = [(i, t) for i in multi for t in targets[i]]
        scores = score_continuations(
            model,
            tokenizer,
            [prompts[i] for i, _ in pairs],
            [t for _, t in pairs],
            batch_size=batch_size,
            max_length=max_length,
            progress=progress,
            description="scoring options",
        )
        for (i, _), s in zip(pairs, scores, strict=True):
            out[i].append(s.logprob_sum)
    return out


def record_option_loglikelihoods(
    model: Any,
    tokenizer: Any,
    records: Sequence[QARecord],
    *,
    fmt: MCQFormat = "plain",
    system: str | None = None,
    opener: str = "",
    batch_size: int = 8,
    max_length: int | None = None,
    progress: bool = True,
) -> list[list[float]]:
    """Option log-likelihoods of MCQ records, prompts built by :func:`mcq_prompt`."""
    prompts = [mcq_prompt(tokenizer, r, fmt=fmt, system=system, opener=opener) for r in records]
    targets = [option_targets(p, len(r.choices or ())) for p, r in zip(prompts, records, strict=True)]
    return option_loglikelihoods(
        model, tokenizer, prompts, targets, batch_size=batch_size, max_length=max_length, progress=progress
    )


def correct_indices(records: Sequence[QARecord]) -> list[int]:
    return [cast(int, r.correct) for r in records]


def mcq_metrics(
    model: Any,
    tokenizer: Any,
    records: Sequence[QARecord],
    *,
    fmt: MCQFormat = "plain",
    system: str | None = None,
    opener: str = "",
    batch_size: int = 8,
    max_length: int | None = None,
    progress: bool = True,
    name: str = "mcq_acc",
) -> dict[str, MetricEntry]:
    """Accuracy per role (``"{name}/{role}"``); ``details`` keeps each question's option scores."""
    lls = record_option_loglikelihoods(
        model,
        tokenizer,
        records,
        fmt=fmt,
        system=system,
        opener=opener,
        batch_size=batch_size,
        max_length=max_length,
        progress=progress,
    )
    out: dict[str, MetricEntry] = {}
    for role, idx in by_role(records).items():
        result = mcq.mcq_accuracy([lls[i] for i in idx], correct_indices([records[i] for i in idx]))
        entry = to_entry(result, [records[i].id for i in idx])
        entry.details.update(
            {
                "format": fmt,
                "opener": opener,
                "option_loglikelihoods": [lls[i] for i in idx],
                "predicted": [mcq.predicted_choice(lls[i]) for i in idx],
                "sources": sorted({records[i].source for i in idx}),
            }
        )
        out[f"{name}/{role}"] = entry
    return out
