"""Logit distillation from the context-instructed teacher: harmonia, DUET and BiLD (METHOD.md Part 3).

The teacher is ``ctx.reference_model()``: the frozen starting weights (the base model with the
LoRA adapter disabled, or a frozen copy), run on the teacher's input for each record (see
:mod:`harmonia.teacher.context`). ``prepare`` builds every record's target once (the teacher's
greedy response when the ``response`` span is used) and, with ``cache: true``, the teacher's
Top-K at every distilled position, stored on disk under a key of model, inputs and settings, so
the teacher does not run during training.

Each example carries the student's ``input_ids`` / ``attention_mask`` / ``distill_mask`` and
either the teacher's ``teacher_input_ids`` / ``teacher_attention_mask`` / ``teacher_distill_mask``
(live teacher) or ``topk_ids`` / ``topk_values`` ``[n, K]`` (cached teacher). Gathering the
distilled positions of both sides gives the same N positions in the same order.

Loss terms are sums over distilled positions of one role (``pull:forget``, ``push:retain``, ...),
normalised by the engine by ``positions:<role>`` over the global batch and weighted by the
role's weight, so the loss per position does not depend on the batch composition.

Ablation settings:

- ``harmonia``: pull + push (Smooth-L1 toward the teacher's logits, or a hinge below its K-th
  logit). With ``cache: true`` only the hinge push is available (the teacher's logits at the
  student's own Top-K ids are not in a Top-K cache); a ``smooth_l1`` request then runs the hinge
  and warns. With ``decline_weight`` (ours, off by default) a third term, ``decline:<role>``: the
  cross-entropy of the decline's first token at declined records' decision positions.
- ``duet``: pull only, at the first answer token (DUET, arXiv 2601.21283).
- ``bild``: the BiLD loss (arXiv 2406.13555) in place of pull/push; live teacher only.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
from pydantic import Field, field_validator, model_validator

from harmonia.data.schema import ROLES, QARecord, Role
from harmonia.errors import ConfigError, HarmoniaError
from harmonia.io import write_json_atomic
from harmonia.methods import losses
from harmonia.methods.base import (
    Example,
    Method,
    MethodContext,
    MethodParams,
    Term,
    masked_logits,
    register_method,
)
from harmonia.methods.losses import PushVariant, TopK, gather_positions
from harmonia.models.decoding import eval_mode

# the teacher modules import harmonia.methods.base / losses, so they are imported as modules here
# (not ``from ... import name``): either package may then be imported first
from harmonia.teacher import context as teacher_context
from harmonia.teacher import report as teacher_report
from harmonia.teacher import targets as tt
from harmonia.teacher.config import Position, ResponseSource, TeacherConfig
from harmonia.teacher.decoding import Amplification

log = logging.getLogger(__name__)

Teacher = torch.Tensor | TopK


class Rows(NamedTuple):
    """Flags ``[N]`` over one role's distilled positions, in the same order as its rows."""

    first: torch.Tensor
    """each record's decision positions (its first distilled one; with positions 'prefix', also those
    inside its prefill)"""
    decline: torch.Tensor
    """the decision positions that ``decline_weight`` trains (all False unless it is set)"""


def _default_role_weights() -> dict[Role, float]:
    return dict.fromkeys(ROLES, 1.0)


class DistillParams(MethodParams):
    """Settings shared by every teacher-distillation method."""

    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    positions: list[Position] = Field(default_factory=lambda: ["response", "prefill"])
    response: ResponseSource = Field(
        "teacher", description="span 'response' follows the teacher's greedy response, the gold answer, or "
        "(instructed roles) the teacher's decline sentence"
    )
    response_tokens: int = Field(48, gt=0, description="max new tokens of the teacher's response")
    role_weights: dict[Role, float] = Field(default_factory=_default_role_weights)
    cache: bool = Field(False, description="compute the teacher's responses and Top-K once, on disk")
    teacher_batch_size: int = Field(16, gt=0, description="batch size of the teacher in prepare()")

    @field_validator("role_weights")
    @classmethod
    def _weights(cls, value: dict[Role, float]) -> dict[Role, float]:
        if any(w < 0 for w in value.values()):
            raise ValueError("role weights must be >= 0")
        return {**_default_role_weights(), **value}

    @field_validator("positions")
    @classmethod
    def _span(cls, value: list[Position]) -> list[Position]:
        if problem := tt.positions_problem(value):
            raise ValueError(problem)
        return list(dict.fromkeys(value))


