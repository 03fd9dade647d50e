"""Batched, deterministic greedy generation with left padding and stop strings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

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
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with progress_bar(description, total=len(prompts), enabled=progress) as advance:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            width = max(len(encoded[i]) for i in idx)
            ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                seq = encoded[i]
                ids[row, width - len(seq) :] = torch.tensor(seq)
                mask[row, width - len(seq) :] = 1
            out = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                pad_token_id=pad_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            for row, i in enumerate(idx):
                text = tokenizer.decode(out[row, width:], skip_special_tokens=True)
                outputs[i] = truncate_at_stop(text, stop)
            advance(len(idx))
    return outputs
