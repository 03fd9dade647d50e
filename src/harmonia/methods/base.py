"""What an unlearning method is: a small class that encodes records and defines its loss.

The engine (``harmonia.training``) owns everything else: batching, the optimiser, accumulation,
processes, checkpoints, logging. A method declares the data roles it trains on and whether it
needs a frozen reference model; it never touches the optimiser.

Loss terms are *sums* over units (target tokens, sequences, distilled positions) of one role; the
engine divides each by the count of those units in the whole global batch (all micro-batches, all
processes), so the loss does not depend on how the batch is split or padded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from harmonia.data.schema import ROLES, QARecord, Role
from harmonia.errors import ConfigError
from harmonia.methods.losses import IGNORE_INDEX
from harmonia.models.decoding import accepts_logits_to_keep

Example = dict[str, Any]
"""Per-example features: token-aligned lists (``input_ids``, ``labels``, ...) and scalars."""


class MethodParams(BaseModel):
    """Base of each method's hyperparameters; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class Term:
    """One loss term: a sum over ``unit`` (e.g. ``tokens:forget``) and its weight in the total."""

    total: torch.Tensor
    unit: str
    weight: float = 1.0


@dataclass
class MethodContext:
    """What a method may use: the tokenizer, settings, and (lazily) a frozen reference model."""

    tokenizer: Any
    max_length: int
    reference: Callable[[], contextlib.AbstractContextManager[Any]] | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @contextlib.contextmanager
    def reference_model(self) -> Iterator[Any]:
        """The frozen initial model: the base with the LoRA adapter disabled, or a frozen copy."""
        if self.reference is None:
            raise RuntimeError("this method did not declare needs_reference = True")
        with self.reference() as model, torch.no_grad():
            yield model


