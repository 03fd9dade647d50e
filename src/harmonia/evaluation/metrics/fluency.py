"""Fluency: weighted n-gram entropy of generations, and perplexity from summed NLL.

N-gram entropy is ROME/MEMIT's "generation entropy" (kmeng01/rome,
``experiments/py/eval_utils_counterfact.py``: ``compute_n_gram_entropy`` /
``n_gram_entropy``), used by unlearning papers to catch degenerate, repetitive output. For each
``n`` in ``ns`` it takes the Shannon entropy in bits of the text's n-gram frequency
distribution, multiplies it by the matching weight, and returns the *arithmetic mean* of the
weighted values. With the defaults ``ns = (2, 3)`` and ``weights = (2/3, 4/3)`` that is
``(2/3 * H2 + 4/3 * H3) / 2 = H2 / 3 + 2 * H3 / 3``; over several generations the per-text
values are averaged.

Tokenisation: ROME uses ``nltk.word_tokenize``, which first splits sentences with the Punkt
model, a data file that is not installed offline. We use the same word tokenizer
(``nltk.tokenize.NLTKWordTokenizer``) on the whole text; the only difference is that a full
stop *inside* the text stays attached to its word ("sat." instead of "sat", "."), which changes
the entropy only for multi-sentence text and never its degeneracy signal. A text with fewer
than ``n`` tokens has no n-grams; its entropy for that ``n`` is 0, as in ROME (a sum over an
empty distribution).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from nltk.tokenize import NLTKWordTokenizer

from harmonia.errors import DataError
from harmonia.evaluation.metrics.base import (
    MetricResult,
    check_finite,
    check_same_length,
    mean_result,
    register_metric,
)

DEFAULT_NS: tuple[int, ...] = (2, 3)
DEFAULT_WEIGHTS: tuple[float, ...] = (2 / 3, 4 / 3)
_WORD_TOKENIZER = NLTKWordTokenizer()


def word_tokens(text: str) -> list[str]:
    """The words and punctuation marks that n-grams are built from."""
    return _WORD_TOKENIZER.tokenize(text)


def ngram_entropy_bits(tokens: Sequence[str], n: int) -> float:
    """Shannon entropy (bits) of the frequency distribution of ``tokens``' n-grams; 0 if none."""
    if n < 1:
        raise DataError(None, f"n must be >= 1, got {n}", field="ns")
    counts = Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    total = sum(counts.values())
    if total == 0:
        return 0.0
    return -math.fsum(c / total * math.log2(c / total) for c in counts.values())


def text_ngram_entropy(
    text: str, ns: Sequence[int] = DEFAULT_NS, weights: Sequence[float] = DEFAULT_WEIGHTS
) -> float:
    """ROME's weighted n-gram entropy of one text: mean over n of ``weight_n * H_n``."""
    check_same_length(ns=ns, weights=weights)
    if len(ns) == 0:
        raise DataError(None, "need at least one n-gram order", field="ns")
    tokens = word_tokens(text)
    return math.fsum(w * ngram_entropy_bits(tokens, n) for n, w in zip(ns, weights, strict=True)) / len(ns)


@register_metric("ngram_entropy")
def ngram_entropy(
    generations: Sequence[str], ns: Sequence[int] = DEFAULT_NS, weights: Sequence[float] = DEFAULT_WEIGHTS
) -> MetricResult:
    """Mean weighted n-gram entropy over generations (higher = more varied, less degenerate)."""
    per_example: list[float | None] = [text_ngram_entropy(g, ns, weights) for g in generations]
    return mean_result("ngram_entropy", per_example, {"ns": list(ns), "weights": list(weights)})


def perplexity_value(nll_sum: float, n_tokens: int, *, record: int | None = None) -> float:
    """``exp(nll_sum / n_tokens)`` for one text; ``nll_sum`` is the summed negative log-likelihood (nats)."""
    nll = check_finite(nll_sum, field="nll_sums", record=record)
    if nll < 0:
        raise DataError(None, f"a summed NLL must be >= 0, got {nll}", record=record, field="nll_sums")
    if n_tokens < 1:
        raise DataError(
            None, f"token count must be >= 1, got {n_tokens}", record=record, field="token_counts"
        )
    return math.exp(nll / n_tokens)


@register_metric("perplexity")
def perplexity(nll_sums: Sequence[float], token_counts: Sequence[int]) -> MetricResult:
    """Corpus perplexity ``exp(sum NLL / sum tokens)`` (token-weighted, like one long text).

    ``per_example`` holds each text's own perplexity (None for a text with 0 tokens) and
    ``details["mean_per_example"]`` their plain mean, which short texts dominate.
    """
    check_same_length(nll_sums=nll_sums, token_counts=token_counts)
    per_example: list[float | None] = []
    for i, (nll, n) in enumerate(zip(nll_sums, token_counts, strict=True)):
        if n < 0:
            raise DataError(None, f"token count must be >= 0, got {n}", record=i, field="token_counts")
        per_example.append(None if n == 0 else perplexity_value(nll, n, record=i))
    per_text = mean_result("perplexity", per_example)
    used = [(float(nll), n) for nll, n in zip(nll_sums, token_counts, strict=True) if n > 0]
    corpus = math.exp(math.fsum(nll for nll, _ in used) / sum(n for _, n in used))
    return MetricResult(
        "perplexity", corpus, per_text.per_example, per_text.n_used, {"mean_per_example": per_text.value}
    )
