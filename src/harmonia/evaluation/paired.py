"""How sure is a difference between two runs? A paired bootstrap over the examples they share.

The demo's held-out neighbour set has 20 questions, so one answer moves the mean recall by up to
5 points: a difference between two runs is only worth reporting with its interval. Both runs
are scored on the same examples, so the per-example differences are resampled (paired), which
removes the between-question variance that an unpaired comparison would keep.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harmonia.errors import HarmoniaError
from harmonia.evaluation.results import MetricEntry


@dataclass(frozen=True)
class PairedDifference:
    """mean(b - a) over shared examples, with a percentile-bootstrap interval."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float

    def __str__(self) -> str:
        pct = round(100 * self.confidence)
        return f"{self.mean:+.3f} ({pct}% CI {self.low:+.3f} .. {self.high:+.3f}, n = {self.n})"


def paired_difference(a: MetricEntry, b: MetricEntry, *, confidence: float = 0.95, resamples: int = 10_000,
                      seed: int = 0) -> PairedDifference:
    """Difference ``b - a`` of one metric on the examples both runs scored (by example id).

    Examples either run left unscored (``None``) are dropped from both sides. Deterministic under
    ``seed``.
    """
    if not a.example_ids or not b.example_ids:
        raise HarmoniaError("a paired difference needs per-example values with example ids in both runs")
    if not 0 < confidence < 1:
        raise HarmoniaError(f"confidence must be in (0, 1), got {confidence}")
    b_by_id = dict(zip(b.example_ids, b.per_example, strict=True))
    pairs = [(x, b_by_id[i]) for i, x in zip(a.example_ids, a.per_example, strict=True)
             if i in b_by_id and x is not None and b_by_id[i] is not None]
    if not pairs:
        raise HarmoniaError("the two runs share no scored example")
    diffs = np.array([y - x for x, y in pairs], dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, len(diffs), size=(resamples, len(diffs)))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return PairedDifference(float(diffs.mean()), float(low), float(high), len(diffs), confidence)
