"""Runs that differ only by seed, summarised: mean, spread and worst case of each headline number.

One unlearning run of the demo is one draw of its batches; a design choice or a method is judged
on the spread over seeds, and a target such as "prefilling success <= 10% at every k" on its worst
seed. The worst case is the lowest value of a higher-is-better column and the highest of a
lower-is-better one. A difference between a setting and a baseline is judged per seed and over the
seeds, with paired-bootstrap intervals (:func:`paired_seed_table`).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from harmonia.evaluation.paired import PairedDifference, paired_objectives, paired_objectives_over_seeds
from harmonia.evaluation.results import EvalResults
from harmonia.reports.headline import Column, format_value, headline_columns
from harmonia.reports.tables import markdown_escape


@dataclass(frozen=True)
class SeedStats:
    """One column over seeds: ``n`` runs had a value; ``sd`` is the sample standard deviation
    (None with fewer than two values); ``worst`` follows the column's direction."""

    n: int
    mean: float
    sd: float | None
    worst: float

    def cell(self) -> str:
        """``0.818 ± 0.015 (0.804)``: mean ± sd (worst seed); one value shows as itself."""
        if self.n == 1:
            return format_value(self.mean)
        spread = format_value(self.sd) if self.sd is not None else "–"
        return f"{format_value(self.mean)} ± {spread} ({format_value(self.worst)})"


def seed_stats(column: Column, runs: Sequence[EvalResults]) -> SeedStats | None:
    """The column's mean, sample sd and worst value over the runs that have it (None if none do)."""
    values = [v for v in (column.read(r) for r in runs) if v is not None]
    if not values:
        return None
    worst = min(values) if column.better == "higher" else max(values)
    sd = statistics.stdev(values) if len(values) > 1 else None
    return SeedStats(len(values), statistics.fmean(values), sd, worst)


def seed_table(groups: Mapping[str, Sequence[EvalResults]]) -> str:
    """A markdown table, one row per group of seeds: each headline column as ``mean ± sd (worst)``."""
    columns = headline_columns([r for runs in groups.values() for r in runs])
    header = ["setting", "seeds", *(c.header for c in columns)]
    lines = ["| " + " | ".join(markdown_escape(h) for h in header) + " |",
             "|" + "|".join([":---", "---:", *("---:" for _ in columns)]) + "|"]
    for name, runs in groups.items():
        stats = [seed_stats(c, runs) for c in columns]
        cells = [markdown_escape(name), str(len(runs)), *(s.cell() if s else "–" for s in stats)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _interval(d: PairedDifference | None) -> str:
    return "–" if d is None else f"{d.mean:+.3f} ({d.low:+.3f} .. {d.high:+.3f})"


def paired_seed_table(groups: Mapping[str, Sequence[EvalResults]], settings: Sequence[str],
                      baselines: Sequence[str], seeds: Sequence[int], *, objective: str = "combined") -> str:
    """A markdown table, one row per setting and baseline: the setting's ``objective`` minus the
    baseline's, paired over the questions at each seed (:func:`paired_objectives`, as ``harmonia
    compare --paired``) and over all seeds (:func:`paired_objectives_over_seeds`, seeds resampled too),
    each with its 95% interval. Every group lists its runs in the order of ``seeds``."""
    header = ["difference", *(f"seed {s}" for s in seeds), "over the seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---", *("---:" for _ in header[1:])]) + "|"]
    for setting in settings:
        for baseline in baselines:
            pairs = list(zip(groups[baseline], groups[setting], strict=True))
            cells = [_interval(paired_objectives(a, b).get(objective)) for a, b in pairs]
            pooled = paired_objectives_over_seeds(pairs).get(objective)
            name = markdown_escape(f"{setting} - {baseline}")
            lines.append("| " + " | ".join([name, *cells, _interval(pooled)]) + " |")
    return "\n".join(lines) + "\n"


__all__ = ["SeedStats", "paired_seed_table", "seed_stats", "seed_table"]
