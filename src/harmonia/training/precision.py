"""Precision choices of the training loop that change its speed, not its numbers.

Under bf16 autocast every ``nn.Linear`` call casts its float32 weight to bfloat16. Autocast keeps
the cast of a *trainable* weight for the rest of the forward, but a frozen one (``requires_grad``
False: the layers below ``train_top_layers``, LoRA's base weights, a frozen reference model) is
cast again on every call of every micro-batch. Holding those weights in bfloat16 while training
gives each matmul exactly the values the cast would, without the copy: on the demo's CPU, 3-13%
of a step (docs/demo.md). The float32 originals are put back afterwards, so the model that
is saved, evaluated or trained next is the one that came in, bit for bit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def frozen_linear_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Frozen float32 parameters that only ``nn.Linear`` modules use.

    A weight another kind of module shares stays out: an input embedding tied to the LM head
    would look its vectors up in bfloat16 instead of float32, which autocast never does.
    """
    elsewhere = {id(p) for m in model.modules() if not isinstance(m, nn.Linear) for p in m.parameters(recurse=False)}
    found: dict[int, nn.Parameter] = {}
    for module in model.modules():
        if isinstance(module, nn.Linear):
            for p in module.parameters(recurse=False):
                if not p.requires_grad and p.dtype == torch.float32 and id(p) not in elsewhere:
                    found[id(p)] = p
    return list(found.values())


class FrozenCast:
    """Frozen linear weights held in a lower precision; :meth:`originals` puts the float32 ones
    back for a while (a checkpoint must hold the model as it came in, or a resumed run would
    continue from rounded weights)."""

    def __init__(self, parameters: list[nn.Parameter], dtype: torch.dtype) -> None:
        self._saved = [(p, p.data) for p in parameters]
        self._dtype = dtype
        self._cast()

    def __len__(self) -> int:
        return len(self._saved)

    def _cast(self) -> None:
        for p, data in self._saved:
            p.data = data.to(self._dtype)

    def restore(self) -> None:
        for p, data in self._saved:
            p.data = data

    @contextlib.contextmanager
    def originals(self) -> Iterator[None]:
        self.restore()
        try:
            yield
        finally:
            self._cast()


@contextlib.contextmanager
def frozen_linears_in(models: list[nn.Module], dtype: torch.dtype | None) -> Iterator[FrozenCast]:
    """Hold the frozen linear weights of ``models`` in ``dtype`` inside the block (None: cast
    nothing). The originals come back when the block ends, also when it raises."""
    parameters = [p for model in models for p in frozen_linear_parameters(model)] if dtype is not None else []
    cast = FrozenCast(parameters, dtype or torch.float32)
    try:
        yield cast
    finally:
        cast.restore()
