"""How sure is a difference between two runs? A paired bootstrap over the examples they share.

The demo's held-out neighbour set has 20 questions, so one answer moves the mean recall by up to
5 points: a difference between two runs is only worth reporting with its interval. Both runs
are scored on the same examples, so the per-example differences are resampled (paired), which
removes the between-question variance that an unpaired comparison would keep. Over unlearning
seeds, the seeds are resampled as well (:func:`paired_objectives_over_seeds`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from harmonia.errors import HarmoniaError
from harmonia.evaluation.config import ObjectiveSettings
from harmonia.evaluation.objectives import compute_objectives
from harmonia.evaluation.results import AttackEntry, EvalResults, MetricEntry, Objectives


@dataclass(frozen=True)
class PairedDifference:
    """mean(b - a) over shared examples, with a percentile-bootstrap interval."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float
    pairs: int = 1
    """Pairs of runs averaged (one per seed, :func:`paired_objectives_over_seeds`)."""

    def __str__(self) -> str:
        pct = round(100 * self.confidence)
        over = f", {self.pairs} seeds" if self.pairs > 1 else ""
        return f"{self.mean:+.3f} ({pct}% CI {self.low:+.3f} .. {self.high:+.3f}, n = {self.n}{over})"


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


OBJECTIVE_KEYS: tuple[str, ...] = ("forget_efficacy", "neighbour_retention", "utility", "attack_resistance", "combined")


def _target_of(run: EvalResults) -> tuple[ObjectiveSettings, EvalResults, float]:
    """The objective settings, a stand-in for the target (the values the objectives divided by, as
    each component recorded them) and the multiple-choice chance of ``run``'s evaluation."""
    config = run.meta.get("config") or {}
    explain = run.meta.get("objectives") or {}
    if "objectives" not in config or not explain:
        raise HarmoniaError(f"the results of '{run.name}' do not record how their objectives were computed")
    metrics = {part["metric"]: MetricEntry(value=part["target"], n_used=0) for part in explain.values()
               if isinstance(part, dict) and part.get("relative") and part.get("target") is not None}
    target = EvalResults(name=str(run.meta.get("target")), model="", metrics=metrics)
    # the target's values are those recorded above, so its results file is not needed (nor checked)
    settings = ObjectiveSettings(**{**config["objectives"], "target_results": None})
    return settings, target, float(config.get("mcq", {}).get("chance", 0.25))


def _bootstrapped_metrics(run: EvalResults) -> set[str]:
    """The metrics ``run``'s objectives were computed from (each must have per-example values)."""
    explain = run.meta.get("objectives") or {}
    used = {part["metric"] for part in explain.values() if isinstance(part, dict) and "metric" in part}
    if "over_refusal" in (explain.get("neighbour_retention") or {}):
        used.add("over_refusal/neighbor")
    return used


