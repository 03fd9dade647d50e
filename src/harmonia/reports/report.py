"""Write a report folder: ``report.md``, ``report.html`` and ``figures/*.png``.

Every file is written atomically (harmonia.io), so an interrupted run never leaves a
half-written report beside a good ``results.json``. The HTML embeds the same PNG bytes the
markdown links to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harmonia.errors import DataError
from harmonia.evaluation.results import EvalResults
from harmonia.io import atomic_path, write_text_atomic
from harmonia.reports.headline import with_unique_names
from harmonia.reports.html import render_html
from harmonia.reports.markdown import render_markdown
from harmonia.reports.plots import figure_bytes, report_figures

FIGURES_DIR = "figures"


@dataclass(frozen=True)
class ReportPaths:
    """Where a report landed."""

    markdown: Path
    html: Path
    figures: dict[str, Path]


def write_report(results: Sequence[EvalResults], out_dir: str | Path, *,
                 title: str = "harmonia evaluation report") -> ReportPaths:
    """Write the markdown and self-contained HTML report of one or more runs into ``out_dir``.

    Repeated run names are disambiguated (``name #2``) so table rows and legend entries stay
    distinguishable. Other files in ``out_dir`` (e.g. ``results.json``) are left alone.
    """
    if not results:
        raise DataError(out_dir, "no results to report", field="results")
    runs = with_unique_names(results)
    out_dir = Path(out_dir)
    figures = {key: figure_bytes(fig, "png") for key, fig in report_figures(runs).items()}
    figure_paths: dict[str, Path] = {}
    for key, png in figures.items():
        path = out_dir / FIGURES_DIR / f"{key}.png"
        with atomic_path(path) as tmp:
            tmp.write_bytes(png)
        figure_paths[key] = path
    links = {key: f"{FIGURES_DIR}/{path.name}" for key, path in figure_paths.items()}
    markdown = write_text_atomic(out_dir / "report.md", render_markdown(runs, links, title=title))
    page = write_text_atomic(out_dir / "report.html", render_html(runs, figures, title=title))
    return ReportPaths(markdown=markdown, html=page, figures=figure_paths)
