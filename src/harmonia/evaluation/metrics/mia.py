"""Membership-inference scores from per-token log-probabilities, their AUC, and MUSE's PrivLeak.

Each score is a *statistic where lower means "looks like training data"*, as in MUSE and
open-unlearning (both feed these statistics to the ROC with forget = 0, holdout = 1):

- LOSS: mean negative log-likelihood of the text's tokens.
- zlib (Carlini et al. 2021): LOSS divided by the length in bytes of the zlib-compressed
  UTF-8 text (``len(zlib.compress(text.encode("utf-8")))``, as both codes do), so that texts
  that are merely easy (repetitive) do not look memorised.
- Min-K% (Shi et al. 2024): minus the mean of the lowest k% token log-probabilities.
- Min-K%++ (Zhang et al. 2024): each token's log-probability standardised by the mean ``mu``
  and standard deviation ``sigma`` of log p under the model's own next-token distribution at
  that position, then Min-K% over those z-scores. ``sigma`` is floored at ``MIN_SIGMA`` (=
  sqrt(1e-6), open-unlearning's variance clamp) for near-deterministic positions.

The number of tokens kept by Min-K% is ``max(1, floor(n * k))``, as in open-unlearning (MUSE has
no lower bound of 1, which makes a short text's score NaN). A tiny epsilon guards the floor
against float error (0.29 * 100 = 28.999...).

``mia_auc`` is the probability that a random holdout text has a *higher* statistic than a
random forget text (ties count 1/2): 1.0 when the model clearly remembers the forget set, 0.5
when it cannot tell them apart. This is open-unlearning's convention. MUSE's own code labels the
sets the other way round and reports ``1 - mia_auc``; ``privleak`` converts, so its numbers are
MUSE's: ``PrivLeak = (AUC_MUSE(unlearned) - AUC_MUSE(retrain)) / AUC_MUSE(retrain) * 100`` with
``AUC_MUSE = 1 - mia_auc``. Near 0 is good; strongly negative means under-unlearning (the
original model scores about -100), strongly positive over-unlearning.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from harmonia.errors import DataError
from harmonia.evaluation.metrics.base import MetricResult, check_same_length, register_metric

MIN_SIGMA = 1e-3
# MUSE's PrivLeak is reported for Min-40% (eval key 'forget_holdout_Min-40%').
DEFAULT_MIN_K = 0.4


def _logprobs(token_logprobs: ArrayLike, field: str = "token_logprobs") -> NDArray[np.float64]:
    arr = np.asarray(token_logprobs, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise DataError(
            None, f"need a non-empty 1-D array of log-probabilities, got shape {arr.shape}", field=field
        )
    if not np.all(np.isfinite(arr)):
        raise DataError(None, "log-probabilities must be finite", field=field)
    return arr


def _k_count(n: int, k: float) -> int:
    if not 0.0 < k <= 1.0:
        raise DataError(None, f"k must be in (0, 1], got {k}", field="k")
    return max(1, math.floor(n * k + 1e-9))


def loss_score(token_logprobs: ArrayLike) -> float:
    """Mean negative log-likelihood per token."""
    return float(-_logprobs(token_logprobs).mean())


def zlib_score(token_logprobs: ArrayLike, text: str) -> float:
    """LOSS divided by the zlib-compressed size of ``text`` in bytes."""
    return loss_score(token_logprobs) / len(zlib.compress(text.encode("utf-8")))


def min_k_score(token_logprobs: ArrayLike, k: float = DEFAULT_MIN_K) -> float:
    """Minus the mean of the ``max(1, floor(n*k))`` lowest token log-probabilities."""
    arr = _logprobs(token_logprobs)
    return float(-np.sort(arr)[: _k_count(arr.size, k)].mean())


def vocab_logprob_moments(vocab_logprobs: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per position, mean and std of log p under p itself, from a (positions, vocab) log-prob array."""
    lp = np.asarray(vocab_logprobs, dtype=np.float64)
    if lp.ndim != 2:
        raise DataError(
            None, f"need a (positions, vocab) array, got shape {lp.shape}", field="vocab_logprobs"
        )
    p = np.exp(lp)
    mu = (p * lp).sum(axis=-1)
    var = (p * lp**2).sum(axis=-1) - mu**2
    return mu, np.sqrt(np.clip(var, 0.0, None))


def min_k_plus_plus_score(
    token_logprobs: ArrayLike, mu: ArrayLike, sigma: ArrayLike, k: float = DEFAULT_MIN_K
) -> float:
    """Min-K% over the z-scores ``(log p - mu) / max(sigma, MIN_SIGMA)``."""
    lp = _logprobs(token_logprobs)
    mu_arr = np.asarray(mu, dtype=np.float64)
    sigma_arr = np.asarray(sigma, dtype=np.float64)
    if mu_arr.shape != lp.shape or sigma_arr.shape != lp.shape:
        raise DataError(
            None,
            f"mu {mu_arr.shape} and sigma {sigma_arr.shape} must match the tokens {lp.shape}",
            field="mu",
        )
    if not (np.all(np.isfinite(mu_arr)) and np.all(np.isfinite(sigma_arr))) or np.any(sigma_arr < 0):
        raise DataError(None, "mu must be finite and sigma finite and >= 0", field="sigma")
    z = (lp - mu_arr) / np.maximum(sigma_arr, MIN_SIGMA)
    return float(-np.sort(z)[: _k_count(z.size, k)].mean())


