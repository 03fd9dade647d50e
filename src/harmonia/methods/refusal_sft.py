"""Refusal SFT (TOFU's "I don't know" baseline; IdkNLL in OpenUnlearning).

Maini et al. 2024 (TOFU, arXiv 2401.06121): fine-tune the forget questions onto refusal answers
from ``idontknow.jsonl``, with the retain NLL on retain records (both weight 1) so the model
does not refuse everything.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from harmonia.data.schema import ROLES, QARecord
from harmonia.methods import losses
from harmonia.methods.base import Example, MethodContext, MethodParams, register_method, target_logits
from harmonia.methods.encoding import encode_qa
from harmonia.methods.forget_retain import Batch, ForgetRetainMethod
from harmonia.methods.refusals import RefusalParams, load_refusals, pick_refusal


@register_method
class RefusalSFT(ForgetRetainMethod):
    """Term ``refusal_nll``: NLL of each forget question's refusal, plus ``retain_nll``."""

    name = "refusal_sft"
    Params = RefusalParams
    roles = ROLES
    default_mix: ClassVar[dict[str, float]] = {"forget": 1.0, "retain": 1.0}
    forget_name = "refusal_nll"
    forget_unit = "tokens:forget"

    def __init__(self, params: MethodParams, ctx: MethodContext) -> None:
        super().__init__(params, ctx)
        assert isinstance(params, RefusalParams)
        self.refusals = load_refusals(params.refusals)

    def encode_record(self, record: QARecord) -> Example:
        if record.role == "forget":
            return encode_qa(record, self.ctx, answer=pick_refusal(record.id, self.refusals))
        return encode_qa(record, self.ctx)

    def forget_sum(self, model: Any, rows: Batch) -> torch.Tensor:
        return losses.nll_sum(*target_logits(model, rows))
