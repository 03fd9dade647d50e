"""IdkDPO: DPO preferring a refusal over the gold answer on forget questions.

TOFU's preference-optimisation baseline (Maini et al. 2024, arXiv 2401.06121), run as DPO with
a reference model in the NPO paper (Zhang et al. 2024, arXiv 2404.05868, "IdkPO"): chosen = a
refusal from ``idontknow.jsonl``, rejected = the gold answer, beta 0.1, plus the retain NLL
(weight 1; 0 drops it).

Each forget example holds the pair: the rejected (gold) sequence under the plain keys, which
the engine and the default unit counts already read, and the chosen one under ``chosen_``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from harmonia.data.schema import ROLES, QARecord
from harmonia.methods import losses
from harmonia.methods.base import Example, MethodContext, MethodParams, register_method, target_logits
from harmonia.methods.encoding import encode_qa
from harmonia.methods.forget_retain import Batch, ForgetRetainMethod
from harmonia.methods.refusals import RefusalParams, load_refusals, pick_refusal

CHOSEN = "chosen_"


class IdkDPOParams(RefusalParams):
    beta: float = Field(0.1, gt=0)


def valid_pairs(batch: Batch) -> torch.Tensor:
    """Bool ``[B]``: rows whose chosen and rejected answers both have target tokens."""
    return losses.sequence_mask(batch["labels"]) & losses.sequence_mask(batch[f"{CHOSEN}labels"])


@register_method
class IdkDPO(ForgetRetainMethod):
    """Term ``idkdpo`` summed over forget pairs (unit ``pairs:forget``), plus ``retain_nll``."""

    name = "idkdpo"
    Params = IdkDPOParams
    roles = ROLES
    default_mix: ClassVar[dict[str, float]] = {"forget": 1.0, "retain": 1.0}
    needs_reference = True
    forget_name = "idkdpo"
    forget_unit = "pairs:forget"
    reference_sequences = (CHOSEN, "")

    def __init__(self, params: MethodParams, ctx: MethodContext) -> None:
        super().__init__(params, ctx)
        assert isinstance(params, IdkDPOParams)
        self.refusals = load_refusals(params.refusals)

    def encode_record(self, record: QARecord) -> Example:
        example = encode_qa(record, self.ctx)
        if record.role == "forget":
            chosen = encode_qa(record, self.ctx, answer=pick_refusal(record.id, self.refusals), prefix=CHOSEN)
        else:
            # collate needs the same keys in every example; retain rows never read these
            chosen = {f"{CHOSEN}{k}": list(v) for k, v in example.items()}
        return example | chosen

    def units(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = super().units(batch)
        out["pairs:forget"] = (valid_pairs(batch) & (batch["role_id"] == ROLES.index("forget"))).sum()
        return out

    def forget_sum(self, model: Any, rows: Batch) -> torch.Tensor:
        p = self.params
        assert isinstance(p, IdkDPOParams)
        chosen = losses.sequence_logprob(*target_logits(model, rows, CHOSEN))
        rejected = losses.sequence_logprob(*target_logits(model, rows))
        return losses.dpo_sum(chosen, rejected, self.reference_logprob(rows, CHOSEN), self.reference_logprob(rows),
                              beta=p.beta, valid=valid_pairs(rows))