class Method:
    """Base class. Subclasses set ``name``, ``Params``, ``roles`` and implement ``encode``/``loss``."""

    name: ClassVar[str]
    Params: ClassVar[type[MethodParams]] = MethodParams
    roles: ClassVar[tuple[Role, ...]] = ROLES
    default_mix: ClassVar[dict[str, float]] = {}
    needs_reference: ClassVar[bool] = False

    def __init__(self, params: MethodParams, ctx: MethodContext) -> None:
        self.params = params
        self.ctx = ctx

    @classmethod
    def trained_roles(cls, params: MethodParams) -> tuple[Role, ...]:
        """The roles this method trains on with these params (by default every role it declares)."""
        return cls.roles

    def configure_trainable(self, model: Any) -> None:
        """Hook run once after the engine chose what trains (LoRA, top layers); may freeze more.

        Most methods train whatever the run configures; RMU trains only named weights.
        """
        return None

    @property
    def reference_in_loss(self) -> bool:
        """Whether ``loss`` runs the reference model. When only ``prepare`` does (a cached teacher,
        precomputed reference log-probs), the engine frees its frozen copy after ``prepare``."""
        return self.needs_reference

    def prepare(self, records: list[QARecord]) -> list[QARecord]:
        """Hook run once before training (e.g. teacher targets); returns the records to train on."""
        return records

    def encode(self, record: QARecord) -> Example:
        """Token features of one record (one example per record; pairs live in one example)."""
        raise NotImplementedError

    def units(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Counts of the units loss terms are normalised by, from the batch alone (no forward).

        The default counts target tokens and sequences of ``labels``, overall (``tokens``,
        ``seqs``) and per role (``tokens:forget``, ``seqs:retain``, ...).
        """
        return label_units(batch["labels"], batch["role_id"])

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> dict[str, Term]:
        raise NotImplementedError


_REGISTRY: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    if cls.name in _REGISTRY:
        raise ValueError(f"method '{cls.name}' registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    import harmonia.methods  # noqa: F401  (registers the built-in methods)

    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown method '{name}'; available: {', '.join(sorted(_REGISTRY))}") from None


def list_methods() -> list[str]:
    import harmonia.methods  # noqa: F401

    return sorted(_REGISTRY)


def build_params(cls: type[Method], params: dict[str, Any]) -> MethodParams:
    from pydantic import ValidationError

    from harmonia.config import validation_message

    try:
        return cls.Params.model_validate(params)
    except ValidationError as exc:
        raise ConfigError(validation_message(exc, f"method '{cls.name}' params")) from None


def label_units(labels: torch.Tensor, role_id: torch.Tensor, prefix: str = "") -> dict[str, torch.Tensor]:
    from harmonia.methods.losses import sequence_mask, target_mask

    tokens = target_mask(labels).sum(dim=1)
    seqs = sequence_mask(labels).long()
    out = {f"{prefix}tokens": tokens.sum(), f"{prefix}seqs": seqs.sum()}
    for i, role in enumerate(ROLES):
        rows = role_id == i
        out[f"{prefix}tokens:{role}"] = tokens[rows].sum()
        out[f"{prefix}seqs:{role}"] = seqs[rows].sum()
    return out


def select_rows(batch: dict[str, torch.Tensor], role: str) -> dict[str, torch.Tensor]:
    """The rows of a collated batch that hold records of ``role``."""
    rows = batch["role_id"] == ROLES.index(role)  # type: ignore[arg-type]
    return {k: v[rows] for k, v in batch.items()}


def causal_lm_logits(model: Any, batch: dict[str, torch.Tensor], prefix: str = "", *,
                     from_column: int = 0, to_column: int | None = None) -> torch.Tensor:
    """Logits ``[B, to_column - from_column, V]`` of ``{prefix}input_ids`` under
    ``{prefix}attention_mask``, for the columns ``from_column`` to ``to_column`` (exclusive).

    The model projects only those columns onto the vocabulary (transformers' ``logits_to_keep``):
    a prompt the loss never reads (the teacher's instruction, an MMLU question) then costs no
    vocabulary projection, the largest matmul of a small model, and no ``[B, T, V]`` buffer. The
    columns after ``to_column`` are not run at all: a causal model's earlier outputs do not
    depend on them, and in a micro-batch that holds one long record they are mostly padding.
    """
    ids = batch[f"{prefix}input_ids"][:, :to_column]
    keep = ids.shape[1] - from_column
    extra = {"logits_to_keep": keep} if from_column > 0 and accepts_logits_to_keep(model) else {}
    out = model(input_ids=ids, attention_mask=batch[f"{prefix}attention_mask"][:, :to_column], use_cache=False,
                **extra)
    return out.logits[:, -keep:]


def marked_columns(mask: torch.Tensor) -> tuple[int, int]:
    """``(first, end)``: the first column any row of ``mask [B, T]`` marks and one past the last
    (``(T - 1, T)`` when none does)."""
    columns = mask.any(dim=0).nonzero()
    if not columns.numel():
        return mask.shape[1] - 1, mask.shape[1]
    return int(columns[0]), int(columns[-1]) + 1


def target_logits(model: Any, rows: dict[str, torch.Tensor], prefix: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, labels)`` of ``{prefix}labels``' sequences from the column before their first target
    token to their last one (see :func:`causal_lm_logits`); once shifted they pair exactly as the
    full sequences do."""
    labels = rows[f"{prefix}labels"]
    first, end = marked_columns(labels != IGNORE_INDEX)
    start = max(first - 1, 0)
    return causal_lm_logits(model, rows, prefix, from_column=start, to_column=end), labels[:, start:end]


def masked_logits(model: Any, batch: dict[str, torch.Tensor], mask: torch.Tensor,
                  prefix: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, mask)`` from the first column ``mask`` marks to its last: the rows
    ``gather_positions(logits, mask)`` reads are those of the full sequences."""
    start, end = marked_columns(mask)
    return causal_lm_logits(model, batch, prefix, from_column=start, to_column=end), mask[:, start:end]
