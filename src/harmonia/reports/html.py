"""The self-contained HTML report: one file with inline CSS and the figures as data URIs.

Self-contained because reports are mailed, attached to issues and opened from archived run
folders: nothing may be fetched from the network (no fonts, scripts or images by URL) and no
JavaScript is needed; per-example tables fold with ``<details>``. Every text from a results
file is escaped, since generations are arbitrary model output.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence

from harmonia.evaluation.results import EvalResults
from harmonia.reports.examples import ExampleTable, worst_cases
from harmonia.reports.headline import format_value
from harmonia.reports.plots import FIGURE_CAPTIONS, FIGURE_TITLES
from harmonia.reports.tables import SummaryTable, summary_table

_GROUP_TITLES = {"metrics": "knowledge and utility", "attacks": "attack success", "objectives": "objectives"}

CSS = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --head: #f6f8fa; --best: #dafbe1; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff;
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 22px 0 8px; }
.muted { color: var(--muted); }
.scroll { overflow-x: auto; border: 1px solid var(--line); border-radius: 6px; }
table { border-collapse: collapse; }
th, td { padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; text-align: left; }
th { background: var(--head); font-weight: 600; }
table.summary { width: 100%; font-size: 13px; }
table.summary th, table.summary td { padding: 4px 6px; }
table.summary th.num { text-align: right; font-size: 12px; line-height: 1.25; }
table.summary td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.summary .run { font-weight: 600; white-space: nowrap; width: 1%; }
td.best { background: var(--best); font-weight: 700; }
td.missing { color: var(--muted); }
table.runs td, table.runs th { font-size: 13px; }
table.runs details { margin: 0; }
table.runs details > summary { padding: 0; }
details { margin: 6px 0; }
details > summary { cursor: pointer; font-weight: 600; padding: 4px 0; }
pre.meta { background: var(--head); padding: 8px; border-radius: 6px; font-size: 12px;
           max-height: 320px; overflow: auto; margin: 4px 0; }
ul.legend { margin: 6px 0; padding-left: 20px; font-size: 13px; columns: 2 360px; }
.figures { display: flex; flex-direction: column; gap: 18px; }
figure { margin: 0; border: 1px solid var(--line); border-radius: 6px; padding: 10px; background: #fff; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { font-size: 13px; color: var(--muted); margin-top: 6px; }
figcaption b { color: var(--fg); }
table.examples { width: 100%; table-layout: fixed; font-size: 13px; margin: 4px 0 10px; }
table.examples td.text { white-space: pre-wrap; overflow-wrap: anywhere; }
table.examples col.id { width: 13%; } table.examples col.score { width: 8%; }
table.examples col.q { width: 25%; } table.examples col.gold { width: 24%; }
table.examples td.num { text-align: right; font-variant-numeric: tabular-nums; }
td code, td.id { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px;
                 overflow-wrap: anywhere; }
.none { color: var(--muted); font-style: italic; }
"""



def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...``: the image travels inside the HTML file."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _header_text(header: str) -> str:
    """Escaped header that wraps only between words: "ROUGE-L" and "k=1 ↓" never split."""
    words = header.rsplit(" ", 1)
    text = "\u00a0".join(words) if len(words) == 2 and len(words[1]) == 1 else header  # arrow stays
    return _e(text.replace("-", "\u2011"))


