"""Supervised fine-tuning on QA answers: how targets are prepared (TOFU / MUSE protocol)."""

from __future__ import annotations

from typing import Any

import torch

from harmonia.data.schema import QARecord
from harmonia.methods import losses
from harmonia.methods.base import Example, Method, Term, register_method, target_logits
from harmonia.methods.encoding import encode_qa, with_role


@register_method
class SFT(Method):
    """Mean token NLL of the answers of every record, whatever its role."""

    name = "sft"

    def encode(self, record: QARecord) -> Example:
        return with_role(encode_qa(record, self.ctx), record)

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> dict[str, Term]:
        return {"nll": Term(losses.nll_sum(*target_logits(model, batch)), unit="tokens")}
