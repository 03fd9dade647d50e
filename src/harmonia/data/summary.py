"""What is in a built dataset: counts per role, source, group and kind, lengths, anchors, examples.

:func:`inspect_dataset` reads (and so validates) a QARecord JSONL file; :func:`render_summary`
prints the summary with rich for the CLI.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harmonia.data.jsonl import read_records, record_length
from harmonia.data.schema import ROLES, QARecord


@dataclass
class DatasetSummary:
    """Counts and length statistics of a dataset (lengths of question + prefill + answer)."""

    n_records: int
    by_role: dict[str, int]
    by_source: dict[str, int]
    by_group: dict[str, int]
    by_kind: dict[str, int]  # base, gold_prefix, opener
    n_mcq: int
    n_calibration: int
    n_anchored: int  # forget records with an anchor
    n_anchor_neighbors: int  # neighbour records that anchor at least one forget record
    length_unit: str
    length_stats: dict[str, float]
    histogram: list[tuple[int, int, int]]  # (low, high, count)
    examples: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _counts(values: Sequence[str]) -> dict[str, int]:
    return dict(sorted(Counter(values).items(), key=lambda kv: (-kv[1], kv[0])))


def _short(text: str, width: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def summarise_records(
    records: Sequence[QARecord],
    *,
    tokenizer: Any = None,
    bins: int = 10,
    examples_per_role: int = 2,
    path: str | Path | None = None,
) -> DatasetSummary:
    lengths = np.array([sum(record_length(r, tokenizer).values()) for r in records], dtype=float)
    if len(lengths):
        counts, edges = np.histogram(lengths, bins=bins)
        histogram = [
            (int(np.floor(edges[i])), int(np.ceil(edges[i + 1])), int(c)) for i, c in enumerate(counts)
        ]
        stats = {
            "min": float(lengths.min()),
            "median": float(np.median(lengths)),
            "mean": float(lengths.mean()),
            "p95": float(np.percentile(lengths, 95)),
            "max": float(lengths.max()),
        }
    else:
        histogram, stats = [], {}
    examples: dict[str, list[dict[str, str]]] = {}
    for record in records:
        shown = examples.setdefault(record.role, [])
        if len(shown) < examples_per_role:
            shown.append(
                {
                    "id": record.id,
                    "question": _short(record.question),
                    "prefill": _short(record.prefill),
                    "answer": _short(record.answer),
                    "anchor_id": record.anchor_id or "",
                }
            )
    return DatasetSummary(
        n_records=len(records),
        by_role={role: n for role in ROLES if (n := sum(r.role == role for r in records))},
        by_source=_counts([r.source for r in records]),
        by_group=_counts([r.group or "(none)" for r in records]),
        by_kind=_counts([str(r.metadata.get("kind", "base")) for r in records]),
        n_mcq=sum(r.is_mcq for r in records),
        n_calibration=sum(bool(r.metadata.get("calibration")) for r in records),
        n_anchored=sum(r.role == "forget" and r.anchor_id is not None for r in records),
        n_anchor_neighbors=sum(r.role == "neighbor" and r.anchor_id is not None for r in records),
        length_unit="tokens" if tokenizer is not None else "characters",
        length_stats=stats,
        histogram=histogram,
        examples=examples,
        path=str(path) if path is not None else None,
    )


def inspect_dataset(
    path: str | Path, *, tokenizer: Any = None, bins: int = 10, examples_per_role: int = 2
) -> DatasetSummary:
    """Read and validate a QARecord JSONL file and summarise it."""
    return summarise_records(
        read_records(path), tokenizer=tokenizer, bins=bins, examples_per_role=examples_per_role, path=path
    )


def render_summary(summary: DatasetSummary, console: Any = None, *, max_groups: int = 15) -> None:
    """Print the summary as rich tables."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    title = f"{summary.n_records} records" + (f" in {summary.path}" if summary.path else "")
    console.print(
        f"[bold]{title}[/bold]  (MCQ {summary.n_mcq}, calibration {summary.n_calibration}, "
        f"anchored forget {summary.n_anchored}, anchor neighbours {summary.n_anchor_neighbors})"
    )
    for name, counts in (
        ("role", summary.by_role),
        ("source", summary.by_source),
        ("kind", summary.by_kind),
        ("group", summary.by_group),
    ):
        table = Table(title=f"by {name}", show_header=True)
        table.add_column(name)
        table.add_column("records", justify="right")
        items = list(counts.items())
        for key, n in items[:max_groups]:
            table.add_row(key, str(n))
        if len(items) > max_groups:
            table.add_row(f"… {len(items) - max_groups} more", str(sum(n for _, n in items[max_groups:])))
        console.print(table)
    if summary.histogram:
        stats = ", ".join(f"{k} {v:.0f}" for k, v in summary.length_stats.items())
        table = Table(title=f"length in {summary.length_unit} ({stats})")
        table.add_column("range")
        table.add_column("records", justify="right")
        table.add_column("")
        peak = max(c for _, _, c in summary.histogram) or 1
        for low, high, count in summary.histogram:
            table.add_row(f"{low}-{high}", str(count), "█" * max(0, round(30 * count / peak)))
        console.print(table)
    for role, shown in summary.examples.items():
        for ex in shown:
            prefill = f" [dim]\\[prefill: {escape(ex['prefill'])}][/dim]" if ex["prefill"] else ""
            console.print(
                f"[bold]{role}[/bold] {escape(ex['id'])}: Q: {escape(ex['question'])}\n"
                f"    A:{prefill} {escape(ex['answer'])}",
                highlight=False,
            )
