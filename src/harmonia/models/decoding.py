"""Hand-driven decoding: left-padded batches, a KV cache across transformers versions, and greedy
decoding over it.

:func:`greedy_tokens` is greedy decoding of our own: a row that emits the end-of-turn token
leaves the batch (its cache rows are dropped), so late steps compute only the rows still
writing instead of padding finished ones as ``model.generate`` does. Its tokens are those of
``model.generate(do_sample=False)`` (``tests/test_generation.py``) when :func:`plain_greedy`
holds. Used by the teacher (:mod:`harmonia.teacher.decoding`) and by evaluation's generation
(:mod:`harmonia.evaluation.generation`).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[Any]:
    """Run ``model`` in eval mode (no dropout) and restore its previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


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


# Generation-config fields that change greedy tokens in ``model.generate``, with their neutral value.
_PROCESSOR_FIELDS: dict[str, Any] = {
    "repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
    "min_length": 0, "min_new_tokens": 0, "guidance_scale": 1.0, "bad_words_ids": None, "sequence_bias": None,
    "forced_bos_token_id": None, "forced_eos_token_id": None, "exponential_decay_length_penalty": None,
    "suppress_tokens": None, "begin_suppress_tokens": None, "watermarking_config": None,
}


def plain_greedy(model: Any) -> bool:
    """Whether greedy decoding of ``model`` is the argmax of its logits, so our own loop may run it."""
    config = getattr(model, "generation_config", None)
    if config is None or not hasattr(model, "config"):
        return False
    return all(getattr(config, name, None) in (None, neutral) for name, neutral in _PROCESSOR_FIELDS.items())


@dataclass
class _Live:
    """The rows still generating: their input row, next input token, position, attention mask and cache."""

    rows: list[int]
    tokens: Tensor
    position: Tensor
    mask: Tensor | None
    cache: Any

    def keep(self, index: Tensor) -> None:
        self.rows = [self.rows[k] for k in index.tolist()]
        self.tokens, self.position = self.tokens[index], self.position[index]
        self.mask = None if self.mask is None else self.mask[index]
        self.cache.batch_select_indices(index)

    def step(self, model: Any, cache_arg: str) -> Tensor:
        """Feed each row's last token; return the logits of the next one ``[rows, V]``."""
        self.position = self.position + 1
        if self.mask is not None:
            self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], dim=1)
        out = model(input_ids=self.tokens[:, None], attention_mask=self.mask, position_ids=self.position,
                    use_cache=True, **{cache_arg: self.cache})
        self.cache = returned_cache(out)
        return out.logits[:, -1]


def greedy_tokens(model: Any, ids: Tensor, mask: Tensor, *, max_new_tokens: int, eos_id: int | None,
                  prefix: Sequence[int] = ()) -> list[list[int]]:
    """New greedy token ids of each left-padded row, ending with ``eos_id`` where the row produced it.

    ``prefix``: tokens every row starts with, left out of ``ids``. They run once, as a batch of one,
    and their keys and values are copied to every row: a jailbreak template of a thousand tokens
    wrapped around forty questions is computed once instead of forty times. Row ``i`` then reads
    ``prefix + ids[i]`` (its padding masked, between the two) at the positions it would have alone.
    """
    cache_arg = cache_argument(model)
    extra: dict[str, Any] = {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}
    cache = preallocated_cache(model, len(prefix) + ids.shape[1] + max_new_tokens)
    if prefix:
        head = torch.as_tensor([list(prefix)], device=ids.device)
        out = model(input_ids=head, position_ids=positions(torch.ones_like(head)), use_cache=True,
                    **extra, **({cache_arg: cache} if cache is not None else {}))
        cache = returned_cache(out)
        cache.batch_select_indices(torch.zeros(ids.shape[0], dtype=torch.long, device=ids.device))
        mask = torch.cat([mask.new_ones((ids.shape[0], len(prefix))), mask], dim=1)
    pos = positions(mask)[:, len(prefix) :]
    # generate drops an all-ones mask as well: the attention then takes its unmasked (causal) path.
    attn = None if bool(mask.all()) else mask
    if cache is not None:
        extra[cache_arg] = cache
    out = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True, **extra)
    live = _Live(list(range(ids.shape[0])), ids[:, -1], pos[:, -1:], attn, returned_cache(out))
    logits = out.logits[:, -1]
    generated: list[list[int]] = [[] for _ in live.rows]
    for step in range(max_new_tokens):
        # float32 argmax, as generate takes it (first index on ties).
        live.tokens = logits.float().argmax(dim=-1)
        for row, token in zip(live.rows, live.tokens.tolist(), strict=True):
            generated[row].append(token)
        if eos_id is not None:
            unfinished = live.tokens != eos_id
            if not bool(unfinished.any()):
                break
            if not bool(unfinished.all()):
                live.keep(unfinished.nonzero().squeeze(1))
        if step + 1 < max_new_tokens:
            logits = live.step(model, cache_arg)
    return generated
