"""ROUGE-L of generations against gold answers, with Google's ``rouge-score``.

TOFU and open-unlearning report ROUGE-L *recall* (how much of the gold answer the generation
reproduces: a model that forgot scores low whatever it says); MUSE's knowledge-memorisation
(KnowMem) reports ROUGE-L *F1*. Both come from one scorer call.

Stemming: ``use_stemmer=True`` is the default, as in TOFU and open-unlearning
(``src/evals/metrics/utils.py``). MUSE's own logger used ``use_stemmer=False``; pass that to
reproduce MUSE numbers exactly.

Edge cases (decided here, tested in tests/test_metrics_rouge.py):

- empty or whitespace-only generation: 0.0 (the model said nothing; for recall that is
  "nothing of the gold answer was revealed").
- gold answer with no scorable token (empty, whitespace-only, punctuation-only; rouge-score
  keeps only lowercase alphanumeric tokens): ``None``. Recall against an empty reference is
  undefined, and scoring it 0 would wrongly count as forgetting; the example is left out of
  the mean and the result's ``n_used`` shows it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from rouge_score import rouge_scorer
from rouge_score.tokenizers import DefaultTokenizer

from harmonia.evaluation.metrics.base import MetricResult, check_same_length, mean_result, register_metric


@dataclass(frozen=True)
class RougeL:
    """ROUGE-L of one generation against one gold answer."""

    precision: float
    recall: float
    f1: float


@lru_cache(maxsize=2)
def _scorer(use_stemmer: bool) -> rouge_scorer.RougeScorer:
    # Building a scorer loads the Porter stemmer; reuse one per setting.
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)


@lru_cache(maxsize=2)
def _tokenizer(use_stemmer: bool) -> DefaultTokenizer:
    return DefaultTokenizer(use_stemmer=use_stemmer)


def rouge_tokens(text: str, *, use_stemmer: bool = True) -> list[str]:
    """The tokens ROUGE-L scores in ``text``: lowercase alphanumeric words, stemmed by default."""
    return _tokenizer(use_stemmer).tokenize(text)


def rouge_l(generation: str, gold: str, *, use_stemmer: bool = True) -> RougeL | None:
    """ROUGE-L of ``generation`` against ``gold``; ``None`` when ``gold`` has no scorable token."""
    if not rouge_tokens(gold, use_stemmer=use_stemmer):
        return None
    score = _scorer(use_stemmer).score(gold, generation)["rougeL"]
    return RougeL(precision=score.precision, recall=score.recall, f1=score.fmeasure)


def _rouge_result(
    name: str, attr: str, generations: Sequence[str], golds: Sequence[str], use_stemmer: bool
) -> MetricResult:
    check_same_length(generations=generations, golds=golds)
    scores = [rouge_l(g, a, use_stemmer=use_stemmer) for g, a in zip(generations, golds, strict=True)]
    per_example = [None if s is None else getattr(s, attr) for s in scores]
    return mean_result(name, per_example, {"use_stemmer": use_stemmer})


@register_metric("rougeL_recall")
def rouge_l_recall(
    generations: Sequence[str], golds: Sequence[str], *, use_stemmer: bool = True
) -> MetricResult:
    """Mean ROUGE-L recall (TOFU / open-unlearning "ROUGE")."""
    return _rouge_result("rougeL_recall", "recall", generations, golds, use_stemmer)


@register_metric("rougeL_f1")
def rouge_l_f1(generations: Sequence[str], golds: Sequence[str], *, use_stemmer: bool = True) -> MetricResult:
    """Mean ROUGE-L F1 (MUSE KnowMem)."""
    return _rouge_result("rougeL_f1", "f1", generations, golds, use_stemmer)
