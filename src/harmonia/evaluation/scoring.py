"""Model-running scorers for QA records: they produce generations and log-probabilities and hand
them to the pure metrics (:mod:`harmonia.evaluation.metrics`).

Every scorer returns ``{"{metric}/{subset}": MetricEntry}`` (the ``results.json`` layout) with the
record ids beside the per-example values. Subsets are the records' roles.

- :func:`generate_answers` + :func:`qa_metrics`: greedy chat answers (optionally under a system
  turn, for the "model + instruction" in-context-unlearning row) -> ROUGE-L recall and F1,
  refusal rate per role, over-refusal on neighbours, n-gram entropy (fluency).
- :func:`probability_metrics`: length-normalised answer probability, perplexity of the answers,
  and TOFU's truth ratio where ``metadata`` has ``paraphrased_answer`` and ``perturbed_answer``.
- :func:`knowmem_metrics`: MUSE KnowMem, plain-text few-shot ``Question:/Answer:`` prompts
  (muse-bench ``eval_knowmem``), ROUGE-L F1.
- :func:`verbmem_metrics`: MUSE VerbMem, continuation of ``metadata["prompt"]``, ROUGE-L F1.
- :func:`text_perplexity`: perplexity of plain texts (utility on retain text).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harmonia.data.schema import ROLES, QARecord
from harmonia.errors import DataError
from harmonia.evaluation.backends import generate_texts
from harmonia.evaluation.loglik import ContinuationScore, score_continuations
from harmonia.evaluation.metrics import fluency, probability, refusal, rouge
from harmonia.evaluation.metrics.base import MetricResult
from harmonia.evaluation.results import MetricEntry
from harmonia.models.chat import render_prompt

# MUSE (muse-bench eval_knowmem) cuts a few-shot answer where the next shot would begin.
KNOWMEM_STOP: tuple[str, ...] = ("\n\n", "\nQuestion", "Question:")


def to_entry(result: MetricResult, ids: Sequence[str]) -> MetricEntry:
    """A results-file entry from a metric result and the ids of its examples, in order."""
    if len(ids) != result.n_total:
        raise DataError(
            None, f"metric '{result.name}': {result.n_total} values for {len(ids)} ids", field="example_ids"
        )
    return MetricEntry(
        value=result.value,
        n_used=result.n_used,
        per_example=list(result.per_example),
        example_ids=list(ids),
        details=dict(result.details),
    )


def by_role(records: Sequence[QARecord]) -> dict[str, list[int]]:
    """Indices of the records of each role present, roles in schema order."""
    groups: dict[str, list[int]] = {}
    for role in ROLES:
        idx = [i for i, r in enumerate(records) if r.role == role]
        if idx:
            groups[role] = idx
    return groups


def qa_prompt(
    tokenizer: Any, record: QARecord, *, system: str | None = None, prefill: str | None = None
) -> str:
    """The chat prompt of a record up to where the model answers (its own prefill unless overridden)."""
    return render_prompt(
        tokenizer, record.question, system=system, prefill=record.prefill if prefill is None else prefill
    )


def generate_answers(
    model: Any,
    tokenizer: Any,
    records: Sequence[QARecord],
    *,
    system: str | None = None,
    max_new_tokens: int = 64,
    batch_size: int = 16,
    stop: Sequence[str] = (),
    progress: bool = True,
    description: str = "answering",
) -> list[str]:
    """Greedy answers to the records' questions (after any prefill the record carries)."""
    prompts = [qa_prompt(tokenizer, r, system=system) for r in records]
    return generate_texts(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        stop=stop,
        progress=progress,
        description=description,
    )


