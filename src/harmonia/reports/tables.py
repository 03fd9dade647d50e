"""Summary tables of one or many runs: rows are runs, columns the headline numbers.

The same rows feed the markdown report, the HTML report and the terminal (a rich ``Table``), so
a number reads the same in all three: three decimals, :data:`~harmonia.reports.headline.MISSING`
(an en dash) where the results file has no value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.table import Table
from rich.text import Text

from harmonia.evaluation.results import EvalResults
from harmonia.reports.headline import Column, best_run_indices, format_value, headline_columns


@dataclass(frozen=True)
class SummaryTable:
    """Headline numbers of several runs: ``values[run][column]``, plus the best run per column."""

    runs: list[str]
    columns: list[Column]
    values: list[list[float | None]]

    def cell(self, run: int, column: int) -> str:
        return format_value(self.values[run][column])

    def best(self, column: int) -> set[int]:
        """Runs holding the best value of a column (for highlighting)."""
        return best_run_indices(self.columns[column], [row[column] for row in self.values])


def summary_table(results: Sequence[EvalResults]) -> SummaryTable:
    """Read the headline numbers of every run (never raises on a partial results file)."""
    columns = headline_columns(results)
    return SummaryTable(
        runs=[r.name for r in results],
        columns=columns,
        values=[[c.read(r) for c in columns] for r in results],
    )


def markdown_escape(text: str) -> str:
    """Make text safe inside a markdown table cell (pipes split cells, newlines end rows)."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def markdown_table(results: Sequence[EvalResults]) -> str:
    """A GitHub-flavoured markdown table; numeric columns right-aligned."""
    table = summary_table(results)
    header = ["run", *(c.header for c in table.columns)]
    lines = [
        "| " + " | ".join(markdown_escape(h) for h in header) + " |",
        "|" + "|".join([":---", *("---:" for _ in table.columns)]) + "|",
    ]
    for i, run in enumerate(table.runs):
        cells = [markdown_escape(run), *(table.cell(i, j) for j in range(len(table.columns)))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown_legend(results: Sequence[EvalResults]) -> str:
    """One bullet per column: what it measures and which direction is better."""
    return "".join(f"- **{c.header}**: {c.description}\n" for c in headline_columns(results))


def rich_table(results: Sequence[EvalResults], *, title: str | None = None) -> Table:
    """The summary as a rich ``Table`` for the terminal; the best value per column in bold green."""
    table = summary_table(results)
    out = Table(title=title, header_style="bold", show_lines=False)
    out.add_column("run", style="bold", no_wrap=True)
    for column in table.columns:
        out.add_column(column.header, justify="right")
    best = [table.best(j) for j in range(len(table.columns))]
    for i, run in enumerate(table.runs):
        # Text objects, not markup strings: a run name like "npo [run_a]" must print as is.
        cells = [Text(table.cell(i, j), style="bold green" if i in best[j] else "")
                 for j in range(len(table.columns))]
        out.add_row(Text(run), *cells)
    return out
