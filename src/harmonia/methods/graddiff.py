"""Gradient difference (GradDiff): gradient ascent on forget answers, descent on retain answers.

Liu et al. 2022 (arXiv 2203.12817), used as a baseline in TOFU (Maini et al. 2024, arXiv
2401.06121) with equal weights. ``graddiff_kl`` keeps the retain predictions close to the
frozen initial model (TOFU's "KL" baseline) instead of fitting the retain answers.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from harmonia.data.schema import ROLES
from harmonia.methods import losses
from harmonia.methods.base import register_method, target_logits
from harmonia.methods.forget_retain import Batch, RetainParams
from harmonia.methods.ga import GradientAscent


@register_method
class GradDiff(GradientAscent):
    """``ga`` on forget tokens (weight ``forget_weight``) + ``retain_nll`` (``retain_weight``)."""

    name = "graddiff"
    Params = RetainParams
    roles = ROLES
    default_mix: ClassVar[dict[str, float]] = {"forget": 1.0, "retain": 1.0}


@register_method
class GradDiffKL(GradDiff):
    """GradDiff whose retain term is ``KL(reference || model)`` at the retain answer tokens."""

    name = "graddiff_kl"
    needs_reference = True
    retain_name = "retain_kl"

    def retain_sum(self, model: Any, rows: Batch) -> torch.Tensor:
        logits, labels = target_logits(model, rows)
        with self.ctx.reference_model() as reference:
            ref_logits, _ = target_logits(reference, rows)
        return losses.kl_sum(logits, ref_logits, labels)
