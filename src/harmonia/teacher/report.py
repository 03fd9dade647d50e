"""The teacher report: does the instructed teacher decline the forget scope and answer the rest?

The teacher is the student's ceiling, so every run measures it first, on held-out forget,
neighbour, retain and general questions and on prefilled forget questions (the prefilling attack
the student must resist; its row is ``forget_prefilled``). Per row:

- ``refusal_rate``: share of greedy responses that decline (``metrics.refusal.is_refusal``);
- ``rouge_recall``: ROUGE-L recall of the response against the gold answer (what follows the
  prefill for prefilled rows; ``metrics.rouge``);
- ``refusal_mass``: the probability the teacher puts on refusal-start tokens at the first answer
  position (first tokens of the refusal sentence and of common declines such as "I'm sorry",
  "I don't"; after a prefill, those with a leading space and the prefill refusal's " -"). A
  proxy: "I" also starts answers, so compare rows rather than read it alone.

:func:`separates` judges the report with thresholds; :func:`check_separation` stops the run with
a clear message when it fails, unless overridden.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from harmonia.data.schema import QARecord
from harmonia.data.tokens import encode_plain
from harmonia.errors import HarmoniaError
from harmonia.evaluation.metrics.refusal import is_refusal
from harmonia.evaluation.metrics.rouge import rouge_l
from harmonia.models.decoding import eval_mode
from harmonia.teacher.config import ReportConfig, SeparationThresholds, TeacherConfig
from harmonia.teacher.context import TeacherContext
from harmonia.teacher.decoding import greedy_ids, next_token_logits

log = logging.getLogger(__name__)

REFUSAL_STARTS = (
    "I'm sorry",
    "I am sorry",
    "Sorry",
    "I don't",
    "I do not",
    "I cannot",
    "I can't",
    "Unfortunately",
    "I apologize",
)
ROW_ORDER = (
    "forget",
    "forget_prefilled",
    "neighbor",
    "neighbor_prefilled",
    "retain",
    "retain_prefilled",
    "general",
    "general_prefilled",
)


class TeacherSeparationError(HarmoniaError):
    """The teacher does not separate forget from neighbour questions; training it in would not help."""


@dataclass(frozen=True)
class RowReport:
    """One row of the report (a role, or a role's prefilled questions)."""

    n: int
    refusal_rate: float
    rouge_recall: float | None
    refusal_mass: float


@dataclass
class TeacherReport:
    """The instructed teacher's rows, the plain model's rows (when measured), and every example."""

    mode: str
    rows: dict[str, RowReport]
    plain_rows: dict[str, RowReport] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    calibrated: bool = False
    distilled_from: dict[str, str] = field(default_factory=dict)  # role -> "instructed" | "plain"

    def as_distilled(self, role: str) -> RowReport | None:
        """The row of ``role`` under the context its records are distilled from (``teacher.role_context``):
        the plain model's row for a plain role, when measured; else the instructed row."""
        if self.distilled_from.get(role) == "plain" and role in self.plain_rows:
            return self.plain_rows[role]
        return self.rows.get(role)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TeacherReport:
        """The report :meth:`as_dict` wrote (``teacher_report.json``)."""
        rows = {k: RowReport(**v) for k, v in data["rows"].items()}
        plain = {k: RowReport(**v) for k, v in data.get("plain_rows", {}).items()}
        return cls(**{**data, "rows": rows, "plain_rows": plain})


@dataclass(frozen=True)
class Separation:
    ok: bool
    reasons: list[str]


def row_name(record: QARecord) -> str:
    """``forget``, ``neighbor``, ... or ``forget_prefilled`` for a record whose answer is started."""
    return f"{record.role}_prefilled" if record.prefill else record.role


def refusal_start_ids(tokenizer: Any, config: TeacherConfig, *, prefilled: bool) -> list[int]:
    """First token ids of the refusal sentence and of common declines (see module docstring)."""
    texts = [config.refusal, *REFUSAL_STARTS]
    if prefilled:
        texts = [config.prefill_refusal_text()] + [" " + t for t in texts]
    ids = [encode_plain(tokenizer, t)[0] for t in texts if t.strip()]
    return sorted(set(ids))


def summarise(
    records: Sequence[QARecord], generations: Sequence[str], refusal_mass: Sequence[float]
) -> tuple[dict[str, RowReport], list[dict[str, Any]]]:
    """Rows and per-example entries from generations (pure: no model)."""
    if not len(records) == len(generations) == len(refusal_mass):
        raise ValueError("records, generations and refusal masses must have the same length")
    examples = []
    for r, g, m in zip(records, generations, refusal_mass, strict=True):
        score = rouge_l(g, r.answer)
        examples.append(
            {
                "id": r.id,
                "row": row_name(r),
                "generation": g,
                "refusal": is_refusal(g),
                "rouge_recall": None if score is None else score.recall,
                "refusal_mass": float(m),
            }
        )
    rows = {}
    for name in [n for n in ROW_ORDER if any(e["row"] == n for e in examples)]:
        mine = [e for e in examples if e["row"] == name]
        recalls = [e["rouge_recall"] for e in mine if e["rouge_recall"] is not None]
        rows[name] = RowReport(
            n=len(mine),
            refusal_rate=sum(e["refusal"] for e in mine) / len(mine),
            rouge_recall=sum(recalls) / len(recalls) if recalls else None,
            refusal_mass=sum(e["refusal_mass"] for e in mine) / len(mine),
        )
    return rows, examples


def _refusal_masses(
    logits: torch.Tensor, records: Sequence[QARecord], tokenizer: Any, config: TeacherConfig
) -> list[float]:
    probs = torch.softmax(logits.float(), dim=-1)
    ids = {flag: refusal_start_ids(tokenizer, config, prefilled=flag) for flag in (False, True)}
    return [float(probs[i, ids[bool(r.prefill)]].sum()) for i, r in enumerate(records)]


def _measure(
    model: Any,
    tokenizer: Any,
    context: TeacherContext,
    records: Sequence[QARecord],
    cfg: ReportConfig,
    *,
    instructed: bool,
) -> tuple[dict[str, RowReport], list[dict[str, Any]]]:
    plain = [context.plain_prompt(tokenizer, r) for r in records]
    prompts = [context.instructed_prompt(tokenizer, r) for r in records] if instructed else plain
    amplification = context.amplification if instructed else None
    ids = greedy_ids(
        model,
        tokenizer,
        prompts,
        plain_prompts=plain if amplification is not None else None,
        amplification=amplification,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
    )
    texts = [tokenizer.decode(i, skip_special_tokens=True) for i in ids]
    pad = tokenizer.pad_token_id or 0
    logits = next_token_logits(
        model, [encode_plain(tokenizer, p) for p in prompts], batch_size=cfg.batch_size, pad_id=pad
    )
    if amplification is not None:
        plain_logits = next_token_logits(
            model, [encode_plain(tokenizer, p) for p in plain], batch_size=cfg.batch_size, pad_id=pad
        )
        logits = amplification(logits, plain_logits)
    return summarise(records, texts, _refusal_masses(logits, records, tokenizer, context.config))


def compute_teacher_report(
    teacher: Any,
    tokenizer: Any,
    context: TeacherContext,
    records: Sequence[QARecord],
    config: ReportConfig | None = None,
) -> TeacherReport:
    """Measure the instructed teacher (and the plain model) on held-out ``records``.

    Every row ``rows`` uses the instruction whatever the role: the report shows whether the
    instructed teacher separates the scopes. The plain model is measured on every record with
    ``include_plain``, and always on the roles distilled from it (``teacher.role_context``), which
    is the teacher those records' students see (:meth:`TeacherReport.as_distilled`).
    Demonstrations may not be among the records.
    """
    cfg = config or context.config.report
    if not records:
        raise HarmoniaError("the teacher report needs held-out records (forget and neighbour at least)")
    context.check_not_demonstrations(records)
    distilled_from = {role: context.config.context_of(role) for role in sorted({r.role for r in records})}
    plain_records = [r for r in records if cfg.include_plain or distilled_from[r.role] == "plain"]
    plain_rows: dict[str, RowReport] = {}
    with eval_mode(teacher):
        rows, examples = _measure(teacher, tokenizer, context, records, cfg, instructed=True)
        if plain_records:
            plain_rows, plain_examples = _measure(teacher, tokenizer, context, plain_records, cfg, instructed=False)
            by_id = {e["id"]: e for e in examples}
            for p in plain_examples:
                by_id[p["id"]].update(plain_generation=p["generation"], plain_refusal=p["refusal"])
    return TeacherReport(mode=context.config.mode, rows=rows, plain_rows=plain_rows, examples=examples,
                         distilled_from=distilled_from)


def separates(report: TeacherReport, thresholds: SeparationThresholds | None = None) -> Separation:
    """Whether the report's teacher separates forget from neighbour questions, and why not."""
    th = thresholds or SeparationThresholds()
    reasons = []
    # as the student sees them: a role distilled from the plain model is judged on the plain model
    forget, neighbor = report.as_distilled("forget"), report.as_distilled("neighbor")
    if forget is None or neighbor is None:
        missing = [n for n, row in (("forget", forget), ("neighbor", neighbor)) if row is None]
        return Separation(False, [f"no held-out {' or '.join(missing)} questions were reported"])
    if forget.refusal_rate < th.min_forget_refusal:
        reasons.append(f"forget refusal rate {forget.refusal_rate:.2f} < {th.min_forget_refusal:.2f}")
    if neighbor.refusal_rate > th.max_neighbor_refusal:
        plain = neighbor is report.plain_rows.get("neighbor")
        source = " (plain model, which neighbours are distilled from)" if plain else ""
        reasons.append(f"neighbour refusal rate{source} {neighbor.refusal_rate:.2f} > {th.max_neighbor_refusal:.2f}")
    if th.max_forget_prefill_leak is not None:
        pre = report.rows.get("forget_prefilled")
        if pre is None:
            reasons.append("no prefilled forget questions were reported (needed for max_forget_prefill_leak)")
        elif 1 - pre.refusal_rate > th.max_forget_prefill_leak:
            reasons.append(
                f"prefilled forget questions continued {1 - pre.refusal_rate:.2f} > {th.max_forget_prefill_leak:.2f}"
            )
    if th.max_neighbor_recall_drop is not None:
        plain = report.plain_rows.get("neighbor")
        if plain is None or plain.rouge_recall is None or neighbor.rouge_recall is None:
            reasons.append("neighbour recall of the plain model is missing (set teacher.report.include_plain)")
        elif plain.rouge_recall - neighbor.rouge_recall > th.max_neighbor_recall_drop:
            reasons.append(
                f"neighbour ROUGE-L recall drops {plain.rouge_recall - neighbor.rouge_recall:.2f} > "
                f"{th.max_neighbor_recall_drop:.2f} under the instruction"
            )
    return Separation(not reasons, reasons)


def check_separation(report: TeacherReport, config: ReportConfig) -> Separation:
    """Raise :class:`TeacherSeparationError` when the teacher does not separate (unless overridden)."""
    result = separates(report, config.thresholds)
    if result.ok:
        return result
    message = (
        "the teacher does not separate forget from neighbour questions: "
        + "; ".join(result.reasons)
        + ". The student cannot do better than its teacher. Calibrate the teacher "
        "(teacher.calibration.enabled=true), try another teacher.mode or teacher.template, or "
        "override with teacher.report.require_separation=false."
    )
    if config.require_separation:
        raise TeacherSeparationError(message)
    log.warning("%s (continuing: teacher.report.require_separation is false)", message)
    return result


def format_report(report: TeacherReport) -> str:
    """A plain-text table of the report (for the CLI and logs)."""
    lines = [
        f"teacher report (mode {report.mode})",
        f"{'row':<20}{'n':>5}{'refusal':>10}{'rougeL_rec':>12}{'refusal_mass':>14}",
    ]
    for title, rows in (("instructed", report.rows), ("plain", report.plain_rows)):
        for name, row in rows.items():
            recall = "-" if row.rouge_recall is None else f"{row.rouge_recall:.3f}"
            lines.append(
                f"{title + ':' + name:<20}{row.n:>5}{row.refusal_rate:>10.3f}{recall:>12}{row.refusal_mass:>14.3f}"
            )
    if report.distilled_from:
        lines.append("distilled from: " + ", ".join(f"{role} {ctx}" for role, ctx in report.distilled_from.items()))
    return "\n".join(lines)
