"""Batched, deterministic greedy generation with left padding and stop strings.

Transformers models decode in the greedy loop of :func:`harmonia.models.decoding.greedy_tokens`,
which drops finished rows from the batch; a model whose generation config adds logits
processors (a repetition penalty, banned words, ...) and a model that is not a transformers model
(the test stubs) go through ``model.generate``, which applies them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from harmonia.models.decoding import greedy_tokens, left_pad, plain_greedy
from harmonia.progress import progress_bar


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """Cut ``text`` at the earliest occurrence of any stop string."""
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]


def shared_prefix(seqs: Sequence[Sequence[int]]) -> list[int]:
    """The leading tokens all of ``seqs`` share, leaving every sequence at least one token of its own
    (the first forward of a row needs an input)."""
    longest = min(len(seq) for seq in seqs) - 1
    first = seqs[0]
    end = 0
    while end < longest and all(seq[end] == first[end] for seq in seqs):
        end += 1
    return list(first[:end])


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
    share_prefix: bool = False,
) -> list[str]:
    """Greedy continuations of already-rendered prompts, in input order.

    Prompts are sorted by length so each batch pads little; the model's end-of-turn token ends a
    sequence, ``stop`` strings cut the decoded text afterwards. With ``share_prefix`` the tokens
    that every prompt of a batch starts with run once for the batch (a long template around short
    questions; :func:`harmonia.models.decoding.greedy_tokens`); off by default, so the rows of
    other evaluations are computed exactly as before.
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
            seqs = [encoded[i] for i in idx]
            prefix = shared_prefix(seqs) if share_prefix and own_loop else []
            ids, mask = left_pad([seq[len(prefix) :] for seq in seqs], pad_id, device)
            if own_loop:
                new = greedy_tokens(model, ids, mask, max_new_tokens=max_new_tokens, eos_id=eos_id, prefix=prefix)
            else:
                out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                     do_sample=False, num_beams=1, pad_token_id=pad_id, eos_token_id=eos_id)
                new = out[:, ids.shape[1] :].tolist()
            for row, i in enumerate(idx):
                outputs[i] = truncate_at_stop(tokenizer.decode(new[row], skip_special_tokens=True), stop)
            advance(len(idx))
    return outputs
