"""Membership-inference scores, rank AUC and MUSE PrivLeak on hand-computed cases."""

import math
import zlib

import numpy as np
import pytest

from harmonia.errors import DataError
from harmonia.evaluation.metrics.mia import (
    MIN_SIGMA,
    loss_score,
    mia_auc,
    mia_loss,
    mia_min_k,
    mia_min_k_plus_plus,
    mia_zlib,
    min_k_plus_plus_score,
    min_k_score,
    privleak,
    roc_auc,
    vocab_logprob_moments,
    zlib_score,
)

TEN = np.array([-0.1, -0.5, -2.0, -0.3, -4.0, -0.2, -1.0, -3.0, -0.05, -0.7])


def test_loss_is_mean_nll():
    assert loss_score(TEN) == pytest.approx(11.85 / 10)


def test_min_k_on_ten_tokens():
    assert min_k_score(TEN, 0.3) == pytest.approx((4.0 + 3.0 + 2.0) / 3)
    assert min_k_score(TEN, 0.2) == pytest.approx(3.5)
    assert min_k_score(TEN, 0.05) == pytest.approx(4.0)  # floor(0.5) = 0 -> at least one token
    assert min_k_score(TEN, 1.0) == pytest.approx(loss_score(TEN))


def test_min_k_count_is_robust_to_float_error():
    # 0.29 * 100 = 28.999999999999996 in floating point; 29 tokens must be kept: -100..-72.
    lp = -np.arange(1.0, 101.0)
    assert min_k_score(lp, 0.29) == pytest.approx((100 + 72) / 2)


def test_min_k_rejects_bad_k_and_empty_input():
    with pytest.raises(DataError, match="k must be in"):
        min_k_score(TEN, 0.0)
    with pytest.raises(DataError, match="non-empty"):
        min_k_score([], 0.2)


def test_zlib_divides_loss_by_compressed_bytes():
    text = "The cat sat on the mat."
    assert zlib_score(TEN, text) == pytest.approx(1.185 / len(zlib.compress(text.encode("utf-8"))))
    # Same loss: a repetitive text compresses better, so it gets the higher (less member-like) score.
    assert zlib_score(TEN, "ab" * 50) > zlib_score(TEN, "The quick brown fox jumps over the lazy dog twice.")


def test_min_k_plus_plus_by_hand():
    lp = [-1.0, -2.0, -3.0, -4.0]
    mu = [-1.5, -1.5, -2.0, -2.0]
    sigma = [0.5, 1.0, 2.0, 0.5]
    # z = [1, -0.5, -0.5, -4]; lowest half: -4, -0.5 -> score 2.25
    assert min_k_plus_plus_score(lp, mu, sigma, k=0.5) == pytest.approx(2.25)
    # zero sigma is floored
    assert min_k_plus_plus_score([-1.0], [-0.5], [0.0], k=1.0) == pytest.approx(0.5 / MIN_SIGMA)
    with pytest.raises(DataError, match="must match"):
        min_k_plus_plus_score(lp, mu[:2], sigma, k=0.5)


def test_vocab_moments_by_hand():
    # p = (1/2, 1/4, 1/4): log p is -ln2 or -2ln2 with probability 1/2 each.
    mu, sigma = vocab_logprob_moments(np.log([[0.5, 0.25, 0.25], [0.5, 0.5, 1e-300]]))
    assert mu[0] == pytest.approx(-1.5 * math.log(2))
    assert sigma[0] == pytest.approx(0.5 * math.log(2))
    assert sigma[1] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    ("pos", "neg", "expected"),
    [
        ([3.0, 4.0], [1.0, 2.0], 1.0),  # perfect separation
        ([1.0, 2.0], [3.0, 4.0], 0.0),  # reversed
        ([1.0, 1.0], [1.0, 1.0], 0.5),  # all ties
        ([0.9, 0.4], [0.5, 0.1], 0.75),  # 3 of 4 pairs ordered
        ([0.5], [0.5, 0.1], 0.75),  # one tie (1/2) and one win
    ],
)
def test_roc_auc_known_cases(pos, neg, expected):
    assert roc_auc(pos, neg) == pytest.approx(expected)


def test_roc_auc_needs_both_classes():
    with pytest.raises(DataError, match="both classes"):
        roc_auc([], [1.0])


def test_mia_auc_is_one_when_forget_texts_have_lower_loss():
    assert mia_auc([0.5, 0.7], [2.0, 3.0]) == 1.0
    assert mia_auc([2.0, 3.0], [0.5, 0.7]) == 0.0


def test_privleak_matches_muse_convention():
    assert privleak(1.0, 0.5) == pytest.approx(-100.0)  # fully exposed: under-unlearning
    assert privleak(0.5, 0.5) == pytest.approx(0.0)
    assert privleak(0.25, 0.5) == pytest.approx(50.0)  # over-unlearning
    assert privleak(0.6, 0.4) == pytest.approx((0.4 - 0.6) / 0.6 * 100)
    with pytest.raises(DataError, match="undefined"):
        privleak(0.5, 1.0)


def test_registered_attacks_report_auc_and_privleak():
    forget = [np.array([-0.1, -0.2]), np.array([-0.3, -0.1])]
    holdout = [np.array([-2.0, -3.0]), np.array([-1.0, -4.0])]
    r = mia_loss(forget, holdout, reference_auc=0.5)
    assert r.value == 1.0
    assert r.per_example == [pytest.approx(0.15), pytest.approx(0.2), pytest.approx(2.5), pytest.approx(2.5)]
    assert r.details["privleak"] == pytest.approx(-100.0)
    assert mia_min_k(forget, holdout, k=0.5).value == 1.0
    assert mia_zlib(forget, ["a b", "c d"], holdout, ["e f", "g h"]).value == 1.0
    sig = [np.ones(2), np.ones(2)]
    mu = [np.zeros(2), np.zeros(2)]
    r_pp = mia_min_k_plus_plus(
        list(zip(forget, mu, sig, strict=True)), list(zip(holdout, mu, sig, strict=True))
    )
    assert r_pp.value == 1.0
    assert "privleak" not in r_pp.details
