"""Report figures: objectives radar, prefill-k attack curves, per-metric bars, Pareto scatter.

Figures use matplotlib's object API on the Agg canvas, never pyplot: nothing global changes,
no window opens, and a figure is freed when dropped (pyplot keeps every figure alive). Saving
pins what would otherwise differ between runs (the SVG date and element ids), so the same
results give the same bytes. Runs keep one colour, in input order, across all figures.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import matplotlib
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from harmonia.errors import ConfigError
from harmonia.evaluation.results import EvalResults
from harmonia.io import atomic_path
from harmonia.reports.headline import (
    ATTACK_COLUMNS,
    METRIC_COLUMNS,
    OBJECTIVE_LABELS,
    OBJECTIVES,
    PREFILL_WORST_COLUMN,
    WMDP_COLUMN,
    Column,
    format_value,
    objective,
    prefill_k_rates,
    prefill_opener_rates,
)

FigureFormat = Literal["png", "svg"]
DPI = 110
FIGURE_TITLES: dict[str, str] = {
    "radar": "Objectives",
    "prefill": "Prefilling attack",
    "metrics": "Metrics per run",
    "pareto": "Trade-offs",
}
FIGURE_CAPTIONS: dict[str, str] = {
    "radar": "The four objectives (1 = fully met); one polygon per run.",
    "prefill": "Prefilling attack success rate against the number k of gold-answer tokens placed in the "
               "assistant turn (left) and for fixed affirmative openers (right).",
    "metrics": "Headline metrics per run (↑ higher is better, ↓ lower is better; – = not measured).",
    "pareto": "Forget efficacy against neighbour retention and against utility; the dashed line joins the "
              "runs no other run beats on both axes (the Pareto front).",
}
BAR_COLUMNS: tuple[Column, ...] = (*METRIC_COLUMNS, WMDP_COLUMN, PREFILL_WORST_COLUMN, *ATTACK_COLUMNS)
_OPENER_MARKERS = ("D", "s", "^", "v", "P", "X", "*", "h")
_SAVE_RC = {"svg.hashsalt": "harmonia", "svg.fonttype": "path"}
_SAVE_METADATA: dict[str, dict[str, None]] = {"png": {"Software": None}, "svg": {"Date": None}}


def run_color(index: int) -> str:
    """Colour of the ``index``-th run: tab10, then tab20's lighter shades, then repeating."""
    palette = [*matplotlib.color_sequences["tab10"], *matplotlib.color_sequences["tab20"][1::2]]
    return to_hex(palette[index % len(palette)])


