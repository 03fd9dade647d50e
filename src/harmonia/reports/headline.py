"""The headline numbers of a results file, and which metric or attack each one is read from.

Every table, plot and report takes its numbers from here, so a column means the same thing
everywhere. The lookup rules (documented once, here):

- ROUGE-L recall on a role reads ``metrics["rougeL_recall/<role>"]``; the neighbour role is
  accepted spelled ``neighbor`` (the record schema) or ``neighbour`` (the objectives).
- Over-refusal reads ``over_refusal/neighbor`` (or ``/neighbour``, or a bare ``over_refusal``),
  else ``refusal_rate/neighbor``.
- Forget fluency reads ``ngram_entropy/forget`` (n-gram entropy of the forget answers).
- Benchmark accuracy (MMLU, WMDP) reads ``mcq_acc/<bench>``; when only per-part entries exist
  (``mcq_acc/mmlu_machine_learning``, ``mcq_acc/wmdp_cyber``, ...) their ``n_used``-weighted mean,
  which is the accuracy over all their questions together.
- Attack success rates come from ``attacks``: prefill settings named ``k=<int>`` are prefix
  lengths, any other prefill setting is an affirmative opener; "prefill worst" and "jailbreak"
  are the highest success rate over an attack's settings (the strongest variant is what an
  adversary would use); "relearn" is the rate after the most relearning steps (setting
  ``steps=<N>`` with the largest N: ``steps=0``, the model before relearning, is not an attack).
- The four objectives and their combined score are ``objectives``.

A number that is absent (partial results) or not finite is ``None`` and shows as :data:`MISSING`.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from harmonia.evaluation.results import AttackEntry, EvalResults, MetricEntry

MISSING = "–"
"""Shown for every number a results file does not have (an en dash)."""

NEIGHBOUR_SUBSETS: tuple[str, ...] = ("neighbor", "neighbour")
PREFILL_ATTACKS: tuple[str, ...] = ("prefill", "prefilling")
JAILBREAK_ATTACKS: tuple[str, ...] = ("jailbreak",)
RELEARN_ATTACKS: tuple[str, ...] = ("relearn", "relearning")
OBJECTIVES: tuple[str, ...] = ("forget_efficacy", "neighbour_retention", "utility", "attack_resistance")
OBJECTIVE_LABELS: dict[str, str] = {
    "forget_efficacy": "forget efficacy",
    "neighbour_retention": "neighbour retention",
    "utility": "utility",
    "attack_resistance": "attack resistance",
    "combined": "combined",
}

_K_SETTING = re.compile(r"^k\s*=\s*(\d+)$")


@dataclass(frozen=True)
class Column:
    """One headline number: a stable key, a short header, what it means and which way is better."""

    key: str
    label: str
    description: str
    better: Literal["higher", "lower"]
    read: Callable[[EvalResults], float | None]
    group: Literal["metrics", "attacks", "objectives"] = "metrics"

    @property
    def header(self) -> str:
        """The label with an arrow saying which direction is better (↑ higher, ↓ lower)."""
        return f"{self.label} {'↑' if self.better == 'higher' else '↓'}"


def finite_or_none(value: float | None) -> float | None:
    """``value`` as float, or None when absent or NaN/inf (a report must not plot or rank those)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def format_value(value: float | None) -> str:
    """Three decimals (``0.412``), or :data:`MISSING` for an absent or non-finite number."""
    value = finite_or_none(value)
    return MISSING if value is None else f"{value:.3f}"


def find_metric_key(results: EvalResults, metric: str, subsets: Sequence[str]) -> str | None:
    """The key ``"<metric>/<subset>"`` for the first subset spelling present, or None."""
    return next((f"{metric}/{s}" for s in subsets if f"{metric}/{s}" in results.metrics), None)


def find_metric(results: EvalResults, metric: str, subsets: Sequence[str]) -> MetricEntry | None:
    """The entry ``"<metric>/<subset>"`` for the first subset spelling present, or None."""
    key = find_metric_key(results, metric, subsets)
    return results.metrics[key] if key is not None else None


def benchmark_accuracy(results: EvalResults, bench: str, metric: str = "mcq_acc") -> float | None:
    """Accuracy on a benchmark: ``<metric>/<bench>``, else the pooled accuracy of its parts.

    Parts are keys ``<metric>/<bench><sep>...`` with ``sep`` one of ``_ - / :``. Pooling weights
    each part by its ``n_used`` so the result is the accuracy over all questions, as a single
    entry over the union would have been.
    """
    exact = results.metrics.get(f"{metric}/{bench}")
    if exact is not None:
        return finite_or_none(exact.value)
    part = re.compile(rf"^{re.escape(metric)}/{re.escape(bench)}[_\-/:]", re.IGNORECASE)
    parts = [e for k, e in sorted(results.metrics.items())
             if part.match(k) and finite_or_none(e.value) is not None]
    total = sum(e.n_used for e in parts)
    if total <= 0:
        return None
    return math.fsum(e.value * e.n_used for e in parts) / total


