"""Membership inference of forget vs holdout texts (MUSE PrivLeak): the model-running half.

One forward pass per text gives the per-token log-probabilities and, for Min-K%++, the mean
and standard deviation of log p under the model's next-token distribution at each position;
the four attacks (LOSS, zlib, Min-K%, Min-K%++) and their AUCs are the pure functions of
:mod:`harmonia.evaluation.metrics.mia`. With a reference AUC per attack (the retrained model's,
``details["privleak"]``) each result also carries MUSE's PrivLeak.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harmonia.data.loaders.generic import load_text
from harmonia.data.readers import read_json
from harmonia.errors import DataError
from harmonia.evaluation.loglik import encode_plain
from harmonia.evaluation.metrics import mia
from harmonia.evaluation.results import MetricEntry
from harmonia.evaluation.scoring import text_scores, to_entry

MIA_METRICS: tuple[str, ...] = ("mia_loss", "mia_zlib", "mia_min_k", "mia_min_k_plus_plus")


def read_texts(path: str | Path) -> list[str]:
    """Texts from a JSON list of strings (MUSE ``privleak/*.json``) or a text file (blank-line paragraphs)."""
    path = Path(path)
    if path.suffix != ".json":
        return load_text(path, split="paragraph")
    rows = read_json(path)
    if not isinstance(rows, list) or not rows:
        raise DataError(path, "expected a non-empty JSON list of strings")
    for i, row in enumerate(rows):
        if not isinstance(row, str) or not row.strip():
            raise DataError(path, "expected a non-empty string", record=f"index {i}")
    return rows


def truncate_text(tokenizer: Any, text: str, max_tokens: int | None) -> str:
    """``text`` cut after its first ``max_tokens`` tokens (unchanged when shorter or no limit)."""
    if max_tokens is None:
        return text
    ids = encode_plain(tokenizer, text)
    return text if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens], skip_special_tokens=True)


def mia_metrics(
    model: Any,
    tokenizer: Any,
    forget_texts: Sequence[str],
    holdout_texts: Sequence[str],
    *,
    k: float = mia.DEFAULT_MIN_K,
    max_tokens: int | None = 512,
    batch_size: int = 4,
    reference_auc: Mapping[str, float] | None = None,
    progress: bool = True,
) -> dict[str, MetricEntry]:
    """The four MIA AUCs as ``"{attack}/forget_holdout"``; ``per_example`` = forget then holdout scores."""
    if not forget_texts or not holdout_texts:
        raise DataError(
            None,
            f"membership inference needs forget and holdout texts, got {len(forget_texts)} "
            f"and {len(holdout_texts)}",
            field="privacy",
        )
    ref = dict(reference_auc or {})
    unknown = sorted(set(ref) - set(MIA_METRICS))
    if unknown:
        raise DataError(
            None,
            f"reference AUCs for unknown attacks {unknown}; known: {list(MIA_METRICS)}",
            field="privacy.reference_auc",
        )
    # zlib compresses the text that was scored, so long texts are cut to their first max_tokens tokens.
    forget_texts = [truncate_text(tokenizer, t, max_tokens) for t in forget_texts]
    holdout_texts = [truncate_text(tokenizer, t, max_tokens) for t in holdout_texts]
    scores = text_scores(
        model,
        tokenizer,
        [*forget_texts, *holdout_texts],
        max_tokens=max_tokens,
        batch_size=batch_size,
        moments=True,
        progress=progress,
        description="MIA log-probs",
    )
    forget, holdout = scores[: len(forget_texts)], scores[len(forget_texts) :]
    empty = [i for i, s in enumerate(scores) if s.n_tokens == 0]
    if empty:
        raise DataError(None, "a text has no tokens to score", record=empty[0], field="privacy texts")
    f_lp = [s.token_logprobs for s in forget]
    h_lp = [s.token_logprobs for s in holdout]
    results = {
        "mia_loss": mia.mia_loss(f_lp, h_lp, reference_auc=ref.get("mia_loss")),
        "mia_zlib": mia.mia_zlib(f_lp, forget_texts, h_lp, holdout_texts, reference_auc=ref.get("mia_zlib")),
        "mia_min_k": mia.mia_min_k(f_lp, h_lp, k=k, reference_auc=ref.get("mia_min_k")),
        "mia_min_k_plus_plus": mia.mia_min_k_plus_plus(
            [(s.token_logprobs, s.mu, s.sigma) for s in forget],
            [(s.token_logprobs, s.mu, s.sigma) for s in holdout],
            k=k,
            reference_auc=ref.get("mia_min_k_plus_plus"),
        ),
    }
    ids = [f"forget/{i}" for i in range(len(forget_texts))] + [
        f"holdout/{i}" for i in range(len(holdout_texts))
    ]
    return {f"{name}/forget_holdout": to_entry(result, ids) for name, result in results.items()}
