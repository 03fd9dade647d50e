"""Answer probabilities and TOFU's truth ratio, from summed log-probabilities and token counts.

Inputs are what a forward pass gives per answer: the sum of the answer tokens' log-probabilities
(natural log, prompt and padding tokens excluded) and the number of answer tokens.

- Length-normalised probability ``P(a|q)^(1/|a|) = exp(sum_logp / |a|)`` (TOFU "Probability";
  open-unlearning ``probability`` = ``exp(-avg_loss)``).
- Probability with options: ``P_true / (P_true + sum P_false)`` over length-normalised
  probabilities (TOFU's Real Authors / World Facts probability; open-unlearning
  ``probability_w_options``).
- Truth ratio (TOFU, arXiv 2401.06121): ``R = mean_i P(perturbed_i)^(1/|p_i|) /
  P(paraphrased)^(1/|p|)``. The paper writes an arithmetic mean over the perturbed answers; the
  TOFU code (``aggregate_stat_eval``) and open-unlearning (``truth_ratio``) average the
  perturbed answers' *mean losses*, i.e. take the geometric mean of their normalised
  probabilities. ``perturbed_mean="geometric"`` (default) reproduces the published numbers;
  ``"arithmetic"`` is the paper's formula. Two per-example aggregations, as in both codes:

  * ``"closer_to_1_better"`` (forget set): ``min(R, 1/R)``, 1 when the model can no longer
    tell the true answer from the perturbed ones;
  * ``"true_better"`` (retain / real authors / world facts): ``max(0, 1 - R)``, high when the
    true answer is clearly preferred.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from harmonia.errors import DataError
from harmonia.evaluation.metrics.base import (
    MetricResult,
    check_finite,
    check_same_length,
    check_unit_interval,
    mean_result,
    register_metric,
)

PerturbedMean = Literal["geometric", "arithmetic"]
TruthRatioAggregation = Literal["closer_to_1_better", "true_better"]

# Summed log-probabilities are <= 0; allow float noise from log_softmax before calling it an error.
_LOGPROB_TOLERANCE = 1e-6


def mean_token_logprob(
    logprob_sum: float, n_tokens: int, *, field: str = "logprob_sum", record: int | None = None
) -> float:
    """``logprob_sum / n_tokens``, the log of the length-normalised probability."""
    value = check_finite(logprob_sum, field=field, record=record)
    if value > _LOGPROB_TOLERANCE:
        raise DataError(
            None, f"a summed log-probability must be <= 0, got {value}", record=record, field=field
        )
    if n_tokens < 1:
        raise DataError(None, f"token count must be >= 1, got {n_tokens}", record=record, field="n_tokens")
    return min(value, 0.0) / n_tokens


def normalised_probability(logprob_sum: float, n_tokens: int) -> float:
    """Length-normalised probability ``exp(logprob_sum / n_tokens)`` in (0, 1]."""
    return math.exp(mean_token_logprob(logprob_sum, n_tokens))


def _check_count(n: int, *, record: int, field: str) -> None:
    if n < 0:
        raise DataError(None, f"token count must be >= 0, got {n}", record=record, field=field)


@register_metric("answer_probability")
def answer_probability(logprob_sums: Sequence[float], token_counts: Sequence[int]) -> MetricResult:
    """Mean length-normalised answer probability; an answer with 0 tokens is undefined (None)."""
    check_same_length(logprob_sums=logprob_sums, token_counts=token_counts)
    per_example: list[float | None] = []
    for i, (lp, n) in enumerate(zip(logprob_sums, token_counts, strict=True)):
        _check_count(n, record=i, field="token_counts")
        per_example.append(None if n == 0 else math.exp(mean_token_logprob(lp, n, record=i)))
    return mean_result("answer_probability", per_example)


@register_metric("probability_with_options")
def probability_with_options(
    true_probabilities: Sequence[float], false_probabilities: Sequence[Sequence[float]]
) -> MetricResult:
    """Mean of ``P_true / (P_true + sum P_false)`` over length-normalised probabilities."""
    check_same_length(true_probabilities=true_probabilities, false_probabilities=false_probabilities)
    per_example: list[float | None] = []
    for i, (p_true, p_false) in enumerate(zip(true_probabilities, false_probabilities, strict=True)):
        p_true = check_unit_interval(p_true, field="true_probabilities", record=i)
        total = p_true + math.fsum(
            check_unit_interval(p, field="false_probabilities", record=i) for p in p_false
        )
        per_example.append(None if total == 0.0 else p_true / total)
    return mean_result("probability_with_options", per_example)


def log_truth_ratio(
    paraphrased_logprob_sum: float,
    paraphrased_tokens: int,
    perturbed_logprob_sums: Sequence[float],
    perturbed_tokens: Sequence[int],
    *,
    perturbed_mean: PerturbedMean = "geometric",
    record: int | None = None,
) -> float:
    """``log R``: log mean normalised probability of the perturbed answers minus the paraphrased one's.

    Kept in log space so that extreme ratios neither overflow nor divide by zero downstream.
    """
    check_same_length(perturbed_logprob_sums=perturbed_logprob_sums, perturbed_tokens=perturbed_tokens)
    if len(perturbed_logprob_sums) == 0:
        raise DataError(
            None, "need at least one perturbed answer", record=record, field="perturbed_logprob_sums"
        )
    log_para = mean_token_logprob(
        paraphrased_logprob_sum, paraphrased_tokens, record=record, field="paraphrased_logprob_sum"
    )
    log_pert = np.array(
        [
            mean_token_logprob(lp, n, record=record, field="perturbed_logprob_sums")
            for lp, n in zip(perturbed_logprob_sums, perturbed_tokens, strict=True)
        ]
    )
    if perturbed_mean == "geometric":
        log_mean = float(log_pert.mean())
    elif perturbed_mean == "arithmetic":
        # log of the arithmetic mean, computed stably as logsumexp - log k.
        top = float(log_pert.max())
        log_mean = top + math.log(float(np.exp(log_pert - top).mean()))
    else:
        raise DataError(None, f"unknown perturbed_mean '{perturbed_mean}'", field="perturbed_mean")
    return log_mean - log_para


def truth_ratio_value(
    paraphrased_logprob_sum: float,
    paraphrased_tokens: int,
    perturbed_logprob_sums: Sequence[float],
    perturbed_tokens: Sequence[int],
    *,
    perturbed_mean: PerturbedMean = "geometric",
) -> float:
    """TOFU's ``R`` for one question (see :func:`log_truth_ratio`)."""
    return math.exp(
        log_truth_ratio(
            paraphrased_logprob_sum,
            paraphrased_tokens,
            perturbed_logprob_sums,
            perturbed_tokens,
            perturbed_mean=perturbed_mean,
        )
    )


