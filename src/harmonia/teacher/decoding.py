"""How the teacher answers: greedy token ids, optionally amplified against the plain model.

Distillation needs the teacher's response as token ids (both sides are teacher-forced on exactly
these ids), and the amplified teacher (:class:`Amplification`) needs the plain model's next-token
logits at every step. The plain teacher decodes in our own greedy loop
(:func:`harmonia.models.decoding.greedy_tokens`); the amplified one through ``model.generate``
with a logits processor that keeps its own cache for the plain context.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from harmonia.models.decoding import cache_argument, greedy_tokens, left_pad, plain_greedy, positions, returned_cache
from harmonia.progress import progress_bar
from harmonia.teacher.config import TeacherConfig


def amplify(z_instr: Tensor, z_plain: Tensor, alpha: float, plausibility: float = 0.0) -> Tensor:
    """Amplified teacher logits ``z_instr + alpha * (z_instr - z_plain)`` (METHOD.md Part 2 (c)).

    With ``plausibility`` > 0 only the tokens the instructed model itself finds plausible,
    ``p_instr(v) >= plausibility * max_u p_instr(u)``, are amplified; every other token keeps
    ``z_instr``. (ours) This is contrastive decoding's adaptive plausibility constraint (Li et al.,
    2023): a token that both contexts find unlikely, but the plain one more so, otherwise gets a
    large amplified logit. On the 135M demo target, alpha 2 without it made the amplified teacher
    prefer such fragments ("I'mortune") and students distilled from it repeat them (docs/demo.md).
    """
    if z_instr.shape != z_plain.shape:
        raise ValueError(f"instructed {tuple(z_instr.shape)} and plain {tuple(z_plain.shape)} logits differ")
    if not 0.0 <= plausibility < 1.0:
        raise ValueError(f"plausibility must be in [0, 1), got {plausibility}")
    boost = alpha * (z_instr - z_plain)
    if plausibility > 0.0:
        # p(v) >= beta * max p  <=>  z(v) >= max z + log(beta): no softmax needed
        floor = z_instr.amax(dim=-1, keepdim=True) + math.log(plausibility)
        boost = torch.where(z_instr >= floor, boost, torch.zeros_like(boost))
    return z_instr + boost


@dataclass(frozen=True)
class Amplification:
    """The amplified teacher's settings (``teacher.alpha``, ``teacher.plausibility``); see :func:`amplify`."""

    alpha: float
    plausibility: float = 0.0

    def __call__(self, z_instr: Tensor, z_plain: Tensor) -> Tensor:
        return amplify(z_instr, z_plain, self.alpha, self.plausibility)

    def key(self) -> tuple[float, ...]:
        """What cache keys record: the alpha alone while the constraint is off (older caches match)."""
        return (self.alpha,) if self.plausibility == 0.0 else (self.alpha, self.plausibility)

    @classmethod
    def of(cls, config: TeacherConfig) -> Amplification | None:
        """The teacher's amplification, or None unless its mode is ``amplified``."""
        return cls(config.alpha, config.plausibility) if config.mode == "amplified" else None


class AmplifyProcessor:
    """Logits processor: replaces the instructed logits by the amplified ones at every step.

    It runs the plain prompts once (with a KV cache) and then feeds each generated token, so
    both contexts are continued by the same tokens, as in teacher forcing.
    """

    def __init__(self, model: Any, plain_ids: Tensor, plain_mask: Tensor, amplification: Amplification) -> None:
        self.model = model
        self.ids = plain_ids
        self.mask = plain_mask
        self.amplification = amplification
        self.cache: Any = None
        self.last_pos: Tensor | None = None
        self.steps = 0
        self.cache_arg = cache_argument(model)

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        if self.cache is None:
            pos = positions(self.mask)
            out = self.model(input_ids=self.ids, attention_mask=self.mask, position_ids=pos, use_cache=True)
            self.last_pos = pos[:, -1:]
        else:
            assert self.last_pos is not None
            self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], dim=1)
            self.last_pos = self.last_pos + 1
            out = self.model(
                input_ids=input_ids[:, -1:],
                attention_mask=self.mask,
                position_ids=self.last_pos,
                use_cache=True,
                **{self.cache_arg: self.cache},
            )
        self.cache = returned_cache(out)
        self.steps += 1
        plain = out.logits[:, -1].to(scores.dtype)
        return self.amplification(scores, plain)


def _encode(tokenizer: Any, prompts: Sequence[str]) -> list[list[int]]:
    return [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]


@torch.no_grad()
def greedy_ids(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    plain_prompts: Sequence[str] | None = None,
    amplification: Amplification | None = None,
    max_new_tokens: int = 48,
    batch_size: int = 16,
    progress: bool = False,
) -> list[list[int]]:
    """Greedy response ids for each prompt, in input order, ending with EOS when the model stopped.

    With ``plain_prompts`` (one per prompt) the next token is the argmax of the ``amplification``.
    Prompts are sorted by length so batches pad little.
    """
    if plain_prompts is not None and len(plain_prompts) != len(prompts):
        raise ValueError("plain_prompts must have one entry per prompt")
    if (plain_prompts is None) != (amplification is None):
        raise ValueError("amplified decoding needs both plain_prompts and an amplification")
    if not prompts:
        return []
    from transformers import LogitsProcessorList

    encoded = _encode(tokenizer, prompts)
    plain = _encode(tokenizer, plain_prompts) if plain_prompts is not None else None
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: (len(encoded[i]), i))
    out: list[list[int]] = [[] for _ in prompts]
    with progress_bar("teacher responses", total=len(prompts), enabled=progress) as advance:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            ids, mask = left_pad([encoded[i] for i in idx], pad, device)
            if plain is None and plain_greedy(model):
                # the plain teacher: our loop, which drops finished rows (the same tokens as generate)
                new_ids = greedy_tokens(model, ids, mask, max_new_tokens=max_new_tokens, eos_id=eos)
            else:
                processors = LogitsProcessorList()
                if plain is not None:
                    p_ids, p_mask = left_pad([plain[i] for i in idx], pad, device)
                    assert amplification is not None
                    processors.append(AmplifyProcessor(model, p_ids, p_mask, amplification))
                seqs = model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                    pad_token_id=pad,
                    eos_token_id=eos,
                    logits_processor=processors,
                )
                new_ids = seqs[:, ids.shape[1] :].tolist()
            for row, i in enumerate(idx):
                new = new_ids[row]
                out[i] = new[: new.index(eos) + 1] if eos in new else new
            advance(len(idx))
    return out


@torch.no_grad()
def next_token_logits(
    model: Any, sequences: Sequence[Sequence[int]], *, batch_size: int = 16, pad_id: int = 0
) -> Tensor:
    """Float32 logits ``[n, V]`` of the token after each sequence (right padded, last real position)."""
    device = next(model.parameters()).device
    rows: list[Tensor] = []
    for start in range(0, len(sequences), batch_size):
        part = sequences[start : start + batch_size]
        width = max(len(s) for s in part)
        ids = torch.full((len(part), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(part), width), dtype=torch.long)
        for row, seq in enumerate(part):
            ids[row, : len(seq)] = torch.as_tensor(list(seq))
            mask[row, : len(seq)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
        last = torch.tensor([len(s) - 1 for s in part], device=device)
        rows.append(logits[torch.arange(len(part), device=device), last].float().cpu())
    return torch.cat(rows) if rows else torch.zeros((0, 0))
