"""Pieces every hand-driven decoding loop needs: left-padded batches and a KV cache across transformers versions.

Used by the teacher (:mod:`harmonia.teacher.decoding`) and by evaluation's greedy generation
(:mod:`harmonia.evaluation.generation`), which both call the model's forward themselves.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int, device: Any) -> tuple[Tensor, Tensor]:
    """``(input_ids, attention_mask)`` of ``seqs`` padded on the left, so every row ends at the last column."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        if seq:
            ids[row, width - len(seq) :] = torch.as_tensor(list(seq))
            mask[row, width - len(seq) :] = 1
    return ids.to(device), mask.to(device)


def positions(mask: Tensor) -> Tensor:
    """Position ids of a left-padded batch: 0 at each row's first real token (as ``generate`` computes them)."""
    return (mask.cumsum(dim=1) - 1).clamp(min=0)


def _unwrapped(model: Any) -> Any:
    # DDP/FSDP wrappers (``.module``) and PEFT wrappers (``get_base_model``) forward **kwargs to the
    # model inside, so that model's signature says what is accepted.
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@functools.lru_cache(maxsize=64)
def _parameters_of(forward_cls: type) -> frozenset[str]:
    try:
        return frozenset(inspect.signature(forward_cls.forward).parameters)
    except (TypeError, ValueError):
        return frozenset()


def _forward_parameters(model: Any) -> frozenset[str]:
    return _parameters_of(type(_unwrapped(model)))


def cache_argument(model: Any) -> str:
    """Name of the KV-cache argument: ``cache`` in recent transformers, ``past_key_values`` before."""
    return "cache" if "cache" in _forward_parameters(model) else "past_key_values"


def accepts_logits_to_keep(model: Any) -> bool:
    """Whether the forward can skip the LM head on all but the last positions (a large saving on prefill)."""
    return "logits_to_keep" in _forward_parameters(model)


def returned_cache(out: Any) -> Any:
    """The KV cache a forward returned, under either transformers name."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def preallocated_cache(model: Any, capacity: int) -> Any:
    """A KV cache whose layers write into buffers of ``capacity`` positions, or None where unsupported.

    transformers' dynamic layers concatenate every step's key and value onto the whole cache, which
    copies it each step: about a tenth of a batched decoding step on CPU. These layers copy only the
    new positions and hand attention views of the filled part, so attention reads the same numbers.
    Only a cache made purely of plain full-attention layers is replaced (no sliding window, no
    linear attention); any other model keeps the cache it builds itself.
    """
    try:
        from transformers.cache_utils import DynamicCache, DynamicLayer
    except ImportError:  # transformers before per-layer caches
        return None
    cache = DynamicCache(config=model.config)
    if not cache.layers or any(type(layer) is not DynamicLayer for layer in cache.layers):
        return None
    cache.layers = [_preallocated_layer_class()(capacity) for _ in cache.layers]
    return cache


@functools.cache  # one class, built on first use so importing this module does not import transformers
def _preallocated_layer_class() -> type:
    from transformers.cache_utils import DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        """A dynamic layer over buffers ``[batch, heads, capacity, head_dim]``; keys and values view the filled part."""

        def __init__(self, capacity: int) -> None:
            super().__init__()
            self.capacity = capacity
            self.length = 0

        def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
            super().lazy_initialization(key_states, value_states)
            self.key_buffer = key_states.new_empty((*key_states.shape[:2], self.capacity, key_states.shape[3]))
            self.value_buffer = value_states.new_empty((*value_states.shape[:2], self.capacity, value_states.shape[3]))

        def update(self, key_states: Tensor, value_states: Tensor, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self.length + key_states.shape[-2]
            if end > self.capacity:
                raise ValueError(f"KV cache of {self.capacity} positions cannot hold {end}")
            self.key_buffer[:, :, self.length : end] = key_states
            self.value_buffer[:, :, self.length : end] = value_states
            self.length = end
            self._expose()
            return self.keys, self.values

        def batch_select_indices(self, indices: Tensor) -> None:
            if self.is_initialized:
                self.key_buffer, self.value_buffer = self.key_buffer[indices], self.value_buffer[indices]
                self._expose()

        def _expose(self) -> None:
            self.keys = self.key_buffer[:, :, : self.length]
            self.values = self.value_buffer[:, :, : self.length]

    return PreallocatedLayer