def _group_table(table: SummaryTable, group: str, columns: list[int]) -> str:
    """One group of summary columns (e.g. the objectives) as its own table, runs as rows."""
    header = "".join(f'<th class="num" title="{_e(table.columns[j].description)}">'
                     f"{_header_text(table.columns[j].header)}</th>" for j in columns)
    best = {j: table.best(j) for j in columns}
    rows = []
    for i, run in enumerate(table.runs):
        cells = [f'<td class="run">{_e(run)}</td>']
        for j in columns:
            classes = ["num", *(["best"] if i in best[j] else []),
                       *(["missing"] if table.values[i][j] is None else [])]
            cells.append(f'<td class="{" ".join(classes)}">{_e(table.cell(i, j))}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<h3>{_e(_GROUP_TITLES[group])}</h3><div class="scroll"><table class="summary">'
            f'<thead><tr><th class="run">run</th>{header}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _summary_html(table: SummaryTable) -> str:
    """The summary split by column group: one 18-column table does not fit a page width."""
    by_group: dict[str, list[int]] = {}
    for j, column in enumerate(table.columns):
        by_group.setdefault(column.group, []).append(j)
    return "".join(_group_table(table, group, columns) for group, columns in by_group.items())


def _legend_html(table: SummaryTable) -> str:
    items = "".join(f"<li><b>{_e(c.header)}</b>: {_e(c.description)}</li>" for c in table.columns)
    return (f'<details><summary>What the columns mean</summary><ul class="legend">{items}</ul>'
            '<p class="muted">Best value per column highlighted; – = not measured.</p></details>')


def _runs_html(results: Sequence[EvalResults]) -> str:
    rows = []
    for run in results:
        meta = ""
        if run.meta:
            dumped = json.dumps(run.meta, indent=2, ensure_ascii=False, sort_keys=True, default=str)
            meta = f'<details><summary>meta</summary><pre class="meta">{_e(dumped)}</pre></details>'
        rows.append(f'<tr><td class="run"><b>{_e(run.name)}</b></td><td><code>{_e(run.model)}</code></td>'
                    f"<td>{meta}</td></tr>")
    return ('<table class="runs"><thead><tr><th>run</th><th>model</th><th>details</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _figures_html(figures: Mapping[str, bytes]) -> str:
    items = []
    for key, png in figures.items():
        title = FIGURE_TITLES.get(key, key)
        caption = f"<b>{_e(title)}.</b> {_e(FIGURE_CAPTIONS.get(key, ''))}"
        items.append(f'<figure><img src="{png_data_uri(png)}" alt="{_e(title)}">'
                     f"<figcaption>{caption}</figcaption></figure>")
    return f'<div class="figures">{"".join(items)}</div>'


def _text_cell(text: str | None) -> str:
    if text is None:
        return '<td class="text none">not recorded</td>'
    return f'<td class="text">{_e(text)}</td>' if text else '<td class="text none">(empty)</td>'


def _examples_html(table: ExampleTable) -> str:
    shown = f"{len(table.rows)} of {table.total}" if table.total > len(table.rows) else f"{table.total}"
    summary = f"<summary>{_e(table.title)}: {shown}</summary>"
    if not table.rows:
        return f'<details>{summary}<p class="none">None.</p></details>'
    rows = "".join(
        f'<tr><td class="id">{_e(r.example_id)}</td><td class="num">{_e(format_value(r.score))}</td>'
        f"{_text_cell(r.question)}{_text_cell(r.gold)}{_text_cell(r.generation)}</tr>"
        for r in table.rows
    )
    return (f'<details>{summary}<table class="examples">'
            '<colgroup><col class="id"><col class="score"><col class="q"><col class="gold"><col></colgroup>'
            f"<thead><tr><th>id</th><th>{_e(table.score_label)}</th><th>question</th><th>gold answer</th>"
            f"<th>generation</th></tr></thead><tbody>{rows}</tbody></table></details>")


def render_html(results: Sequence[EvalResults], figures: Mapping[str, bytes], *,
                title: str = "harmonia evaluation report") -> str:
    """The whole report as one HTML document; ``figures`` maps figure keys to PNG bytes."""
    table = summary_table(results)
    worst = []
    for run in results:
        tables = worst_cases(run)
        body = "".join(_examples_html(t) for t in tables) or '<p class="none">No per-example results.</p>'
        worst.append(f"<h3>{_e(run.name)}</h3>{body}")
    sections = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="muted">{len(results)} run{"s" if len(results) != 1 else ""}</p>',
        _runs_html(results),
        "<h2>Summary</h2>", _summary_html(table), _legend_html(table),
    ]
    if figures:
        sections += ["<h2>Figures</h2>", _figures_html(figures)]
    sections += ["<h2>Worst cases</h2>", *worst]
    return ('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            + "\n".join(sections) + "\n</main>\n</body>\n</html>\n")