class HarmoniaParams(DistillParams):
    k: int = Field(10, ge=1, description="Top-K size")
    role_k: dict[Role, int] = Field(
        default_factory=dict, description="Top-K size per role where it differs from k (a cached Top-K holds "
        "the largest): a wider K keeps more of the plain model's distribution on the roles distilled from it"
    )
    beta: float = Field(1.0, gt=0, description="Smooth-L1 beta")
    push_weight: float = Field(1.0, ge=0)
    push: PushVariant = "smooth_l1"
    margin: float = Field(0.0, description="hinge margin below the teacher's K-th logit")
    centre: bool = Field(False, description="subtract each model's mean logit over the teacher's Top-K")
    first_weight: float = Field(
        1.0, ge=0, description="weight of each record's first distilled position (where the student decides "
        "to answer or decline; after a prefill, to continue or stop; with positions 'prefix', every position "
        "inside the prefill too) relative to the others"
    )
    decline_margin: float | None = Field(
        None, ge=0, description="(ours; cached teacher, response 'refusal') at each declined record's first "
        "position (and its 'prefix' positions) the decline's first token becomes the teacher's top-1, this "
        "many logits above its best"
    )

    decline_weight: float = Field(
        0.0, ge=0, description="(ours; needs decline_margin) weight of a cross-entropy on the decline's first "
        "token at each declined record's decision positions where the teacher's own decline was at least "
        "decline_gap logits behind its best (a sum normalised like the role's other terms): a hard target "
        "where matching the teacher's logits leaves a student that still continues a started answer"
    )
    decline_gap: float = Field(
        0.0, ge=0, description="the positions decline_weight trains: where the teacher's best minus its decline "
        "was at least this (a decline outside the Top-K counts as the best minus the K-th value); 0: every "
        "decision position"
    )

    @model_validator(mode="after")
    def _decline_margin(self) -> HarmoniaParams:
        if self.decline_margin is not None and not (self.cache and self.response == "refusal"):
            raise ValueError("decline_margin edits the cached Top-K of declined records: it needs cache: true "
                             "and response: refusal")
        if self.decline_weight > 0 and self.decline_margin is None:
            raise ValueError("decline_weight trains the decline put first by decline_margin: set decline_margin")
        return self

    @field_validator("role_k")
    @classmethod
    def _role_k(cls, value: dict[Role, int]) -> dict[Role, int]:
        if any(k < 1 for k in value.values()):
            raise ValueError("every role's K must be >= 1")
        return value


class DuetParams(DistillParams):
    positions: list[Position] = Field(default_factory=lambda: ["first"])
    k: int = Field(10, ge=1)
    beta: float = Field(1.0, gt=0)
    centre: bool = False

    @model_validator(mode="after")
    def _first_only(self) -> DuetParams:
        if "response" in self.positions:
            raise ValueError("DUET distils the first answer token only; use positions [first] or [first, prefill]")
        return self


class BildParams(DistillParams):
    k: int = Field(8, ge=2)
    temperature: float = Field(3.0, gt=0)

    @model_validator(mode="after")
    def _live_only(self) -> BildParams:
        if self.cache:
            raise ValueError(
                "BiLD needs the teacher's logits at the student's Top-K ids, which a Top-K cache "
                "does not hold; set cache: false"
            )
        return self


