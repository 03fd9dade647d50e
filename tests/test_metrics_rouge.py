"""ROUGE-L recall/F1 on hand-computed cases, including the documented edge cases."""

import pytest

from harmonia.errors import DataError
from harmonia.evaluation.metrics.rouge import rouge_l, rouge_l_f1, rouge_l_recall, rouge_tokens


def test_prefix_of_the_gold_answer():
    # LCS("the cat sat", "the cat sat on the mat") = 3; recall 3/6, precision 3/3.
    s = rouge_l("the cat sat", "the cat sat on the mat")
    assert s.recall == pytest.approx(3 / 6)
    assert s.precision == pytest.approx(1.0)
    assert s.f1 == pytest.approx(2 * 1.0 * 0.5 / 1.5)


def test_lcs_is_a_subsequence_not_a_substring():
    # LCS = "the cat sat" (3) inside a 5-token generation: recall 1, precision 3/5, F1 0.75.
    s = rouge_l("the big cat quietly sat", "the cat sat")
    assert (s.recall, s.precision) == pytest.approx((1.0, 0.6))
    assert s.f1 == pytest.approx(0.75)


def test_word_order_matters():
    assert rouge_l("sat cat the", "the cat sat").recall == pytest.approx(1 / 3)


def test_case_and_punctuation_are_ignored():
    assert rouge_l("The CAT, sat!", "the cat sat").recall == pytest.approx(1.0)


def test_stemming_is_on_by_default_and_can_be_switched_off():
    # Porter: cats -> cat, running -> run, runs -> run.
    assert rouge_l("cats running", "cat runs").recall == pytest.approx(1.0)
    assert rouge_l("cats running", "cat runs", use_stemmer=False).recall == pytest.approx(0.0)


def test_the_scored_tokens_are_lowercase_words_stemmed_by_default():
    assert rouge_tokens("The CATS, running!") == ["the", "cat", "run"]
    assert rouge_tokens("The CATS, running!", use_stemmer=False) == ["the", "cats", "running"]


@pytest.mark.parametrize("generation", ["", "   \n\t"])
def test_empty_or_whitespace_generation_scores_zero(generation):
    s = rouge_l(generation, "the cat sat")
    assert (s.recall, s.precision, s.f1) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("gold", ["", "  ", "?!"])
def test_gold_without_scorable_tokens_is_undefined(gold):
    assert rouge_l("the cat sat", gold) is None


def test_aggregate_skips_undefined_examples():
    r = rouge_l_recall(["the cat sat", "the cat sat", ""], ["the cat sat on the mat", " ", "a dog"])
    assert r.per_example == [pytest.approx(0.5), None, 0.0]
    assert r.value == pytest.approx(0.25)
    assert r.n_used == 2
    f = rouge_l_f1(["the cat sat"], ["the cat sat on the mat"])
    assert f.value == pytest.approx(2 / 3)
    assert f.details == {"use_stemmer": True}


def test_all_golds_empty_raises():
    with pytest.raises(DataError, match="no example"):
        rouge_l_recall(["x"], [""])


def test_length_mismatch_names_the_field():
    with pytest.raises(DataError, match="generations=2, golds=1"):
        rouge_l_recall(["a", "b"], ["a"])
