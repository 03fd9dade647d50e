"""ROME-style n-gram entropy and perplexity on hand-computed cases."""

import math

import pytest

from harmonia.errors import DataError
from harmonia.evaluation.metrics.fluency import (
    ngram_entropy,
    ngram_entropy_bits,
    perplexity,
    text_ngram_entropy,
    word_tokens,
)


def h(*probs: float) -> float:
    return -sum(p * math.log2(p) for p in probs)


def test_repeated_phrase_by_hand():
    # tokens: the cat the cat; bigrams (the,cat) x2, (cat,the) x1; trigrams two distinct.
    h2, h3 = h(2 / 3, 1 / 3), 1.0
    assert ngram_entropy_bits(word_tokens("the cat the cat"), 2) == pytest.approx(h2)
    assert text_ngram_entropy("the cat the cat") == pytest.approx((2 / 3 * h2 + 4 / 3 * h3) / 2)


def test_all_distinct_words():
    # 3 distinct bigrams, 2 distinct trigrams
    assert text_ngram_entropy("a b c d") == pytest.approx((2 / 3 * math.log2(3) + 4 / 3 * 1.0) / 2)


@pytest.mark.parametrize("text", ["a a a a a a", "hello", ""])
def test_degenerate_or_short_text_has_zero_entropy(text):
    assert text_ngram_entropy(text) == 0.0


def test_punctuation_is_a_token():
    assert word_tokens("the cat, sat") == ["the", "cat", ",", "sat"]


def test_metric_averages_texts_and_accepts_custom_orders():
    r = ngram_entropy(["the cat the cat", "a a a a"])
    assert r.value == pytest.approx(text_ngram_entropy("the cat the cat") / 2)
    # unigram entropy only, weight 1: "a b a b" -> 1 bit
    assert ngram_entropy(["a b a b"], ns=[1], weights=[1.0]).value == pytest.approx(1.0)
    with pytest.raises(DataError):
        ngram_entropy(["a b"], ns=[2, 3], weights=[1.0])


def test_perplexity_by_hand():
    # text 1: 2 tokens of p = 1/4 -> 4; text 2: 3 tokens of p = 1/2 -> 2; text 3: empty.
    r = perplexity([2 * math.log(4), 3 * math.log(2), 0.0], [2, 3, 0])
    assert r.per_example == [pytest.approx(4.0), pytest.approx(2.0), None]
    assert r.value == pytest.approx(2 ** (7 / 5))  # exp((4 ln2 + 3 ln2) / 5)
    assert r.details["mean_per_example"] == pytest.approx(3.0)


def test_perplexity_rejects_negative_nll():
    with pytest.raises(DataError, match=r"record 0.*nll_sums"):
        perplexity([-1.0], [2])