def qa_metrics(
    records: Sequence[QARecord], generations: Sequence[str], *, use_stemmer: bool = True
) -> dict[str, MetricEntry]:
    """ROUGE-L recall/F1, refusal rate and n-gram entropy per role; over-refusal on neighbours."""
    if len(records) != len(generations):
        raise DataError(
            None, f"{len(records)} records but {len(generations)} generations", field="generations"
        )
    out: dict[str, MetricEntry] = {}
    for role, idx in by_role(records).items():
        ids = [records[i].id for i in idx]
        gens = [generations[i] for i in idx]
        golds = [records[i].answer for i in idx]
        out[f"rougeL_recall/{role}"] = to_entry(
            rouge.rouge_l_recall(gens, golds, use_stemmer=use_stemmer), ids
        )
        out[f"rougeL_f1/{role}"] = to_entry(rouge.rouge_l_f1(gens, golds, use_stemmer=use_stemmer), ids)
        out[f"refusal_rate/{role}"] = to_entry(refusal.refusal_rate(gens), ids)
        out[f"ngram_entropy/{role}"] = to_entry(fluency.ngram_entropy(gens), ids)
        if role == "neighbor":
            out["over_refusal/neighbor"] = to_entry(refusal.over_refusal(gens, [role] * len(gens)), ids)
    return out


def answer_scores(
    model: Any,
    tokenizer: Any,
    records: Sequence[QARecord],
    answers: Sequence[str],
    *,
    system: str | None = None,
    batch_size: int = 8,
    max_length: int | None = None,
    progress: bool = True,
    description: str = "answer log-probs",
) -> list[ContinuationScore]:
    """Teacher-forced log-probs of ``answers[i]`` after the chat prompt of ``records[i]``."""
    contexts = [qa_prompt(tokenizer, r, system=system) for r in records]
    return score_continuations(
        model,
        tokenizer,
        contexts,
        answers,
        batch_size=batch_size,
        max_length=max_length,
        progress=progress,
        description=description,
    )


def _perturbed(record: QARecord) -> tuple[str, list[str]] | None:
    """TOFU's paraphrased answer and perturbed answers, when the record carries both."""
    para = record.metadata.get("paraphrased_answer")
    pert = record.metadata.get("perturbed_answer")
    if isinstance(pert, str):
        pert = [pert]
    if not isinstance(para, str) or not isinstance(pert, list) or not pert:
        return None
    if not all(isinstance(p, str) for p in pert):
        raise DataError(
            None,
            "perturbed_answer must be a list of strings",
            record=record.id,
            field="metadata.perturbed_answer",
        )
    return para, list(pert)


def probability_metrics(
    model: Any,
    tokenizer: Any,
    records: Sequence[QARecord],
    *,
    system: str | None = None,
    batch_size: int = 8,
    max_length: int | None = None,
    truth_ratio: bool = True,
    progress: bool = True,
) -> dict[str, MetricEntry]:
    """Answer probability and answer perplexity per role, and the truth ratio where data allows.

    Truth-ratio aggregation follows TOFU: ``closer_to_1_better`` on forget records,
    ``true_better`` on every other role. Gold, paraphrased and perturbed answers are scored in
    one batched pass.
    """
    rows: list[tuple[int, str]] = [(i, r.answer) for i, r in enumerate(records)]
    perturbed = {i: p for i, r in enumerate(records) if truth_ratio and (p := _perturbed(r)) is not None}
    for i, (para, pert) in perturbed.items():
        rows += [(i, para), *((i, p) for p in pert)]
    scores = answer_scores(
        model,
        tokenizer,
        [records[i] for i, _ in rows],
        [a for _, a in rows],
        system=system,
        batch_size=batch_size,
        max_length=max_length,
        progress=progress,
    )
    gold = scores[: len(records)]
    extra: dict[int, list[ContinuationScore]] = {}
    for (i, _), s in zip(rows[len(records) :], scores[len(records) :], strict=True):
        extra.setdefault(i, []).append(s)

    out: dict[str, MetricEntry] = {}
    for role, idx in by_role(records).items():
        ids = [records[i].id for i in idx]
        lps = [gold[i].logprob_sum for i in idx]
        counts = [gold[i].n_tokens for i in idx]
        out[f"answer_probability/{role}"] = to_entry(probability.answer_probability(lps, counts), ids)
        out[f"answer_perplexity/{role}"] = to_entry(fluency.perplexity([-lp for lp in lps], counts), ids)
        with_tr = [i for i in idx if i in extra]
        if with_tr:
            result = probability.truth_ratio(
                [extra[i][0].logprob_sum for i in with_tr],
                [extra[i][0].n_tokens for i in with_tr],
                [[s.logprob_sum for s in extra[i][1:]] for i in with_tr],
                [[s.n_tokens for s in extra[i][1:]] for i in with_tr],
                aggregation="closer_to_1_better" if role == "forget" else "true_better",
            )
            out[f"truth_ratio/{role}"] = to_entry(result, [records[i].id for i in with_tr])
    return out