@register_metric("truth_ratio")
def truth_ratio(
    paraphrased_logprob_sums: Sequence[float],
    paraphrased_token_counts: Sequence[int],
    perturbed_logprob_sums: Sequence[Sequence[float]],
    perturbed_token_counts: Sequence[Sequence[int]],
    *,
    aggregation: TruthRatioAggregation,
    perturbed_mean: PerturbedMean = "geometric",
) -> MetricResult:
    """Mean of ``min(R, 1/R)`` (forget) or ``max(0, 1 - R)`` (retain) over examples.

    Examples where an answer has 0 tokens are undefined (None). The raw ``log R`` values are
    kept in ``details["log_ratios"]`` (open-unlearning's forget quality compares the ratios'
    distributions between the unlearned and the retrained model).
    """
    if aggregation not in ("closer_to_1_better", "true_better"):
        raise DataError(None, f"unknown truth-ratio aggregation '{aggregation}'", field="aggregation")
    check_same_length(
        paraphrased_logprob_sums=paraphrased_logprob_sums,
        paraphrased_token_counts=paraphrased_token_counts,
        perturbed_logprob_sums=perturbed_logprob_sums,
        perturbed_token_counts=perturbed_token_counts,
    )
    log_ratios: list[float | None] = []
    rows = zip(
        paraphrased_logprob_sums,
        paraphrased_token_counts,
        perturbed_logprob_sums,
        perturbed_token_counts,
        strict=True,
    )
    for i, (para_lp, para_n, pert_lps, pert_ns) in enumerate(rows):
        _check_count(para_n, record=i, field="paraphrased_token_counts")
        for n in pert_ns:
            _check_count(n, record=i, field="perturbed_token_counts")
        if para_n == 0 or 0 in pert_ns:
            log_ratios.append(None)
            continue
        log_ratios.append(
            log_truth_ratio(para_lp, para_n, pert_lps, pert_ns, perturbed_mean=perturbed_mean, record=i)
        )
    if aggregation == "closer_to_1_better":
        # min(R, 1/R) = exp(-|log R|)
        per_example = [None if r is None else math.exp(-abs(r)) for r in log_ratios]
    else:
        # max(0, 1 - R); R >= 1 gives 0, and exp cannot overflow below log R = 0.
        per_example = [None if r is None else (0.0 if r >= 0 else 1.0 - math.exp(r)) for r in log_ratios]
    details = {"aggregation": aggregation, "perturbed_mean": perturbed_mean, "log_ratios": log_ratios}
    return mean_result("truth_ratio", per_example, details)