def _resample_weights(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``[resamples, n]`` counts: how often each example is drawn in each bootstrap resample."""
    draws = rng.integers(0, n, size=(resamples, n))
    return np.stack([np.bincount(row, minlength=n) for row in draws]).astype(np.float64)


class _Pools:
    """One set of bootstrap weights per set of example ids: metrics and attacks scored on the same
    questions (forget recall and the prefilled forget questions) resample the same questions."""

    def __init__(self, resamples: int, seed: int) -> None:
        self.resamples, self.rng = resamples, np.random.default_rng(seed)
        self.weights: dict[tuple[str, ...], np.ndarray] = {}

    def means(self, ids: Sequence[str], a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """Per resample, the weighted means of ``a`` and ``b`` (each ``[resamples]``)."""
        key = tuple(ids)
        if key not in self.weights:
            self.weights[key] = _resample_weights(len(key), self.resamples, self.rng)
        w = self.weights[key]
        total = w.sum(axis=1)
        return w @ np.asarray(a, dtype=np.float64) / total, w @ np.asarray(b, dtype=np.float64) / total


def _shared(ids_a: Sequence[str], values_a: Sequence[float | None], ids_b: Sequence[str],
            values_b: Sequence[float | None]) -> tuple[list[str], list[float], list[float]]:
    by_id = dict(zip(ids_b, values_b, strict=True))
    kept = [(i, x, by_id[i]) for i, x in zip(ids_a, values_a, strict=True)
            if i in by_id and x is not None and by_id[i] is not None]
    return [i for i, _, _ in kept], [x for _, x, _ in kept], [y for _, _, y in kept]  # type: ignore[misc]


def paired_objectives(a: EvalResults, b: EvalResults, *, confidence: float = 0.95, resamples: int = 2_000,
                      seed: int = 0) -> dict[str, PairedDifference]:
    """Differences ``b - a`` of the four objectives and the combined score, with a paired bootstrap.

    Each resample draws the questions of every metric and attack (by example id, the same draw for
    both runs, and for every metric scored on the same questions), recomputes both runs' metrics,
    attack success rates and objectives, and takes their difference. The target's scores (what the
    objectives divide by) are held fixed: both runs were scored against the same target. Both runs
    must have been evaluated against the same target with the same objective settings.
    """
    return paired_objectives_over_seeds([(a, b)], confidence=confidence, resamples=resamples, seed=seed)


def paired_objectives_over_seeds(pairs: Sequence[tuple[EvalResults, EvalResults]], *, confidence: float = 0.95,
                                 resamples: int = 2_000, seed: int = 0) -> dict[str, PairedDifference]:
    """Mean over ``pairs`` (one ``(a, b)`` per unlearning seed) of the objectives' ``b - a``, with a
    two-level bootstrap: each resample draws the seeds (with replacement) and the questions.

    One seed's interval (:func:`paired_objectives`) says how sure a difference is given that seed's
    training run; it does not say whether another seed would agree. Here a resample draws as many
    pairs as there are, with replacement, and the questions as :func:`paired_objectives` does (the
    same draw for every pair: all were evaluated on the same questions), and averages the pairs'
    differences. With one pair this is :func:`paired_objectives`. Every run must have been scored
    against the same target with the same settings.
    """
    if not 0 < confidence < 1:
        raise HarmoniaError(f"confidence must be in (0, 1), got {confidence}")
    if not pairs:
        raise HarmoniaError("no pairs of runs to compare")
    first = pairs[0][0]
    settings, target, chance = _target_of(first)
    for run in (r for pair in pairs for r in pair):
        other_settings, other_target, other_chance = _target_of(run)
        if (other_settings, other_target.metrics, other_chance) != (settings, target.metrics, chance):
            raise HarmoniaError(f"'{first.name}' and '{run.name}' were not scored against the same target "
                                "and settings")
    pools = _Pools(resamples, seed)
    # [pair, resample] differences per objective, NaN where either side has no value
    diffs = {key: np.full((len(pairs), resamples), np.nan) for key in OBJECTIVE_KEYS}
    for p, (a, b) in enumerate(pairs):
        for key, values in _resampled_differences(a, b, settings, target, chance, pools).items():
            diffs[key][p] = values
    # the seeds are drawn from a stream of their own, so one pair's questions are drawn as before
    picks = np.random.default_rng([seed, 1]).integers(0, len(pairs), size=(resamples, len(pairs))) \
        if len(pairs) > 1 else np.zeros((resamples, 1), dtype=np.int64)
    tail = (1 - confidence) / 2
    n_examples = len({i for ids in pools.weights for i in ids})
    out: dict[str, PairedDifference] = {}
    for key in OBJECTIVE_KEYS:
        points = [getattr(b.objectives, key) - getattr(a.objectives, key) for a, b in pairs
                  if getattr(a.objectives, key) is not None and getattr(b.objectives, key) is not None]
        if len(points) < len(pairs):
            continue
        drawn = np.take_along_axis(diffs[key].T, picks, axis=1)  # [resample, drawn pair]
        means = drawn.mean(axis=1)
        means = means[~np.isnan(means)]
        if means.size == 0:
            continue
        low, high = np.quantile(means, [tail, 1 - tail])
        out[key] = PairedDifference(float(np.mean(points)), float(low), float(high), n_examples, confidence,
                                    len(pairs))
    return out


def _resampled_differences(a: EvalResults, b: EvalResults, settings: ObjectiveSettings, target: EvalResults,
                           chance: float, pools: _Pools) -> dict[str, np.ndarray]:
    """Per objective, ``b - a`` in each of the pools' resamples of the questions (NaN where undefined)."""
    # Sorted, not set order: the pools draw from one seeded stream in the order they are first
    # used, so a hash-seeded order would give another interval in every process.
    metrics: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for key in sorted(_bootstrapped_metrics(a)):  # only what the objectives read is resampled
        ma, mb = a.metrics.get(key), b.metrics.get(key)
        ids, xa, xb = _shared(ma.example_ids, ma.per_example, mb.example_ids, mb.per_example) \
            if ma is not None and mb is not None else ([], [], [])
        if ids:
            metrics[key] = pools.means(ids, xa, xb)
    if missing := sorted(_bootstrapped_metrics(a) - metrics.keys()):
        raise HarmoniaError(f"cannot resample the objectives of '{a.name}' and '{b.name}': no shared "
                            f"per-example values of {', '.join(missing)}")
    rates: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    attack_a, attack_b = a.attacks.get(settings.attack), b.attacks.get(settings.attack)
    if attack_a is not None and attack_b is not None:
        for setting in sorted(attack_a.per_example.keys() & attack_b.per_example.keys()):
            ids, xa, xb = _shared(attack_a.example_ids, attack_a.per_example[setting],
                                  attack_b.example_ids, attack_b.per_example[setting])
            if ids:
                rates[setting] = pools.means(ids, xa, xb)

    def objectives(side: int, r: int) -> Objectives:
        entries = {k: MetricEntry(value=float(v[side][r]), n_used=0) for k, v in metrics.items()}
        attacks = {settings.attack: AttackEntry(success_rate={s: float(v[side][r]) for s, v in rates.items()})} \
            if rates else {}
        return compute_objectives(entries, attacks, settings=settings, target=target, mcq_chance=chance)[0]

    diffs = {key: np.full(pools.resamples, np.nan) for key in OBJECTIVE_KEYS}
    for r in range(pools.resamples):
        oa, ob = objectives(0, r), objectives(1, r)
        for key in OBJECTIVE_KEYS:
            va, vb = getattr(oa, key), getattr(ob, key)
            if va is not None and vb is not None:
                diffs[key][r] = vb - va
    return diffs
