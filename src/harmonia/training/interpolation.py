"""Weight-space interpolation of a trained model with its start (WiSE-FT, Wortsman et al., 2022).

``train.update_scale = s`` keeps the fraction ``s`` of what training changed: every trained
weight becomes ``start + s * (trained - start)``. WiSE-FT found the interpolated model more robust
to distribution shift than the fine-tuned one; in unlearning it gives back part
of the collateral damage on what should be kept while the forgetting, learned sharply, survives
(docs/demo.md, session 18). It costs no training: the demo's 30 steps stay 30.

For a LoRA adapter the interpolation of the merged weights ``W + B A`` is the adapter with ``B``
scaled by ``s`` and ``A`` as trained, which holds when ``B`` starts at zero (peft's default).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from harmonia.errors import ConfigError


def _is_lora(name: str, kind: str) -> bool:
    return f".lora_{kind}." in name or name.endswith(f".lora_{kind}")


def start_weights(model: Any) -> dict[str, Tensor]:
    """A copy of the weights :func:`interpolate_` will move: the trainable ones, except LoRA ``A``.

    Raises if a LoRA ``B`` does not start at zero, where scaling it is not an interpolation.
    """
    start = {}
    for name, param in model.named_parameters():
        if not param.requires_grad or _is_lora(name, "A"):
            continue
        if _is_lora(name, "B") and bool(param.detach().any()):
            raise ConfigError(f"train.update_scale: the LoRA weight {name} does not start at zero, so scaling "
                              "the adapter would not interpolate the merged weights; use update_scale 1")
        start[name] = param.detach().to("cpu", copy=True)  # off the accelerator: a copy of every trained weight
    return start


@torch.no_grad()
def interpolate_(model: Any, start: dict[str, Tensor], scale: float) -> int:
    """Set each weight named in ``start`` to ``start + scale * (weight - start)``; returns how many."""
    params = dict(model.named_parameters())
    missing = sorted(set(start) - set(params))
    if missing:
        raise ValueError(f"interpolation: the model has no parameters {missing[:3]}")
    for name, begin in start.items():
        param = params[name]
        begin = begin.to(param.device)
        param.copy_(begin + scale * (param - begin))
    return len(start)


__all__ = ["interpolate_", "start_weights"]
