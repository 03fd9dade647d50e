"""Batched, deterministic greedy generation with left padding and stop strings.

Transformers models decode in a greedy loop of our own over the KV cache: a row that emits the
end-of-turn token leaves the batch (its cache rows are dropped), so late steps compute only the
rows still writing instead of padding finished ones as ``model.generate`` does. The tokens are
those of ``model.generate(do_sample=False)`` (``tests/test_generation.py``). A model whose
generation config adds logits processors (a repetition penalty, banned words, ...) and a model
that is not a transformers model (the test stubs) go through ``model.generate``, which applies them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from harmonia.models.decoding import (
    accepts_logits_to_keep,
    cache_argument,
    left_pad,
    positions,
    preallocated_cache,
    returned_cache,
)
from harmonia.progress import progress_bar

# Generation-config fields that change greedy tokens in ``model.generate``, with their neutral value.
_PROCESSOR_FIELDS: dict[str, Any] = {
    "repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
    "min_length": 0, "min_new_tokens": 0, "guidance_scale": 1.0, "bad_words_ids": None, "sequence_bias": None,
    "forced_bos_token_id": None, "forced_eos_token_id": None, "exponential_decay_length_penalty": None,
    "suppress_tokens": None, "begin_suppress_tokens": None, "watermarking_config": None,
}


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """Cut ``text`` at the earliest occurrence of any stop string."""
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]


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


def greedy_tokens(model: Any, ids: Tensor, mask: Tensor, *, max_new_tokens: int, eos_id: int | None) -> list[list[int]]:
    """New greedy token ids of each left-padded row, ending with ``eos_id`` where the row produced it."""
    pos = positions(mask)
    # generate drops an all-ones mask as well: the attention then takes its unmasked (causal) path.
    attn = None if bool(mask.all()) else mask
    cache_arg = cache_argument(model)
    extra: dict[str, Any] = {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}
    cache = preallocated_cache(model, ids.shape[1] + max_new_tokens)
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


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 16,
    stop: Sequence[str] = (),
    progress: bool = True,
    description: str = "generating",
) -> list[str]:
    """Greedy continuations of already-rendered prompts, in input order.

    Prompts are sorted by length so each batch pads little; the model's end-of-turn token ends a
    sequence, ``stop`` strings cut the decoded text afterwards.
    """
    if not prompts:
        return []
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: (len(encoded[i]), i))
    outputs: list[str] = [""] * len(prompts)
    device = next(model.parameters()).device
    eos_id = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    own_loop = plain_greedy(model)
    with progress_bar(description, total=len(prompts), enabled=progress) as advance:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            ids, mask = left_pad([encoded[i] for i in idx], pad_id, device)
            if own_loop:
                new = greedy_tokens(model, ids, mask, max_new_tokens=max_new_tokens, eos_id=eos_id)
            else:
                out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                     do_sample=False, num_beams=1, pad_token_id=pad_id, eos_token_id=eos_id)
                new = out[:, ids.shape[1] :].tolist()
            for row, i in enumerate(idx):
                outputs[i] = truncate_at_stop(tokenizer.decode(new[row], skip_special_tokens=True), stop)
            advance(len(idx))
    return outputs