def new_figure(width: float, height: float) -> Figure:
    """A figure attached to an Agg canvas (no pyplot, no GUI backend)."""
    fig = Figure(figsize=(width, height), layout="constrained", dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _no_data(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", color="0.4")


def _run_legend(fig: Figure, names: Sequence[tuple[int, str]], *, marker: str | None = "o") -> None:
    """A legend below the plot with one entry per run, built from proxies so axes stay uncluttered."""
    if not names:
        return
    handles = [
        Patch(color=run_color(i), label=name) if marker is None
        else Line2D([], [], color=run_color(i), marker=marker, label=name)
        for i, name in names
    ]
    # As many columns as fit the figure width: a legend wider than the figure is cut off.
    # An entry is about 0.6 em per character at 8 pt plus ~40 pt for the handle and spacing.
    entry_inches = (max(len(name) for _, name in names) * 0.6 * 8 + 40) / 72
    ncols = max(1, min(len(handles), int(0.95 * fig.get_figwidth() / entry_inches)))
    fig.legend(handles=handles, loc="outside lower center", ncols=ncols, fontsize=8, frameon=False)


def radar_plot(results: Sequence[EvalResults]) -> Figure:
    """One polygon per run over the four objectives.

    A missing objective is drawn at 0 and named in the run's legend entry; a run with no
    objective at all gets no polygon and is listed under the plot.
    """
    fig = new_figure(6.4, 5.6)
    ax = fig.add_subplot(projection="polar")
    angles = [2 * math.pi * i / len(OBJECTIVES) for i in range(len(OBJECTIVES))]
    ax.set_theta_offset(math.pi / 2)  # forget efficacy on top, then clockwise
    ax.set_theta_direction(-1)
    ax.set_xticks(angles, labels=[OBJECTIVE_LABELS[n].replace(" ", "\n") for n in OBJECTIVES], fontsize=9)
    for label, angle in zip(ax.get_xticklabels(), angles, strict=True):
        # Anchor side labels at their inner edge so polygons reaching 1 do not run through them.
        side = math.sin(angle)
        label.set_horizontalalignment("left" if side > 0.1 else "right" if side < -0.1 else "center")
    ax.set_ylim(0.0, 1.0)
    ax.set_yticks([0.25, 0.5, 0.75, 1.0], labels=["0.25", "0.5", "0.75", "1"], fontsize=7, color="0.4")
    ax.set_rlabel_position(45)  # between two axes, away from the polygon vertices
    plotted: list[tuple[int, str]] = []
    skipped: list[str] = []
    for i, run in enumerate(results):
        values = [objective(run, n) for n in OBJECTIVES]
        if all(v is None for v in values):
            skipped.append(run.name)
            continue
        drawn = [0.0 if v is None else v for v in values]
        label = run.name
        combined = objective(run, "combined")
        if combined is not None:
            label += f" (combined {format_value(combined)})"
        missing = [OBJECTIVE_LABELS[n] for n, v in zip(OBJECTIVES, values, strict=True) if v is None]
        if missing:
            label += f" — missing: {', '.join(missing)}"
        color = run_color(i)
        ax.plot([*angles, angles[0]], [*drawn, drawn[0]], color=color, linewidth=2, marker="o", markersize=4)
        ax.fill(angles, drawn, color=color, alpha=0.12)
        plotted.append((i, label))
    if not plotted:
        _no_data(ax, "no objectives computed")
    if skipped:
        fig.text(0.01, 0.01, "no objectives: " + ", ".join(skipped), fontsize=7, color="0.4")
    fig.suptitle("Objectives")
    _run_legend(fig, plotted)
    return fig


def _opener_label(setting: str) -> str:
    for prefix in ("opener=", "opener:"):
        if setting.startswith(prefix):
            setting = setting[len(prefix):]
    return textwrap.fill(textwrap.shorten(setting.strip(), 48, placeholder="…"), 16)


def prefill_plot(results: Sequence[EvalResults]) -> Figure:
    """Attack success against prefix length k, one line per run; openers as separate markers.

    Openers are not a length, so they get their own panel on the right (one x position per
    opener, one marker shape per opener, the run's colour; runs are spread slightly sideways so
    equal rates stay visible).
    """
    k_rates = [prefill_k_rates(r) for r in results]
    opener_rates = [prefill_opener_rates(r) for r in results]
    openers = list(dict.fromkeys(o for rates in opener_rates for o in rates))
    fig = new_figure(8.0 if openers else 6.4, 4.6)
    if openers:
        ax_k, ax_o = fig.subplots(1, 2, sharey=True, width_ratios=[3, max(1.2, 0.7 * len(openers))])
    else:
        ax_k, ax_o = fig.subplots(), None
    for i, rates in enumerate(k_rates):
        if rates:
            ax_k.plot(list(rates), list(rates.values()), color=run_color(i), marker="o", linewidth=2)
    ks = sorted({k for rates in k_rates for k in rates})
    if ks:
        ax_k.set_xticks(ks)
        ax_k.set_xlim(min(ks) - 0.5, max(ks) + 0.5)
    else:
        _no_data(ax_k, "no prefix-length results")
    ax_k.set_xlabel("gold-answer tokens prefilled (k)")
    ax_k.set_ylabel("attack success rate")
    ax_k.set_ylim(-0.03, 1.03)
    ax_k.grid(alpha=0.3)
    if ax_o is not None:
        spread = 0.5 / max(len(results), 1)
        for i, rates in enumerate(opener_rates):
            shift = (i - (len(results) - 1) / 2) * spread
            for j, opener in enumerate(openers):
                if opener in rates:
                    ax_o.plot([j + shift], [rates[opener]], linestyle="none", color=run_color(i),
                              marker=_OPENER_MARKERS[j % len(_OPENER_MARKERS)], markersize=8,
                              markeredgecolor="black", markeredgewidth=0.5)
        ax_o.set_xticks(range(len(openers)), labels=[_opener_label(o) for o in openers], fontsize=7)
        ax_o.set_xlim(-0.6, len(openers) - 0.4)
        ax_o.set_xlabel("affirmative opener")
        ax_o.grid(alpha=0.3, axis="y")
    fig.suptitle("Prefilling attack")
    shown = [(i, r.name) for i, r in enumerate(results) if k_rates[i] or opener_rates[i]]
    _run_legend(fig, shown)
    return fig


def metric_bars_plot(results: Sequence[EvalResults], columns: Sequence[Column] = BAR_COLUMNS) -> Figure:
    """Grouped bars: one group per metric some run has, one bar per run; absent values get a dash."""
    columns = [c for c in columns if any(c.read(r) is not None for r in results)]
    n = max(len(results), 1)
    fig = new_figure(min(11.0, max(6.4, 0.3 * len(columns) * (n + 1))), 4.8)
    ax = fig.add_subplot()
    width = 0.8 / n
    for i, run in enumerate(results):
        offset = (i - (n - 1) / 2) * width
        values = [c.read(run) for c in columns]
        xs = [j + offset for j, v in enumerate(values) if v is not None]
        heights = [v for v in values if v is not None]
        bars = ax.bar(xs, heights, width, color=run_color(i))
        if n <= 4:
            ax.bar_label(bars, fmt="%.2f", fontsize=6, padding=1)
        for j, v in enumerate(values):
            if v is None:
                ax.text(j + offset, 0.01, "–", ha="center", va="bottom", fontsize=10, color=run_color(i))
    if columns:
        ax.set_xticks(range(len(columns)), labels=[c.header for c in columns], rotation=30, ha="right",
                      fontsize=8)
    else:
        _no_data(ax, "no metrics measured")
    ax.set_ylim(0.0, 1.08)
    ax.set_ylabel("value")
    ax.grid(alpha=0.3, axis="y")
    fig.suptitle("Metrics")
    _run_legend(fig, [(i, r.name) for i, r in enumerate(results)], marker=None)
    return fig


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (both maximised), by increasing x.

    A point is dominated when another is at least as good on both axes and better on one.
    """
    front = [
        i for i, (x, y) in enumerate(points)
        if not any(ox >= x and oy >= y and (ox > x or oy > y) for ox, oy in points)
    ]
    return sorted(front, key=lambda i: (points[i][0], -points[i][1], i))


def _pareto_axes(ax: Axes, results: Sequence[EvalResults], y_name: str) -> None:
    rows = [(i, objective(r, "forget_efficacy"), objective(r, y_name)) for i, r in enumerate(results)]
    shown = [(i, x, y) for i, x, y in rows if x is not None and y is not None]
    missing = [results[i].name for i, x, y in rows if x is None or y is None]
    if shown:
        ax.scatter([x for _, x, _ in shown], [y for _, _, y in shown], s=70, zorder=3,
                   c=[run_color(i) for i, _, _ in shown], edgecolors="black", linewidths=0.6)
        front = pareto_front([(x, y) for _, x, y in shown])
        if len(front) >= 2:
            ax.plot([shown[k][1] for k in front], [shown[k][2] for k in front], linestyle="--",
                    color="0.5", linewidth=1, zorder=2)
        seen: dict[tuple[float, float], int] = {}
        for i, x, y in shown:
            stack = seen.get((x, y), 0)  # equal points: stack their labels instead of overprinting
            seen[(x, y)] = stack + 1
            # Labels of points near the right or top edge go left or below, inside the axes.
            left, below = x > 0.75, y > 0.92
            dy = (-1 if below else 1) * (6 + 11 * stack)
            ax.annotate(results[i].name, (x, y), xytext=(-7 if left else 7, dy), textcoords="offset points",
                        ha="right" if left else "left",
                        va="top" if below else "bottom", fontsize=8)
    else:
        _no_data(ax, "no run has both objectives")
    if missing:
        ax.set_title("not shown (missing): " + ", ".join(missing), loc="left", fontsize=7, color="0.4")
    ax.set_xlim(-0.03, 1.05)
    ax.set_ylim(-0.03, 1.05)
    ax.set_xlabel("forget efficacy →")
    ax.set_ylabel(f"{OBJECTIVE_LABELS[y_name]} →")
    ax.grid(alpha=0.3)


def pareto_plot(results: Sequence[EvalResults]) -> Figure:
    """Two scatters, one point per run: forget efficacy against neighbour retention and utility."""
    fig = new_figure(9.6, 4.6)
    for ax, y_name in zip(fig.subplots(1, 2), ("neighbour_retention", "utility"), strict=True):
        _pareto_axes(ax, results, y_name)
    fig.suptitle("Trade-offs (up and right is better)")
    return fig


def report_figures(results: Sequence[EvalResults]) -> dict[str, Figure]:
    """All report figures, keyed as in :data:`FIGURE_TITLES` and in that order."""
    return {
        "radar": radar_plot(results),
        "prefill": prefill_plot(results),
        "metrics": metric_bars_plot(results),
        "pareto": pareto_plot(results),
    }


def figure_bytes(fig: Figure, fmt: FigureFormat = "png") -> bytes:
    """The figure encoded as PNG or SVG, byte-identical for identical figures."""
    if fmt not in _SAVE_METADATA:
        raise ConfigError(f"unsupported figure format '{fmt}'; use one of {sorted(_SAVE_METADATA)}")
    buffer = io.BytesIO()
    with matplotlib.rc_context(_SAVE_RC):
        fig.savefig(buffer, format=fmt, dpi=DPI, metadata=_SAVE_METADATA[fmt])
    return buffer.getvalue()


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write the figure atomically; the format (``.png`` or ``.svg``) comes from the suffix."""
    path = Path(path)
    data = figure_bytes(fig, path.suffix.lower().lstrip("."))  # type: ignore[arg-type]
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path
