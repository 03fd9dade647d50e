"""Teacher-forced log-probabilities of continuations: the one forward pass every likelihood metric uses.

Answer probability, truth ratio, multiple-choice option scores, perplexity and membership
inference all ask the same question: what log-probability does the model give each token of a
continuation after a context? This module answers it in batches.

Encoding (why it is done this way):

- context and continuation are tokenised *separately* and concatenated, so the continuation's
  tokens are exactly those of the continuation text, whatever the context ends with (the same
  boundary rule as training, :func:`harmonia.models.chat.encode_example`);
- no special tokens are added: chat prompts get theirs from the chat template, and plain-text
  prompts (multiple choice, KnowMem) are scored as lm-eval scores them for causal LMs;
- an empty context becomes one prefix token (BOS, else EOS), as in lm-eval's rolling
  log-likelihood, so that the first token of a raw text is scored too;
- a context longer than ``max_length`` loses tokens from the left (lm-eval's rule); the
  continuation itself is never cut here (callers cap texts with ``max_continuation_tokens``).

Batches are left-padded with explicit position ids, and only the last ``n + 1`` positions'
logits are materialised (``logits_to_keep`` where the model supports it): the scores do not
depend on the batch size or on the other rows of a batch (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from harmonia.errors import DataError
from harmonia.evaluation.sharding import map_sharded
from harmonia.models.decoding import accepts_logits_to_keep
from harmonia.progress import progress_bar


@dataclass(frozen=True)
class ContinuationScore:
    """Per-token log-probabilities of one continuation (natural log, float64).

    ``mu`` and ``sigma`` (with ``moments=True``) are the mean and standard deviation of log p
    under the model's own next-token distribution at each scored position (Min-K%++).
    """

    token_logprobs: np.ndarray
    mu: np.ndarray | None = None
    sigma: np.ndarray | None = None

    @property
    def logprob_sum(self) -> float:
        return float(self.token_logprobs.sum())

    @property
    def n_tokens(self) -> int:
        return int(self.token_logprobs.size)


def model_device(model: Any) -> torch.device:
    return next(model.parameters()).device


def prefix_token_id(tokenizer: Any) -> int:
    """The token that stands in for an empty context: BOS, else EOS (lm-eval's choice)."""
    for token_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    raise DataError(
        None, "the tokenizer has neither a BOS nor an EOS token to start a text with", field="tokenizer"
    )


def encode_plain(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens (``[]`` for the empty string)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def encode_pair(
    tokenizer: Any,
    context: str,
    continuation: str,
    *,
    max_length: int | None = None,
    max_continuation_tokens: int | None = None,
) -> tuple[list[int], int]:
    """``(input_ids, n_continuation_tokens)`` for one context/continuation pair (module docstring)."""
    ctx = encode_plain(tokenizer, context) or [prefix_token_id(tokenizer)]
    cont = encode_plain(tokenizer, continuation)
    if max_continuation_tokens is not None:
        cont = cont[:max_continuation_tokens]
    if max_length is not None and len(ctx) + len(cont) > max_length:
        if len(cont) >= max_length:
            raise DataError(
                None,
                f"the continuation has {len(cont)} tokens, no room for context within "
                f"max_length {max_length}",
                field="continuation",
            )
        ctx = ctx[len(ctx) + len(cont) - max_length :]
    return ctx + cont, len(cont)


def last_logits(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, keep: int) -> torch.Tensor:
    """Logits of the last ``keep`` positions of left-padded rows, shape ``(batch, keep, vocab)``.

    Position ids are computed from the mask, so a left-padded row is numbered as if unpadded.
    """
    position_ids = (attention_mask.cumsum(dim=-1) - 1).clamp(min=0)
    kwargs: dict[str, Any] = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": position_ids,
        "use_cache": False,
    }
    if accepts_logits_to_keep(model):
        kwargs["logits_to_keep"] = keep
    logits = model(**kwargs).logits
    return logits[:, -keep:, :].float()


def _moments(logprobs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of log p under p, per row of a ``(positions, vocab)`` log-prob tensor.

    The same quantity as :func:`harmonia.evaluation.metrics.mia.vocab_logprob_moments`, computed
    on the device without copying a (positions x vocab) float64 array to numpy (checked equal in
    tests); the variance uses the two-pass form, stable in float32.
    """
    p = logprobs.exp()
    mu = (p * logprobs).sum(dim=-1)
    var = (p * (logprobs - mu[:, None]) ** 2).sum(dim=-1)
    return mu, var.clamp(min=0).sqrt()


def score_continuations(
    model: Any,
    tokenizer: Any,
    contexts: Sequence[str],
    continuations: Sequence[str],
    *,
    batch_size: int = 8,
    moments: bool = False,
    max_length: int | None = None,
    max_continuation_tokens: int | None = None,
    progress: bool = True,
    description: str = "scoring",
) -> list[ContinuationScore]:
    """Log-probability of every continuation token given its context, in input order.

    Sharded over the evaluating processes (:mod:`harmonia.evaluation.sharding`): a score does
    not depend on the other rows of its batch, so any split gives the same numbers.
    """
    if len(contexts) != len(continuations):
        raise DataError(
            None, f"{len(contexts)} contexts but {len(continuations)} continuations", field="continuations"
        )

    def run(pairs: list[tuple[str, str]]) -> list[ContinuationScore]:
        return _score_continuations_local(
            model, tokenizer, [c for c, _ in pairs], [x for _, x in pairs], batch_size=batch_size,
            moments=moments, max_length=max_length, max_continuation_tokens=max_continuation_tokens,
            progress=progress, description=description)

    return map_sharded(run, list(zip(contexts, continuations, strict=True)))


@torch.no_grad()
def _score_continuations_local(
    model: Any,
    tokenizer: Any,
    contexts: Sequence[str],
    continuations: Sequence[str],
    *,
    batch_size: int,
    moments: bool,
    max_length: int | None,
    max_continuation_tokens: int | None,
    progress: bool,
    description: str,
) -> list[ContinuationScore]:
    if batch_size < 1:
        raise DataError(None, f"batch_size must be >= 1, got {batch_size}", field="batch_size")
    encoded = [
        encode_pair(tokenizer, c, x, max_length=max_length, max_continuation_tokens=max_continuation_tokens)
        for c, x in zip(contexts, continuations, strict=True)
    ]
    # Longest first: similar lengths share a batch (little padding), and a memory problem shows at once.
    order = sorted(range(len(encoded)), key=lambda i: (-len(encoded[i][0]), i))
    out: list[ContinuationScore | None] = [None] * len(encoded)
    device = model_device(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else prefix_token_id(tokenizer)
    with progress_bar(description, total=len(encoded), enabled=progress) as advance:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            width = max(len(encoded[i][0]) for i in idx)
            keep = max(encoded[i][1] for i in idx) + 1
            ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                seq = encoded[i][0]
                ids[row, width - len(seq) :] = torch.tensor(seq)
                mask[row, width - len(seq) :] = 1
            logits = last_logits(model, ids.to(device), mask.to(device), keep)
            for row, i in enumerate(idx):
                n = encoded[i][1]
                out[i] = _row_score(logits[row], ids[row].to(device), n, keep, moments)
            advance(len(idx))
    return [s for s in out if s is not None]


def _row_score(
    logits: torch.Tensor, ids: torch.Tensor, n: int, keep: int, moments: bool
) -> ContinuationScore:
    if n == 0:
        empty = np.zeros(0, dtype=np.float64)
        return ContinuationScore(empty, empty if moments else None, empty if moments else None)
    # Kept column j holds position width-keep+j; the n continuation tokens (the last n ids) are
    # predicted by the n positions before each of them: kept columns keep-n-1 .. keep-2.
    logprobs = torch.log_softmax(logits[keep - n - 1 : keep - 1], dim=-1)
    targets = ids[-n:]
    # log_softmax can round to a hair above 0; a log-probability is <= 0 by definition.
    token_lp = logprobs.gather(-1, targets[:, None])[:, 0].clamp(max=0.0)
    if not moments:
        return ContinuationScore(token_lp.double().cpu().numpy())
    mu, sigma = _moments(logprobs)
    return ContinuationScore(
        token_lp.double().cpu().numpy(), mu.double().cpu().numpy(), sigma.double().cpu().numpy()
    )


def next_token_logprobs(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    token_ids: Sequence[int],
    *,
    batch_size: int = 8,
    max_length: int | None = None,
    progress: bool = True,
    description: str = "scoring options",
) -> list[list[float]]:
    """``log p(token | prompt)`` for each of ``token_ids`` after each prompt: one forward per prompt.

    The fast path for multiple choice, where every option is a single token (" A" .. " D"):
    equal to :func:`score_continuations` of each one-token continuation, at a quarter of the cost.
    Sharded over the evaluating processes like :func:`score_continuations`.
    """
    if batch_size < 1:
        raise DataError(None, f"batch_size must be >= 1, got {batch_size}", field="batch_size")
    return map_sharded(
        lambda part: _next_token_logprobs_local(model, tokenizer, part, token_ids, batch_size=batch_size,
                                                max_length=max_length, progress=progress, description=description),
        prompts,
    )


@torch.no_grad()
def _next_token_logprobs_local(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    token_ids: Sequence[int],
    *,
    batch_size: int,
    max_length: int | None,
    progress: bool,
    description: str,
) -> list[list[float]]:
    encoded = []
    for p in prompts:
        seq = encode_plain(tokenizer, p) or [prefix_token_id(tokenizer)]
        encoded.append(seq[-max_length:] if max_length is not None else seq)
    order = sorted(range(len(encoded)), key=lambda i: (-len(encoded[i]), i))
    out: list[list[float]] = [[] for _ in encoded]
    device = model_device(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else prefix_token_id(tokenizer)
    wanted = torch.tensor(list(token_ids), dtype=torch.long, device=device)
    with progress_bar(description, total=len(encoded), enabled=progress) as advance:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            width = max(len(encoded[i]) for i in idx)
            ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                ids[row, width - len(encoded[i]) :] = torch.tensor(encoded[i])
                mask[row, width - len(encoded[i]) :] = 1
            logprobs = torch.log_softmax(
                last_logits(model, ids.to(device), mask.to(device), 1)[:, -1], dim=-1
            )
            chosen = logprobs[:, wanted].clamp(max=0.0).double().cpu().numpy()
            for row, i in enumerate(idx):
                out[i] = [float(v) for v in chosen[row]]
            advance(len(idx))
    return out
