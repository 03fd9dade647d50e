"""Learning-rate sweeps on the demo's budget: one method, several rates, everything else fixed.

A rate tuned for one loss can wreck another (docs/demo.md), so a fair comparison trains each
method at the best rate of a sweep on the same budget. Every point starts from the same cached
target, trains the demo's steps, batch and records (a baseline's records restricted to the roles
it trains on, as in the demo) and is evaluated on the demo's questions (cached per model), so the
rows differ only by the rate. A point with the rate the demo config already gives trains exactly
the demo's run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from harmonia.config import load_config
from harmonia.errors import ConfigError
from harmonia.evaluation.results import EvalResults
from harmonia.pipelines.ablation import prepare_comparison
from harmonia.pipelines.demo import Log, cached_evaluation, select, unlearn
from harmonia.pipelines.demo_config import DemoConfig


def point_name(label: str, lr: float) -> str:
    """The row and run-folder name of one point, e.g. ``idkdpo-lr0.00035``."""
    return f"{label}-lr{lr:g}"


def point_config(path: Path, label: str, lr: float, overrides: Sequence[str] = ()) -> tuple[DemoConfig, bool]:
    """The demo config at ``path`` with ``label`` trained at ``lr``, and whether ``label`` is the
    main method (its rate is ``unlearn.train.lr``; a baseline's is ``baselines.<label>.lr``)."""
    if lr <= 0:
        raise ConfigError(f"learning rate {lr:g} of the sweep of '{label}': must be > 0")
    cfg = load_config(DemoConfig, path, overrides)
    main = label == cfg.unlearn.method.name
    key = "unlearn.train.lr" if main else f"baselines.{label}.lr"
    return load_config(DemoConfig, path, [*overrides, f"{key}={lr!r}"]), main


def run_lr_sweep(path: Path, label: str, lrs: Sequence[float], *, overrides: Sequence[str] = (),
                 eval_limit: int | None = None, log: Log = print) -> list[EvalResults]:
    """The target's row, then one row per rate: ``label`` unlearned at that rate and evaluated."""
    if not lrs:
        raise ConfigError(f"the sweep of '{label}' has no learning rates")
    base_cfg, _ = point_config(path, label, lrs[0], overrides)
    shared = prepare_comparison(base_cfg, eval_limit=eval_limit, log=log)
    results = [shared.target_results]
    for lr in lrs:
        cfg, main = point_config(path, label, lr, overrides)
        name = point_name(label, lr)
        log(f"== sweep {name}")
        method = cfg.unlearn.method if main else cfg.method_config(label)
        train = select(shared.data.train, cfg.unlearn.records)
        model_dir = unlearn(cfg, method, shared.target_dir, train, Path(cfg.output_dir) / name, main=main)
        results.append(cached_evaluation(cfg, name, model_dir, shared.eval_records, results[0], log))
    return results


__all__ = ["point_config", "point_name", "run_lr_sweep"]