def roc_auc(positive_scores: ArrayLike, negative_scores: ArrayLike) -> float:
    """P(positive score > negative score) + P(tie) / 2: the ROC AUC, computed by ranks.

    Equal to the Mann-Whitney U statistic over ``n_pos * n_neg`` (mid-ranks for ties): for each
    positive, count the negatives below it (and half those equal) in the sorted negatives.
    """
    pos = np.asarray(positive_scores, dtype=np.float64)
    neg = np.sort(np.asarray(negative_scores, dtype=np.float64))
    if pos.size == 0 or neg.size == 0:
        raise DataError(
            None,
            f"AUC needs both classes, got {pos.size} positive and {neg.size} negative scores",
            field="scores",
        )
    if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(neg))):
        raise DataError(None, "AUC scores must be finite", field="scores")
    below = np.searchsorted(neg, pos, side="left")
    below_or_equal = np.searchsorted(neg, pos, side="right")
    wins = below.sum() + 0.5 * (below_or_equal - below).sum()
    return float(wins / (pos.size * neg.size))


def mia_auc(forget_scores: ArrayLike, holdout_scores: ArrayLike) -> float:
    """AUC that forget (member) statistics are lower than holdout (non-member) ones; 1 = fully exposed."""
    return roc_auc(holdout_scores, forget_scores)


def privleak(auc_unlearned: float, auc_retrain: float) -> float:
    """MUSE PrivLeak in percent from two :func:`mia_auc` values (see the module docstring)."""
    for name, value in (("auc_unlearned", auc_unlearned), ("auc_retrain", auc_retrain)):
        if not 0.0 <= value <= 1.0:
            raise DataError(None, f"an AUC must lie in [0, 1], got {value}", field=name)
    muse_unlearned, muse_retrain = 1.0 - auc_unlearned, 1.0 - auc_retrain
    if muse_retrain == 0.0:
        raise DataError(None, "PrivLeak is undefined when the retrain model's AUC is 1", field="auc_retrain")
    return (muse_unlearned - muse_retrain) / muse_retrain * 100.0


def _auc_result(
    name: str, forget: list[float], holdout: list[float], reference_auc: float | None, details: dict
) -> MetricResult:
    auc = mia_auc(forget, holdout)
    out = {
        **details,
        "n_forget": len(forget),
        "n_holdout": len(holdout),
        "forget_mean": float(np.mean(forget)),
        "holdout_mean": float(np.mean(holdout)),
    }
    if reference_auc is not None:
        out["reference_auc"] = reference_auc
        out["privleak"] = privleak(auc, reference_auc)
    return MetricResult(name, auc, [*forget, *holdout], len(forget) + len(holdout), out)


@register_metric("mia_loss")
def mia_loss(
    forget_logprobs: Sequence[ArrayLike],
    holdout_logprobs: Sequence[ArrayLike],
    *,
    reference_auc: float | None = None,
) -> MetricResult:
    """AUC of the LOSS attack. ``per_example`` = forget scores then holdout scores.

    With ``reference_auc`` (the retrained model's AUC) ``details["privleak"]`` is filled.
    """
    return _auc_result(
        "mia_loss",
        [loss_score(x) for x in forget_logprobs],
        [loss_score(x) for x in holdout_logprobs],
        reference_auc,
        {},
    )


@register_metric("mia_zlib")
def mia_zlib(
    forget_logprobs: Sequence[ArrayLike],
    forget_texts: Sequence[str],
    holdout_logprobs: Sequence[ArrayLike],
    holdout_texts: Sequence[str],
    *,
    reference_auc: float | None = None,
) -> MetricResult:
    """AUC of the zlib attack; texts are the scored strings themselves."""
    check_same_length(forget_logprobs=forget_logprobs, forget_texts=forget_texts)
    check_same_length(holdout_logprobs=holdout_logprobs, holdout_texts=holdout_texts)
    forget = [zlib_score(x, t) for x, t in zip(forget_logprobs, forget_texts, strict=True)]
    holdout = [zlib_score(x, t) for x, t in zip(holdout_logprobs, holdout_texts, strict=True)]
    return _auc_result("mia_zlib", forget, holdout, reference_auc, {})


@register_metric("mia_min_k")
def mia_min_k(
    forget_logprobs: Sequence[ArrayLike],
    holdout_logprobs: Sequence[ArrayLike],
    *,
    k: float = DEFAULT_MIN_K,
    reference_auc: float | None = None,
) -> MetricResult:
    """AUC of the Min-K% attack."""
    return _auc_result(
        "mia_min_k",
        [min_k_score(x, k) for x in forget_logprobs],
        [min_k_score(x, k) for x in holdout_logprobs],
        reference_auc,
        {"k": k},
    )


@register_metric("mia_min_k_plus_plus")
def mia_min_k_plus_plus(
    forget: Sequence[tuple[ArrayLike, ArrayLike, ArrayLike]],
    holdout: Sequence[tuple[ArrayLike, ArrayLike, ArrayLike]],
    *,
    k: float = DEFAULT_MIN_K,
    reference_auc: float | None = None,
) -> MetricResult:
    """AUC of the Min-K%++ attack; each text is given as ``(token_logprobs, mu, sigma)``."""
    return _auc_result(
        "mia_min_k_plus_plus",
        [min_k_plus_plus_score(*x, k=k) for x in forget],
        [min_k_plus_plus_score(*x, k=k) for x in holdout],
        reference_auc,
        {"k": k},
    )