def knowmem_prompt(question: str, shots: Sequence[tuple[str, str]] = ()) -> str:
    """MUSE KnowMem prompt: solved ``Question:/Answer:`` shots, then the question awaiting its answer."""
    head = "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in shots)
    return head + f"Question: {question}\nAnswer: "


def knowmem_metrics(
    model: Any,
    tokenizer: Any,
    records: Sequence[QARecord],
    *,
    shots: Sequence[tuple[str, str]] = (),
    max_new_tokens: int = 32,
    batch_size: int = 16,
    use_stemmer: bool = False,
    progress: bool = True,
) -> tuple[dict[str, MetricEntry], list[str]]:
    """KnowMem ROUGE-L F1 per role; also returns the generations (in record order).

    ``use_stemmer=False`` is MUSE's setting (see :mod:`harmonia.evaluation.metrics.rouge`).
    """
    prompts = [knowmem_prompt(r.question, shots) for r in records]
    gens = generate_texts(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        stop=KNOWMEM_STOP,
        progress=progress,
        description="KnowMem",
    )
    return rouge_f1_by_role("knowmem", records, gens, use_stemmer=use_stemmer), gens


def rouge_f1_by_role(kind: str, records: Sequence[QARecord], gens: Sequence[str], *,
                     use_stemmer: bool) -> dict[str, MetricEntry]:
    """``{kind}_rougeL_f1/{role}`` entries: ROUGE-L F1 of generations against gold answers, per role."""
    out = {}
    for role, idx in by_role(records).items():
        result = rouge.rouge_l_f1([gens[i] for i in idx], [records[i].answer for i in idx], use_stemmer=use_stemmer)
        out[f"{kind}_rougeL_f1/{role}"] = to_entry(result, [records[i].id for i in idx])
    return out


def verbmem_prompt(record: QARecord) -> str:
    """The raw passage prefix a VerbMem record asks to continue (``metadata["prompt"]``)."""
    prompt = record.metadata.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise DataError(
            None,
            "a VerbMem record needs its passage prefix in metadata['prompt']",
            record=record.id,
            field="metadata.prompt",
        )
    return prompt


def verbmem_metrics(
    model: Any,
    tokenizer: Any,
    records: Sequence[QARecord],
    *,
    max_new_tokens: int = 128,
    batch_size: int = 16,
    use_stemmer: bool = False,
    progress: bool = True,
) -> tuple[dict[str, MetricEntry], list[str]]:
    """VerbMem ROUGE-L F1 of the 128-token continuation against the true continuation, per role."""
    prompts = [verbmem_prompt(r) for r in records]
    gens = generate_texts(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        progress=progress,
        description="VerbMem",
    )
    return rouge_f1_by_role("verbmem", records, gens, use_stemmer=use_stemmer), gens


def text_scores(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    max_tokens: int | None = 512,
    batch_size: int = 4,
    moments: bool = False,
    progress: bool = True,
    description: str = "text log-probs",
) -> list[ContinuationScore]:
    """Per-token log-probs of plain texts (their first ``max_tokens`` tokens), each from its start."""
    return score_continuations(
        model,
        tokenizer,
        [""] * len(texts),
        list(texts),
        batch_size=batch_size,
        moments=moments,
        max_continuation_tokens=max_tokens,
        progress=progress,
        description=description,
    )


def text_perplexity(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    max_tokens: int | None = 512,
    batch_size: int = 4,
    progress: bool = True,
) -> MetricResult:
    """Corpus perplexity of ``texts`` (token-weighted; per-text values in ``per_example``)."""
    scores = text_scores(
        model,
        tokenizer,
        texts,
        max_tokens=max_tokens,
        batch_size=batch_size,
        progress=progress,
        description="perplexity",
    )
    return fluency.perplexity([-s.logprob_sum for s in scores], [s.n_tokens for s in scores])
