"""Optional multiple-choice path through EleutherAI's lm-evaluation-harness (``mcq.backend: lm_eval``).

For users who have lm-eval and its task data: the loaded model is wrapped in lm-eval's ``HFLM``
and the named tasks (e.g. ``wmdp_cyber``, ``mmlu``) run with lm-eval's own prompts, data and
scoring. lm-eval is an optional dependency (``pip install 'harmonia[lmeval]'``); asking for this
backend without it installed is an error, never a quiet switch to the built-in scorer.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

from harmonia.errors import ConfigError
from harmonia.evaluation.results import MetricEntry


def require_lm_eval() -> None:
    """Raise a clear error unless lm-eval can be imported."""
    if importlib.util.find_spec("lm_eval") is None:
        raise ConfigError(
            "mcq.backend: 'lm_eval' needs the lm-eval package, which is not installed. Install it with "
            "pip install 'harmonia[lmeval]' (and its task data), or set mcq.backend: harmonia to use "
            "the built-in scorer (same prompt format, on the records you pass)."
        )


def run_lm_eval(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[str],
    *,
    batch_size: int = 8,
    limit: int | None = None,
    num_fewshot: int | None = None,
) -> dict[str, MetricEntry]:
    """Accuracy per lm-eval task as ``"lm_eval_acc/{task}"`` (per-sample values where lm-eval logs them)."""
    require_lm_eval()
    if not tasks:
        raise ConfigError("mcq.lm_eval_tasks: name at least one lm-eval task (e.g. wmdp_cyber, mmlu)")
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    output = simple_evaluate(
        model=lm, tasks=list(tasks), limit=limit, num_fewshot=num_fewshot, log_samples=True
    )
    if output is None:  # lm-eval returns None on non-zero ranks of a distributed run
        return {}
    out: dict[str, MetricEntry] = {}
    samples = output.get("samples", {})
    for task, metrics in output["results"].items():
        if "acc,none" not in metrics:
            continue
        rows = samples.get(task, [])
        out[f"lm_eval_acc/{task}"] = MetricEntry(
            value=float(metrics["acc,none"]),
            n_used=len(rows) or int(metrics.get("samples", 0) or 0),
            per_example=[float(r["acc"]) for r in rows if "acc" in r],
            example_ids=[f"{task}/{r.get('doc_id', i)}" for i, r in enumerate(rows) if "acc" in r],
            details={k: v for k, v in metrics.items() if isinstance(v, (int, float, str))},
        )
    return out
