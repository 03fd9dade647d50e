"""What the baseline unlearning methods share: a forget term plus an optional retain term.

GA, GradDiff, NPO, SimNPO, RMU, refusal SFT and IdkDPO all push the model away from the forget
records and (optionally) hold it on retain records; they differ only in the two sums. This
module holds the rest once: the term weights and retain roles, splitting a mixed micro-batch by
role, the unit counts of the retain rows, and a zero term when a role has no rows in a
micro-batch (the engine logs every term at every step, so the set of keys must not change).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator

from harmonia.data.schema import ROLES, QARecord, Role
from harmonia.errors import ConfigError, HarmoniaError
from harmonia.methods import losses
from harmonia.methods.base import (
    Example,
    Method,
    MethodContext,
    MethodParams,
    Term,
    label_units,
    target_logits,
)
from harmonia.methods.encoding import encode_qa, with_role
from harmonia.models.decoding import eval_mode
from harmonia.training.batching import collate

RetainRole = Literal["neighbor", "retain", "general"]
RETAINED = "retained"
"""Unit suffix for the rows of all retain roles together (``tokens:retained``, ``seqs:retained``)."""
REF_LOGPROB = "ref_logprob"
"""Feature holding a forget sequence's log-prob under the reference (``chosen_ref_logprob``: its pair's)."""

Batch = dict[str, torch.Tensor]


class ForgetParams(MethodParams):
    """Weight of the forget term; positive, since a method without it unlearns nothing."""

    forget_weight: float = Field(1.0, gt=0)


class RetainParams(ForgetParams):
    """Adds a retain term over the records of ``retain_roles``; ``retain_weight`` 0 drops it."""

    retain_weight: float = Field(1.0, ge=0)
    retain_roles: list[RetainRole] = Field(default_factory=lambda: ["retain", "neighbor"], min_length=1)

    @field_validator("retain_roles")
    @classmethod
    def _unique(cls, roles: list[RetainRole]) -> list[RetainRole]:
        if len(set(roles)) != len(roles):
            raise ValueError(f"roles are repeated: {roles}")
        return roles


def role_rows(role_id: torch.Tensor, roles: Iterable[str]) -> torch.Tensor:
    """Bool ``[B]``: rows whose record has one of ``roles``."""
    ids = torch.tensor([ROLES.index(r) for r in roles], device=role_id.device)  # type: ignore[arg-type]
    return torch.isin(role_id, ids)


def rows_with_roles(batch: Batch, roles: Iterable[str]) -> Batch:
    """The rows of a collated batch whose records have one of ``roles`` (cf. ``select_rows``)."""
    rows = role_rows(batch["role_id"], roles)
    return {k: v[rows] for k, v in batch.items()}


def retained_units(labels: torch.Tensor, role_id: torch.Tensor,
                   roles: Iterable[str]) -> dict[str, torch.Tensor]:
    """Target tokens and sequences over the rows of all ``roles`` together."""
    rows = role_rows(role_id, roles)
    return {f"tokens:{RETAINED}": losses.target_mask(labels)[rows].sum(),
            f"seqs:{RETAINED}": losses.sequence_mask(labels)[rows].sum()}


class ForgetRetainMethod(Method):
    """Base of the baselines: ``forget_sum`` on forget rows, ``retain_sum`` on retain rows.

    Subclasses set ``forget_name``/``forget_unit`` and implement ``forget_sum``; the retain term
    defaults to the answer NLL (GradDiff's, NPO-RT's, SimNPO's). Params without retain fields
    (:class:`ForgetParams`) or with ``retain_weight`` 0 give a forget-only method.
    """

    Params: ClassVar[type[MethodParams]] = ForgetParams
    forget_name: ClassVar[str]
    forget_unit: ClassVar[str]
    retain_name: ClassVar[str] = "retain_nll"
    retain_unit: ClassVar[str] = f"tokens:{RETAINED}"
    reference_sequences: ClassVar[tuple[str, ...]] = ()
    """Key prefixes of the forget sequences whose reference log-prob the forget term reads (``""``:
    the gold answer; IdkDPO's ``"chosen_"``: the refusal). The reference is frozen, so ``prepare``
    scores each once and the steps run no reference forward (NPO: a third of a step's compute)."""

    def __init__(self, params: MethodParams, ctx: MethodContext) -> None:
        super().__init__(params, ctx)
        self.reference_scores: dict[str, dict[str, float]] = {}

    @property
    def reference_in_loss(self) -> bool:
        return self.needs_reference and not self.reference_sequences

    def prepare(self, records: list[QARecord]) -> list[QARecord]:
        if self.reference_sequences:
            forget = {r.id: self.encode_record(r) for r in records if r.role == "forget"}
            self.reference_scores = reference_logprobs(self.ctx, forget, self.reference_sequences)
        return records

    @property
    def retain_roles(self) -> tuple[str, ...]:
        """Roles of the retain term; empty when the method has none."""
        return self.trained_roles(self.params)[1:]

    @classmethod
    def trained_roles(cls, params: MethodParams) -> tuple[Role, ...]:
        """``forget``, then the retain term's roles when it has one (``retain_weight`` > 0)."""
        if isinstance(params, RetainParams) and params.retain_weight > 0:
            return ("forget", *params.retain_roles)
        return ("forget",)

    def encode(self, record: QARecord) -> Example:
        trained = self.trained_roles(self.params)
        if record.role not in trained:
            # A role the method ignores would be trained on with weight 0 and, in a micro-batch
            # of only such rows, leave nothing to backpropagate: refuse it up front.
            raise ConfigError(f"method '{self.name}' trains on roles {list(trained)}, but record "
                              f"'{record.id}' has role '{record.role}': drop the role from train.mix "
                              "or add it to the method's retain_roles (with retain_weight > 0)")
        example = with_role(self.encode_record(record), record)
        for prefix in self.reference_sequences:
            if record.role != "forget":
                example[f"{prefix}{REF_LOGPROB}"] = 0.0  # collate needs every key; retain rows never read it
            elif record.id not in self.reference_scores:
                raise HarmoniaError(f"record '{record.id}' has no reference log-prob; prepare() did not see it")
            else:
                example[f"{prefix}{REF_LOGPROB}"] = self.reference_scores[record.id][prefix]
        return example

    def reference_logprob(self, rows: Batch, prefix: str = "") -> torch.Tensor:
        """``log pi_ref(y|x)`` of the ``{prefix}`` sequences of forget ``rows``, ``[B]``: the value
        ``prepare`` stored in the examples, or a reference forward for a batch built without it."""
        stored = rows.get(f"{prefix}{REF_LOGPROB}")
        if stored is not None:
            return stored.float()
        with self.ctx.reference_model() as reference:
            return losses.sequence_logprob(*target_logits(reference, rows, prefix))

    def encode_record(self, record: QARecord) -> Example:
        """Token features of one record; by default its question and gold answer."""
        return encode_qa(record, self.ctx)

    def units(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = label_units(batch["labels"], batch["role_id"])
        if self.retain_roles:
            out.update(retained_units(batch["labels"], batch["role_id"], self.retain_roles))
        return out

    def loss(self, model: Any, batch: Batch) -> dict[str, Term]:
        p = self.params
        assert isinstance(p, ForgetParams)
        terms = {self.forget_name: _term(model, batch, ("forget",), self.forget_sum, self.forget_unit,
                                         p.forget_weight)}
        if self.retain_roles:
            assert isinstance(p, RetainParams)
            terms[self.retain_name] = _term(model, batch, self.retain_roles, self.retain_sum,
                                            self.retain_unit, p.retain_weight)
        return terms

    def forget_sum(self, model: Any, rows: Batch) -> torch.Tensor:
        """The forget term's sum over ``forget_unit`` on forget rows (at least one row)."""
        raise NotImplementedError

    def retain_sum(self, model: Any, rows: Batch) -> torch.Tensor:
        """The retain term's sum over ``retain_unit``: answer NLL of the retain rows."""
        return losses.nll_sum(*target_logits(model, rows))


def reference_batches(ctx: MethodContext, examples: dict[str, Example], *,
                      batch_size: int = 16) -> Iterator[tuple[Any, list[str], Batch]]:
    """``(reference, ids, batch)`` over ``examples`` in batches of similar length, the reference in
    eval mode and each batch on its device (consume it whole: the reference stays switched in until
    the last batch). The order, hence every value computed from it, does not depend on the number
    of processes."""
    order = sorted(examples, key=lambda i: (len(examples[i]["input_ids"]), i))
    with ctx.reference_model() as reference, eval_mode(reference):
        device = next(reference.parameters()).device
        for start in range(0, len(order), batch_size):
            part = order[start:start + batch_size]
            yield reference, part, {k: v.to(device) for k, v in collate([examples[i] for i in part]).items()}


@torch.no_grad()
def reference_logprobs(ctx: MethodContext, examples: dict[str, Example],
                       prefixes: Sequence[str]) -> dict[str, dict[str, float]]:
    """``{record id: {prefix: log pi_ref}}`` of the ``{prefix}`` sequences of ``examples``."""
    out: dict[str, dict[str, float]] = {i: {} for i in examples}
    for reference, part, batch in reference_batches(ctx, examples):
        for prefix in prefixes:
            scores = losses.sequence_logprob(*target_logits(reference, batch, prefix))
            for i, score in zip(part, scores.tolist(), strict=True):
                out[i][prefix] = score
    return out


def _term(model: Any, batch: Batch, roles: tuple[str, ...], fn: Callable[[Any, Batch], torch.Tensor],
          unit: str, weight: float) -> Term:
    rows = rows_with_roles(batch, roles)
    if rows["role_id"].numel() == 0:
        # no forward on an empty batch: a constant zero, which the engine sums and logs as is
        return Term(torch.zeros((), device=batch["role_id"].device), unit, weight)
    return Term(fn(model, rows), unit, weight)