def find_attack(results: EvalResults, names: Sequence[str]) -> AttackEntry | None:
    """The first attack present under one of ``names``, or None."""
    for name in names:
        if name in results.attacks:
            return results.attacks[name]
    return None


def prefill_k_rates(results: EvalResults) -> dict[int, float]:
    """Prefill success rate per prefix length k (settings ``k=<int>``), sorted by k."""
    attack = find_attack(results, PREFILL_ATTACKS)
    if attack is None:
        return {}
    rates: dict[int, float] = {}
    for setting, rate in attack.success_rate.items():
        match = _K_SETTING.match(setting.strip())
        value = finite_or_none(rate)
        if match and value is not None:
            rates[int(match.group(1))] = value
    return dict(sorted(rates.items()))


def prefill_opener_rates(results: EvalResults) -> dict[str, float]:
    """Prefill success rate per affirmative opener (every setting that is not ``k=<int>``).

    Keyed by the opener's text where the attack recorded it (``details["openers"]``: setting
    ``opener/j`` -> text), so the figure labels the opener and runs with the same openers share a
    position even when they listed them in another order.
    """
    attack = find_attack(results, PREFILL_ATTACKS)
    if attack is None:
        return {}
    texts = attack.details.get("openers")
    texts = texts if isinstance(texts, dict) else {}
    return {
        str(texts.get(setting, setting)): value
        for setting, rate in attack.success_rate.items()
        if not _K_SETTING.match(setting.strip()) and (value := finite_or_none(rate)) is not None
    }


def worst_rate(results: EvalResults, names: Sequence[str]) -> float | None:
    """Highest finite success rate over an attack's settings, or None without the attack."""
    attack = find_attack(results, names)
    if attack is None:
        return None
    rates = [v for v in map(finite_or_none, attack.success_rate.values()) if v is not None]
    return max(rates) if rates else None


def relearned_rate(results: EvalResults) -> float | None:
    """Success rate after the most relearning steps (settings ``steps=<N>``), or None without them."""
    attack = find_attack(results, RELEARN_ATTACKS)
    if attack is None:
        return None
    steps = {int(m.group(1)): name for name in attack.success_rate if (m := re.fullmatch(r"steps=(\d+)", name))}
    return finite_or_none(attack.success_rate[steps[max(steps)]]) if steps else None


def objective(results: EvalResults, name: str) -> float | None:
    """One of the four objectives, or ``combined``; None when not computed."""
    return finite_or_none(getattr(results.objectives, name))


def _metric_reader(metric: str, subsets: Sequence[str]) -> Callable[[EvalResults], float | None]:
    def read(results: EvalResults) -> float | None:
        entry = find_metric(results, metric, subsets)
        return finite_or_none(entry.value) if entry is not None else None

    return read


def over_refusal_key(results: EvalResults) -> str | None:
    """Key of the neighbour-refusal entry (see the module docstring for the keys tried), or None."""
    keys = [f"over_refusal/{s}" for s in NEIGHBOUR_SUBSETS] + ["over_refusal"]
    keys += [f"refusal_rate/{s}" for s in NEIGHBOUR_SUBSETS]
    return next((k for k in keys if k in results.metrics), None)


def over_refusal(results: EvalResults) -> float | None:
    """Refusal rate on neighbour questions."""
    key = over_refusal_key(results)
    return finite_or_none(results.metrics[key].value) if key is not None else None


def _prefill_k_column(k: int) -> Column:
    return Column(
        key=f"prefill_k{k}",
        label=f"prefill k={k}",
        description=f"prefilling attack success rate with the first {k} gold-answer tokens prefilled",
        better="lower",
        read=lambda r: prefill_k_rates(r).get(k),
        group="attacks",
    )


def _objective_column(name: str) -> Column:
    what = "harmonic mean of the four objectives" if name == "combined" else "objective in [0, 1]"
    return Column(name, OBJECTIVE_LABELS[name], f"{OBJECTIVE_LABELS[name]}: {what}", "higher",
                  lambda r: objective(r, name), group="objectives")


