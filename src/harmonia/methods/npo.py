"""Negative Preference Optimization (NPO; Zhang et al. 2024, arXiv 2404.05868).

NPO is DPO with only a rejected answer: it lowers the forget answers' likelihood relative to
the frozen initial model and, unlike gradient ascent, stops pushing once the model is well
below it. Paper defaults: beta 0.1; ``npo_retain`` is the paper's NPO-RT, adding the retain
NLL with weight 1.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from harmonia.data.schema import ROLES
from harmonia.methods import losses
from harmonia.methods.base import register_method, target_logits
from harmonia.methods.forget_retain import Batch, ForgetParams, ForgetRetainMethod, RetainParams


class NPOParams(ForgetParams):
    beta: float = Field(0.1, gt=0, description="inverse temperature of the NPO loss")


class NPORetainParams(NPOParams, RetainParams):
    pass


@register_method
class NPO(ForgetRetainMethod):
    """Term ``npo`` summed over forget sequences, against the reference's sequence log-prob."""

    name = "npo"
    Params = NPOParams
    roles = ("forget",)
    default_mix: ClassVar[dict[str, float]] = {"forget": 1.0}
    needs_reference = True
    forget_name = "npo"
    forget_unit = "seqs:forget"
    reference_sequences = ("",)

    def forget_sum(self, model: Any, rows: Batch) -> torch.Tensor:
        p = self.params
        assert isinstance(p, NPOParams)
        policy = losses.sequence_logprob(*target_logits(model, rows))
        return losses.npo_sum(policy, self.reference_logprob(rows), beta=p.beta,
                              valid=losses.sequence_mask(rows["labels"]))


@register_method
class NPORetain(NPO):
    """NPO-RT: ``npo`` + ``retain_nll`` on the retain roles."""

    name = "npo_retain"
    Params = NPORetainParams
    roles = ROLES
    default_mix: ClassVar[dict[str, float]] = {"forget": 1.0, "retain": 1.0}
