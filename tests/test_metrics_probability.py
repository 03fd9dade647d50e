"""Length-normalised probability, probability with options, and TOFU's truth ratio."""

import math

import pytest

from harmonia.errors import DataError
from harmonia.evaluation.metrics.probability import (
    answer_probability,
    normalised_probability,
    probability_with_options,
    truth_ratio,
    truth_ratio_value,
)

LN = math.log


def test_normalised_probability_is_the_geometric_mean_token_probability():
    # two tokens each with p = 0.5
    assert normalised_probability(2 * LN(0.5), 2) == pytest.approx(0.5)
    # tokens with p = 0.5 and p = 0.125: geometric mean 0.25
    assert normalised_probability(LN(0.5) + LN(0.125), 2) == pytest.approx(0.25)


def test_answer_probability_skips_empty_answers():
    r = answer_probability([2 * LN(0.5), 3 * LN(0.2), -1.0], [2, 3, 0])
    assert r.per_example == [pytest.approx(0.5), pytest.approx(0.2), None]
    assert r.value == pytest.approx(0.35)
    assert r.n_used == 2


def test_positive_logprob_or_negative_count_raises():
    with pytest.raises(DataError, match=r"record 0.*<= 0"):
        answer_probability([0.5], [1])
    with pytest.raises(DataError, match=r"record 1.*token_counts"):
        answer_probability([-1.0, -1.0], [1, -2])


def test_probability_with_options():
    r = probability_with_options([0.6, 0.2], [[0.1, 0.3], [0.2]])
    assert r.per_example == [pytest.approx(0.6), pytest.approx(0.5)]
    assert r.value == pytest.approx(0.55)


# Paraphrased answer: 2 tokens, normalised probability 0.5.
PARA = (2 * LN(0.5), 2)
# Perturbed answers: normalised probabilities 0.25 (1 token) and 0.16 (2 tokens).
PERT = ([LN(0.25), 2 * LN(0.16)], [1, 2])


def test_truth_ratio_geometric_and_arithmetic():
    # geometric mean sqrt(0.25 * 0.16) = 0.2 -> R = 0.2 / 0.5
    assert truth_ratio_value(*PARA, *PERT) == pytest.approx(0.4)
    # arithmetic mean (0.25 + 0.16) / 2 = 0.205 -> R = 0.41 (the paper's formula)
    assert truth_ratio_value(*PARA, *PERT, perturbed_mean="arithmetic") == pytest.approx(0.41)


def test_truth_ratio_aggregations():
    # example 0: R = 0.4; example 1: paraphrased 0.2, one perturbed 0.4 -> R = 2.
    args = ([PARA[0], LN(0.2)], [PARA[1], 1], [PERT[0], [LN(0.4)]], [PERT[1], [1]])
    forget = truth_ratio(*args, aggregation="closer_to_1_better")
    assert forget.per_example == [pytest.approx(0.4), pytest.approx(0.5)]  # min(R, 1/R)
    assert forget.value == pytest.approx(0.45)
    assert forget.details["log_ratios"] == [pytest.approx(LN(0.4)), pytest.approx(LN(2.0))]
    retain = truth_ratio(*args, aggregation="true_better")
    assert retain.per_example == [pytest.approx(0.6), 0.0]  # max(0, 1 - R)
    assert retain.value == pytest.approx(0.3)


def test_truth_ratio_extreme_values_do_not_overflow():
    r = truth_ratio([-2000.0], [1], [[0.0]], [[1]], aggregation="closer_to_1_better")
    assert r.value == 0.0


def test_truth_ratio_zero_token_answer_is_undefined_and_bad_options_raise():
    r = truth_ratio([PARA[0], -1.0], [2, 0], [PERT[0], [-1.0]], [PERT[1], [1]], aggregation="true_better")
    assert r.per_example[1] is None and r.n_used == 1
    with pytest.raises(DataError, match="aggregation"):
        truth_ratio([PARA[0]], [2], [PERT[0]], [PERT[1]], aggregation="max")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="perturbed answer"):
        truth_ratio_value(*PARA, [], [])