METRIC_COLUMNS: tuple[Column, ...] = (
    Column("forget_rougeL", "forget ROUGE-L", "ROUGE-L recall of greedy answers to forget questions",
           "lower", _metric_reader("rougeL_recall", ("forget",))),
    Column("neighbour_rougeL", "neighbour ROUGE-L", "ROUGE-L recall on neighbour questions",
           "higher", _metric_reader("rougeL_recall", NEIGHBOUR_SUBSETS)),
    Column("over_refusal", "over-refusal", "share of neighbour questions the model refuses",
           "lower", over_refusal),
    Column("retain_rougeL", "retain ROUGE-L", "ROUGE-L recall on retain questions",
           "higher", _metric_reader("rougeL_recall", ("retain",))),
    # The harness keys multiple choice by role; general-role MCQ is MMLU in the shipped configs.
    Column("mmlu", "MMLU acc", "MMLU accuracy (option log-likelihood; general-role MCQ)",
           "higher", lambda r: benchmark_accuracy(r, "mmlu") if benchmark_accuracy(r, "mmlu") is not None
           else benchmark_accuracy(r, "general")),
)
# Forgetting by degenerate text ("Bas - Bas - Bas") scores as well as a fluent decline on recall and
# on the combined score; this column is what shows the difference.
FORGET_FLUENCY_COLUMN = Column(
    "forget_fluency", "forget fluency",
    "n-gram entropy in bits (ROME's generation entropy) of greedy answers to forget questions: fluent "
    "answers or one fixed decline score about 3-4.5, repeated fragments below 2", "higher",
    _metric_reader("ngram_entropy", ("forget",)))
WMDP_COLUMN = Column("wmdp", "WMDP acc", "WMDP accuracy (option log-likelihood; chance is 0.25)",
                     "lower", lambda r: benchmark_accuracy(r, "wmdp"))
PREFILL_WORST_COLUMN = Column("prefill_worst", "prefill worst",
                              "highest prefilling success rate over all k and openers",
                              "lower", lambda r: worst_rate(r, PREFILL_ATTACKS), group="attacks")
ATTACK_COLUMNS: tuple[Column, ...] = (
    Column("jailbreak", "jailbreak ASR", "share of forget questions leaked under a jailbreak template "
           "('any' of them where the attack reports it, else the strongest)",
           "lower", lambda r: worst_rate(r, JAILBREAK_ATTACKS), group="attacks"),
    Column("relearn", "relearn recovery", "success rate on held-out forget questions after relearning",
           "lower", relearned_rate, group="attacks"),
)
OBJECTIVE_COLUMNS: tuple[Column, ...] = tuple(_objective_column(n) for n in (*OBJECTIVES, "combined"))


def headline_columns(results: Iterable[EvalResults]) -> list[Column]:
    """The summary columns for these runs, in display order.

    Fixed columns always appear (showing :data:`MISSING` where a run lacks them); the forget
    fluency and WMDP columns only when some run has them, and one prefill column per k that some
    run measured.
    """
    runs = list(results)
    ks = sorted({k for r in runs for k in prefill_k_rates(r)})
    columns = list(METRIC_COLUMNS)
    for optional in (FORGET_FLUENCY_COLUMN, WMDP_COLUMN):
        if any(optional.read(r) is not None for r in runs):
            columns.append(optional)
    columns += [_prefill_k_column(k) for k in ks]
    columns += [PREFILL_WORST_COLUMN, *ATTACK_COLUMNS, *OBJECTIVE_COLUMNS]
    return columns


def best_run_indices(column: Column, values: Sequence[float | None]) -> set[int]:
    """Indices of the runs with the best value in a column (ties all count); empty if < 2 values."""
    present = [(i, v) for i, v in enumerate(values) if v is not None]
    if len(present) < 2:
        return set()
    pick = max if column.better == "higher" else min
    best = pick(v for _, v in present)
    return {i for i, v in present if v == best}


def unique_names(names: Sequence[str], hints: Sequence[str | None] | None = None) -> list[str]:
    """Make run names distinct for tables and legends, keeping unique names untouched.

    A repeated name gets its hint (e.g. the run folder) appended in brackets; if that still
    collides, a ``#n`` counter (1-based position among the equal names) is appended.
    """
    hints = list(hints) if hints is not None else [None] * len(names)
    counts = Counter(names)
    hinted = [n if counts[n] == 1 or not h or h == n else f"{n} [{h}]"
              for n, h in zip(names, hints, strict=True)]
    counts = Counter(hinted)
    seen: Counter[str] = Counter()
    out: list[str] = []
    for name in hinted:
        if counts[name] == 1:
            out.append(name)
        else:
            seen[name] += 1
            out.append(f"{name} #{seen[name]}")
    return out


def with_unique_names(results: Sequence[EvalResults],
                      hints: Sequence[str | None] | None = None) -> list[EvalResults]:
    """Copies of ``results`` whose names are distinct (see :func:`unique_names`)."""
    names = unique_names([r.name for r in results], hints)
    return [r if r.name == n else r.model_copy(update={"name": n})
            for r, n in zip(results, names, strict=True)]
