"""SimNPO (Fan et al. 2024, arXiv 2410.07163): reference-free, length-normalised NPO.

NPO's reference model favours short forget answers; SimNPO replaces ``log(pi/pi_ref)`` by the
mean token log-prob ``log pi(y|x) / |y|`` plus a margin ``gamma`` (see
:func:`harmonia.methods.losses.simnpo_sum` for the sign convention of gamma). Defaults are the
authors' TOFU setting as listed by OpenUnlearning (configs/trainer/SimNPO.yaml): beta 4.5,
gamma 0, forget weight 0.125 (their ``npo_coeff``) and retain NLL weight 1; set
``retain_weight`` 0 (and ``train.mix`` to forget only) for the forget term alone.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from harmonia.data.schema import ROLES
from harmonia.methods import losses
from harmonia.methods.base import register_method, target_logits
from harmonia.methods.forget_retain import Batch, ForgetRetainMethod, RetainParams


class SimNPOParams(RetainParams):
    beta: float = Field(4.5, gt=0)
    gamma: float = 0.0
    forget_weight: float = Field(0.125, gt=0)


@register_method
class SimNPO(ForgetRetainMethod):
    """Term ``simnpo`` summed over forget sequences, plus ``retain_nll``."""

    name = "simnpo"
    Params = SimNPOParams
    roles = ROLES
    default_mix: ClassVar[dict[str, float]] = {"forget": 1.0, "retain": 1.0}
    forget_name = "simnpo"
    forget_unit = "seqs:forget"

    def forget_sum(self, model: Any, rows: Batch) -> torch.Tensor:
        p = self.params
        assert isinstance(p, SimNPOParams)
        avg = losses.sequence_avg_logprob(*target_logits(model, rows))
        return losses.simnpo_sum(avg, beta=p.beta, gamma=p.gamma, valid=losses.sequence_mask(rows["labels"]))
