"""``harmonia compare RUN...``: several runs side by side in one table and one set of figures."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure
from rich.table import Table

from harmonia.errors import DataError
from harmonia.evaluation.paired import OBJECTIVE_KEYS, PairedDifference, paired_difference, paired_objectives
from harmonia.evaluation.results import EvalResults
from harmonia.reports.headline import with_unique_names
from harmonia.reports.plots import report_figures
from harmonia.reports.tables import rich_table

RESULTS_FILE = "results.json"


def results_file(path: str | Path) -> Path:
    """The results file of a run: ``path`` itself, or ``path/results.json`` for a run folder."""
    path = Path(path)
    return path / RESULTS_FILE if path.is_dir() else path


def load_results(path: str | Path) -> EvalResults:
    """Read one results file; any problem (missing, unreadable, invalid) is a DataError naming it."""
    file = results_file(path)
    try:
        return EvalResults.load(file)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(file, f"cannot read results file: {exc}") from None


def _run_label(path: Path) -> str:
    """A short hint telling runs apart: the run folder's name."""
    file = results_file(path)
    return file.parent.name or str(file.parent)


def load_runs(paths: Sequence[str | Path]) -> list[EvalResults]:
    """Read every run's results; repeated names get their run folder appended (then ``#n``)."""
    if not paths:
        raise DataError(None, "no runs given to compare", field="paths")
    results = [load_results(p) for p in paths]
    return with_unique_names(results, [_run_label(Path(p)) for p in paths])


def compare_runs(paths: Sequence[str | Path]) -> tuple[Table, dict[str, Figure]]:
    """The comparison table (rich, for the terminal) and the report figures for these runs."""
    runs = load_runs(paths)
    return rich_table(runs, title=f"{len(runs)} runs"), report_figures(runs)


def paired_differences(runs: Sequence[EvalResults], metrics: Sequence[str]) -> list[str]:
    """One line per metric and run after the first: its difference from the first run, paired.

    A metric is a metric key (``rougeL_recall/neighbor``) or an objective (``combined``,
    ``forget_efficacy``, ...: :data:`~harmonia.evaluation.paired.OBJECTIVE_KEYS`), whose questions
    are resampled jointly (:func:`~harmonia.evaluation.paired.paired_objectives`).
    """
    if not metrics:
        return []
    first, lines = runs[0], []
    objectives: dict[str, dict[str, PairedDifference]] = {}  # one bootstrap per run gives every objective
    for key in metrics:
        for run in runs[1:]:
            if key in OBJECTIVE_KEYS:
                if run.name not in objectives:
                    objectives[run.name] = paired_objectives(first, run)
                if key not in objectives[run.name]:
                    raise DataError(None, f"objective {key!r} is missing from the results of {first.name} "
                                    f"or {run.name}", field="paired")
                lines.append(f"{key}: {run.name} - {first.name} = {objectives[run.name][key]}")
                continue
            missing = [r.name for r in (first, run) if key not in r.metrics]
            if missing:
                raise DataError(None, f"metric {key!r} is not in the results of {', '.join(missing)}",
                                field="paired")
            diff = paired_difference(first.metrics[key], run.metrics[key])
            lines.append(f"{key}: {run.name} - {first.name} = {diff}")
    return lines
