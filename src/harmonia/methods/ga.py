"""Gradient ascent (GA): maximise the NLL of the forget answers.

The simplest unlearning baseline (e.g. Jang et al. 2023, arXiv 2210.01504; TOFU, Maini et al.
2024, arXiv 2401.06121): fine-tuning with the sign flipped. It is unbounded, so it soon destroys
the model; later methods (GradDiff, NPO) exist to bound or balance it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from harmonia.methods import losses
from harmonia.methods.base import register_method, target_logits
from harmonia.methods.forget_retain import Batch, ForgetParams, ForgetRetainMethod


@register_method
class GradientAscent(ForgetRetainMethod):
    """Term ``ga`` = minus the summed NLL of the forget answer tokens, per forget token."""

    name = "ga"
    Params = ForgetParams
    roles = ("forget",)
    default_mix: ClassVar[dict[str, float]] = {"forget": 1.0}
    forget_name = "ga"
    forget_unit = "tokens:forget"

    def forget_sum(self, model: Any, rows: Batch) -> torch.Tensor:
        return -losses.nll_sum(*target_logits(model, rows))
