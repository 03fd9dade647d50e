"""The markdown report: summary table, column legend, links to the figure PNGs, worst cases.

Markdown is the report to read in a terminal, a pull request or a notebook; the figures are
linked (relative paths) rather than embedded, so the text stays diffable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from harmonia.evaluation.results import EvalResults
from harmonia.reports.examples import ExampleTable, shorten, worst_cases
from harmonia.reports.headline import format_value
from harmonia.reports.plots import FIGURE_CAPTIONS, FIGURE_TITLES
from harmonia.reports.tables import markdown_escape, markdown_legend, markdown_table

CELL_CHARS = 240
"""Longest text kept in a markdown example cell; the HTML report has the full texts."""
NOT_RECORDED = "*(not recorded)*"


def _cell(text: str | None) -> str:
    return NOT_RECORDED if text is None else markdown_escape(shorten(text, CELL_CHARS)) or '""'


def markdown_examples(table: ExampleTable) -> str:
    """One worst-case table: id, score, question, gold answer, generation."""
    shown = f"{len(table.rows)} of {table.total}" if table.total > len(table.rows) else f"{table.total}"
    lines = [f"#### {table.title}: {shown}\n"]
    if not table.rows:
        return lines[0] + "\nNone.\n"
    lines.append(f"| id | {table.score_label} | question | gold answer | generation |")
    lines.append("|:---|---:|:---|:---|:---|")
    for row in table.rows:
        cells = [markdown_escape(row.example_id), format_value(row.score),
                 _cell(row.question), _cell(row.gold), _cell(row.generation)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_markdown(results: Sequence[EvalResults], figure_links: Mapping[str, str], *,
                    title: str = "harmonia evaluation report") -> str:
    """The whole markdown report; ``figure_links`` maps figure keys to paths relative to the report."""
    parts = [f"# {title}\n", "\n## Runs\n\n"]
    parts += [f"- **{markdown_escape(r.name)}**: model `{r.model}`\n" for r in results]
    parts += ["\n## Summary\n\n", markdown_table(results), "\n", markdown_legend(results)]
    if figure_links:
        parts.append("\n## Figures\n")
        for key, link in figure_links.items():
            parts.append(f"\n### {FIGURE_TITLES.get(key, key)}\n\n![{key}]({link})\n\n"
                         f"*{FIGURE_CAPTIONS.get(key, '')}*\n")
    parts.append("\n## Worst cases\n")
    for run in results:
        parts.append(f"\n### {markdown_escape(run.name)}\n\n")
        tables = worst_cases(run)
        parts += [markdown_examples(t) + "\n" for t in tables] or ["No per-example results.\n"]
    return "".join(parts)
