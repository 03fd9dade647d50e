"""Reports of evaluation results: summary tables, figures, markdown and self-contained HTML.

Everything here reads :class:`~harmonia.evaluation.results.EvalResults` (``results.json``) and
never runs a model, so a report can be rebuilt from stored results at any time. Which metric
each headline number comes from is documented in :mod:`harmonia.reports.headline`.
"""

from harmonia.reports.compare import compare_runs, load_results, load_runs
from harmonia.reports.report import ReportPaths, write_report
from harmonia.reports.tables import markdown_table, rich_table, summary_table

__all__ = [
    "ReportPaths",
    "compare_runs",
    "load_results",
    "load_runs",
    "markdown_table",
    "rich_table",
    "summary_table",
    "write_report",
]