class TeacherDistillation(Method):
    """Shared machinery: targets, teacher logits (live or cached), per-role terms."""

    Params: ClassVar[type[MethodParams]] = DistillParams
    roles = ROLES
    needs_reference = True

    def __init__(self, params: MethodParams, ctx: MethodContext) -> None:
        super().__init__(params, ctx)
        assert isinstance(params, DistillParams)
        self.p: DistillParams = params
        self.context: teacher_context.TeacherContext | None = None
        self.targets: dict[str, tt.DistillTarget] = {}
        self.topk: dict[str, TopK] = {}
        self.cache_keys: dict[str, str] = {}

    @property
    def reference_in_loss(self) -> bool:
        """A cached teacher ran in ``prepare`` only; a live one runs at every step."""
        return not self.p.cache

    @property
    def topk_k(self) -> int:
        """K of the cached Top-K."""
        return int(getattr(self.p, "k", 10))

    @property
    def amplification(self) -> Amplification | None:
        return Amplification.of(self.p.teacher)

    # -- preparation -------------------------------------------------------------------------
    def prepare(self, records: list[QARecord]) -> list[QARecord]:
        ids = [r.id for r in records]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise HarmoniaError(f"record id '{dup}' occurs twice; distillation targets are keyed by id")
        spans = {tt.span_of(r, self.p.positions) for r in records}
        eval_records: list[QARecord] = list(self.ctx.extras.get("teacher_eval_records", []))
        self.context = teacher_context.build_context(self.p.teacher, records, exclude=eval_records)
        tok = self.ctx.tokenizer
        cache = tt.TargetCache(self.p.teacher.cache_dir) if self.p.cache else None
        with self.ctx.reference_model() as teacher, eval_mode(teacher):
            if eval_records:
                self._report(teacher, eval_records)
            fingerprint = tt.weights_fingerprint(teacher) if cache is not None else ""
            responses = None
            if "response" in spans:
                responses = self._responses(teacher, records, cache, fingerprint)
            self.targets = tt.build_targets(
                tok, self.context, records, responses, self.p.positions, self.ctx.max_length
            )
            if cache is not None:
                self._cached_topk(teacher, records, cache, fingerprint)
        self._write_run_files()
        return records

    def _responses(
        self, teacher: Any, records: list[QARecord], cache: tt.TargetCache | None, fingerprint: str
    ) -> dict[str, list[int]]:
        tok = self.ctx.tokenizer
        assert self.context is not None
        if self.p.response == "gold":
            return {r.id: tt.gold_response(tok, r) for r in records}
        if self.p.response == "refusal":
            # (ours) Records of instructed roles are distilled along the decline sentence the
            # teacher was told to give, teacher-forced: a weak teacher that declines only part of
            # the time still puts its instructed logits on every position of that path. The
            # other roles keep the (plain) teacher's own greedy response.
            declined = {r.id: tt.refusal_response(tok, self.context, r) for r in records
                        if self.context.instructed(r.role)}
            rest = [r for r in records if r.id not in declined]
            return {**declined, **(self._responses_of(teacher, rest, cache, fingerprint) if rest else {})}
        return self._responses_of(teacher, records, cache, fingerprint)

    def _responses_of(
        self, teacher: Any, records: list[QARecord], cache: tt.TargetCache | None, fingerprint: str
    ) -> dict[str, list[int]]:
        tok = self.ctx.tokenizer
        assert self.context is not None
        if cache is None:
            return tt.teacher_responses(
                teacher,
                tok,
                self.context,
                records,
                max_new_tokens=self.p.response_tokens,
                batch_size=self.p.teacher_batch_size,
            )
        key = tt.responses_key(fingerprint, tok, self.context, records, max_new_tokens=self.p.response_tokens)
        self.cache_keys["responses"] = key
        ids = [r.id for r in records]
        stored = cache.load("responses", key, ids)
        if stored is not None:
            return {i: t.tolist() for i, t in zip(ids, stored["tokens"], strict=True)}
        out = tt.teacher_responses(
            teacher,
            tok,
            self.context,
            records,
            max_new_tokens=self.p.response_tokens,
            batch_size=self.p.teacher_batch_size,
        )
        cache.save("responses", key, ids, {"tokens": [torch.tensor(out[i], dtype=torch.long) for i in ids]})
        return out

    def _cached_topk(self, teacher: Any, records: list[QARecord], cache: tt.TargetCache, fingerprint: str) -> None:
        targets = [self.targets[r.id] for r in records]
        ids = [r.id for r in records]
        key = tt.topk_key(fingerprint, targets, self.topk_k, self.amplification)
        self.cache_keys["topk"] = key
        stored = cache.load("topk", key, ids)
        if stored is None:
            tops = tt.compute_topk(
                teacher, targets, self.topk_k, amplification=self.amplification, batch_size=self.p.teacher_batch_size
            )
            cache.save("topk", key, ids, {"ids": [t.ids for t in tops], "values": [t.values for t in tops]})
        else:
            tops = [TopK(i, v) for i, v in zip(stored["ids"], stored["values"], strict=True)]
        self.topk = dict(zip(ids, tops, strict=True))

    def _report(self, teacher: Any, eval_records: list[QARecord]) -> None:
        assert self.context is not None
        report = teacher_report.compute_teacher_report(teacher, self.ctx.tokenizer, self.context, eval_records)
        log.info("%s", teacher_report.format_report(report))
        run_dir = self.ctx.extras.get("run_dir")
        if run_dir is not None:
            write_json_atomic(Path(run_dir) / "teacher_report.json", report.as_dict())
        teacher_report.check_separation(report, self.p.teacher.report)

    def _write_run_files(self) -> None:
        run_dir = self.ctx.extras.get("run_dir")
        if run_dir is None or not self.p.cache:
            return
        write_json_atomic(
            Path(run_dir) / "teacher_cache.json",
            {"keys": self.cache_keys, "dir": str(tt.TargetCache(self.p.teacher.cache_dir).root)},
        )

    # -- examples ------------------------------------------------------------------------------
    def encode(self, record: QARecord) -> Example:
        target = self.targets.get(record.id)
        if target is None:
            raise HarmoniaError(f"record '{record.id}' has no distillation target; prepare() did not see it")
        example = tt.distill_features(target, teacher=not self.p.cache)
        if self.p.cache:
            top = self.topk[record.id]
            example["topk_ids"] = top.ids.tolist()
            example["topk_values"] = top.values.tolist()
        example["role_id"] = ROLES.index(record.role)
        example["n_prefix"] = target.n_prefix
        return example

    def units(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Distilled positions, overall (``positions``) and per role (``positions:forget``, ...)."""
        counts = batch["distill_mask"].sum(dim=1)
        out = {"positions": counts.sum()}
        for i, role in enumerate(ROLES):
            out[f"positions:{role}"] = counts[batch["role_id"] == i].sum()
        return out

    # -- loss --------------------------------------------------------------------------------
    @staticmethod
    def per_position(batch: dict[str, torch.Tensor], key: str) -> torch.Tensor:
        """A feature stored per distilled position (``[B, W, ...]``, each example's rows first, then
        padding) as ``[N, ...]`` in the row-major order of the distilled positions."""
        counts = batch["distill_mask"].sum(dim=1)
        width = batch[key].shape[1]
        valid = torch.arange(width, device=counts.device).unsqueeze(0) < counts.unsqueeze(1)
        return batch[key][valid]

    def teacher(self, batch: dict[str, torch.Tensor]) -> Teacher:
        """The teacher at the distilled positions: full logits ``[N, V]`` (live) or a cached TopK."""
        if self.p.cache:
            return TopK(self.per_position(batch, "topk_ids").long(), self.per_position(batch, "topk_values").float())
        with self.ctx.reference_model() as model:
            return tt.teacher_rows(model, batch, self.amplification).detach()

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> dict[str, Term]:
        logits, mask = masked_logits(model, batch, batch["distill_mask"].bool())
        position_roles = batch["role_id"].unsqueeze(1).expand_as(mask)
        roles = position_roles[mask]
        teacher = self.teacher(batch)
        n_teacher = teacher.ids.shape[0] if isinstance(teacher, TopK) else teacher.shape[0]
        if n_teacher != roles.shape[0]:
            raise RuntimeError(
                f"{roles.shape[0]} student and {n_teacher} teacher positions: the examples' "
                "distill masks are not aligned"
            )
        # each record's decision positions (its first distilled one; with 'prefix', also those inside
        # its prefill, which come first), in the same row-major order as the rows
        n_prefix = batch.get("n_prefix", torch.zeros_like(batch["role_id"])).to(mask.device)
        first = (mask & (mask.cumsum(dim=1) <= n_prefix.unsqueeze(1) + 1))[mask]
        decline = (self.per_position(batch, "decline_rows").bool().to(mask.device) if "decline_rows" in batch
                   else torch.zeros_like(first))
        terms: dict[str, Term] = {}
        for i, role in enumerate(ROLES):
            sel = roles == i
            if not bool(sel.any()):
                continue
            # the role's rows straight from the logits (one [N_role, V] copy with a gradient, not
            # two); both selections are in row-major order, so they stay aligned with the teacher's
            student = gather_positions(logits, mask & (position_roles == i))
            part = TopK(teacher.ids[sel], teacher.values[sel]) if isinstance(teacher, TopK) else teacher[sel]
            rows = Rows(first[sel], decline[sel])
            terms.update(self.role_terms(role, student, part, self.p.role_weights[role], rows))
        return terms

    def role_terms(
        self, role: str, student: torch.Tensor, teacher: Teacher, weight: float, rows: Rows
    ) -> dict[str, Term]:
        """The loss terms of one role's positions ``student [N, V]``; ``rows`` flags some of them."""
        raise NotImplementedError


@register_method
class Harmonia(TeacherDistillation):
    """Bidirectional Top-K logit distillation: pull toward the teacher's Top-K, push the student's own.

    ``cache: true`` uses the hinge push (see the module docstring) and warns if smooth_l1 was set.
    """

    name = "harmonia"
    Params = HarmoniaParams

    @property
    def topk_k(self) -> int:
        """K of the cached Top-K: the largest K of any role."""
        assert isinstance(self.p, HarmoniaParams)
        return max([self.p.k, *self.p.role_k.values()])

    def __init__(self, params: MethodParams, ctx: MethodContext) -> None:
        super().__init__(params, ctx)
        assert isinstance(params, HarmoniaParams)
        self.push: PushVariant = params.push
        if params.cache and params.push == "smooth_l1" and params.push_weight > 0:
            warnings.warn(
                "harmonia: the cached teacher holds only its Top-K, so the smooth_l1 push (which needs "
                "the teacher's logits at the student's Top-K ids) is replaced by the hinge push",
                stacklevel=2,
            )
            self.push = "hinge"
        self.decline_rows: dict[str, list[bool]] = {}

    def prepare(self, records: list[QARecord]) -> list[QARecord]:
        records = super().prepare(records)
        assert isinstance(self.p, HarmoniaParams)
        margin = self.p.decline_margin
        if margin is not None:
            # (ours) A weak teacher that still continues a started answer puts the continuation first
            # at the positions that decide; the decline it was told to give is put there instead.
            assert self.context is not None
            for r in records:
                if self.context.instructed(r.role):
                    target, top = self.targets[r.id], self.topk[r.id]
                    decisions = target.n_prefix + 1
                    if self.p.decline_weight > 0:  # the gaps are read before the lift overwrites them
                        gaps = tt.token_gaps(top, target.response[0], rows=decisions)
                        self.decline_rows[r.id] = [g >= self.p.decline_gap for g in gaps]
                    self.topk[r.id] = tt.lift_token(top, target.response[0], margin, rows=decisions)
        return records

    def encode(self, record: QARecord) -> Example:
        example = super().encode(record)
        assert isinstance(self.p, HarmoniaParams)
        if self.p.decline_weight > 0:
            # every example carries the flags (a batch mixes roles): the decision rows decline_weight
            # trains, then False for the record's other distilled rows
            flags = self.decline_rows.get(record.id, [])
            example["decline_rows"] = flags + [False] * (len(example["topk_ids"]) - len(flags))
        return example

    def role_terms(
        self, role: str, student: torch.Tensor, teacher: Teacher, weight: float, rows: Rows
    ) -> dict[str, Term]:
        p = self.p
        assert isinstance(p, HarmoniaParams)
        # still normalised by the count of positions: first_weight > 1 adds to the loss, it does
        # not take weight from the other positions
        weights = None if p.first_weight == 1.0 else torch.where(rows.first, p.first_weight, 1.0).to(student.device)
        sums = losses.topk_distill_sums(
            student, teacher, p.role_k.get(role, p.k), beta=p.beta, push=self.push, margin=p.margin,
            centre=p.centre, weights=weights,
        )
        terms = {f"pull:{role}": Term(sums.pull, f"positions:{role}", weight)}
        if p.push_weight > 0:
            terms[f"push:{role}"] = Term(sums.push, f"positions:{role}", weight * p.push_weight)
        if p.decline_weight > 0 and p.teacher.context_of(role) == "instructed":
            # decline_margin made the decline's first token the top-1 of every decision row of these
            # records (the validator asks for it), so the top-1 is the decline without a lookup
            assert isinstance(teacher, TopK)
            nll = losses.row_nll(student[rows.decline], teacher.ids[rows.decline, 0]).sum()
            terms[f"decline:{role}"] = Term(nll, f"positions:{role}", weight * p.decline_weight)
        return terms


@register_method
class Duet(TeacherDistillation):
    """DUET (arXiv 2601.21283): Smooth-L1 pull on the teacher's Top-K at the first answer token."""

    name = "duet"
    Params = DuetParams

    def role_terms(
        self, role: str, student: torch.Tensor, teacher: Teacher, weight: float, rows: Rows
    ) -> dict[str, Term]:
        p = self.p
        assert isinstance(p, DuetParams)
        # the push sum is not used; 'hinge' is the variant that also works from the cache
        sums = losses.topk_distill_sums(student, teacher, p.k, beta=p.beta, push="hinge", centre=p.centre)
        return {f"pull:{role}": Term(sums.pull, f"positions:{role}", weight)}


@register_method
class Bild(TeacherDistillation):
    """BiLD (arXiv 2406.13555) as the distillation loss, for the paper's ablation; live teacher only."""

    name = "bild"
    Params = BildParams

    def role_terms(
        self, role: str, student: torch.Tensor, teacher: Teacher, weight: float, rows: Rows
    ) -> dict[str, Term]:
        p = self.p
        assert isinstance(p, BildParams)
        if isinstance(teacher, TopK):
            raise ConfigError("bild needs the live teacher (cache: false)")
        return {
            f"bild:{role}": Term(losses.bild_sum(student, teacher, p.k, p.temperature), f"positions:{role}", weight)
        }
