"""Sweeps on the demo's budget: one method's learning rate, or settings of the method over seeds.

A rate tuned for one loss can wreck another (docs/demo.md), so a fair comparison trains each
method at the best rate of a sweep on the same budget. Every point starts from the same cached
target, trains the demo's steps, batch and records (a baseline's records restricted to the roles
it trains on, as in the demo) and is evaluated on the demo's questions (cached per model), so the
rows differ only by the rate. A point with the rate the demo config already gives trains exactly
the demo's run.

A seed sweep trains the main method under each setting (config overrides) at each unlearning
seed, and the named baselines at each seed, all from the same target and evaluated on the same
questions: the groups of rows that :func:`harmonia.reports.seeds.seed_table` summarises.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harmonia.config import load_config
from harmonia.errors import ConfigError
from harmonia.evaluation.results import EvalResults
from harmonia.pipelines.ablation import prepare_comparison
from harmonia.pipelines.demo import Log, cached_evaluation, select, unlearn
from harmonia.pipelines.demo_config import DemoConfig
from harmonia.teacher.config import TeacherConfig


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


@dataclass(frozen=True)
class Setting:
    """A named set of config overrides for the main method, e.g. ``alpha2: teacher.alpha=2.0``."""

    name: str
    overrides: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Setting:
        """``"NAME: key=value key=value"`` (a bare ``NAME`` is the config as it is)."""
        name, _, rest = text.partition(":")
        name = name.strip()
        if not name or any(c in name for c in "/ \\"):
            raise ConfigError(f"setting '{text}': start with a name (no spaces or slashes), "
                              "e.g. 'alpha2: teacher.alpha=2'")
        overrides = tuple(shlex.split(rest))
        if bad := [o for o in overrides if "=" not in o]:
            raise ConfigError(f"setting '{name}': {bad[0]!r} is not a key.sub=value override")
        return cls(name, overrides)


# What the target, the evaluation questions and their scoring are made of: a setting that changes
# one of these is not an unlearning setting, and its rows would not share the target's.
SHARED_FIELDS: frozenset[str] = frozenset({"model", "data", "eval_data", "target", "heldout", "heldout_seed",
                                           "eval_records", "evaluation"})
# The teacher's settings that act only when it is distilled from; the others (its instruction,
# refusal, calibration) also shape the calibrated target.
DISTILLATION_TEACHER_FIELDS: frozenset[str] = frozenset({"mode", "alpha", "n_shots", "role_context", "report",
                                                         "cache_dir"})


def seed_config(path: Path, setting: Setting, seed: int, overrides: Sequence[str] = ()) -> DemoConfig:
    """The demo config with the run's overrides, the setting's, and the unlearning seed."""
    cfg = load_config(DemoConfig, path, [*overrides, *setting.overrides, f"unlearn.train.seed={seed}"])
    base = load_config(DemoConfig, path, overrides)
    changed = sorted(f for f in SHARED_FIELDS if getattr(cfg, f) != getattr(base, f))
    teacher = set(TeacherConfig.model_fields) - DISTILLATION_TEACHER_FIELDS
    changed += sorted(f"teacher.{f}" for f in teacher if getattr(cfg.teacher, f) != getattr(base.teacher, f))
    if changed:
        raise ConfigError(f"setting '{setting.name}' changes {', '.join(changed)}: a seed sweep compares "
                          "unlearning settings on one target and one evaluation")
    return cfg


def seed_point_name(group: str, seed: int) -> str:
    """The row and run-folder name of one run, e.g. ``alpha2-seed1``."""
    return f"{group}-seed{seed}"


def run_seed_sweep(path: Path, settings: Sequence[Setting], seeds: Sequence[int], *, baselines: Sequence[str] = (),
                   overrides: Sequence[str] = (), eval_limit: int | None = None,
                   log: Log = print) -> dict[str, list[EvalResults]]:
    """Per setting (and per baseline label), the runs at every seed: unlearned from the shared
    target and evaluated on the shared questions. The target's row is the group ``target``."""
    if not seeds:
        raise ConfigError("the seed sweep has no seeds")
    if not settings and not baselines:
        raise ConfigError("the seed sweep has neither settings nor baselines")
    names = [s.name for s in settings] + list(baselines)
    if len(set(names)) != len(names) or "target" in names:
        raise ConfigError(f"setting and baseline names must be distinct and not 'target': {names}")
    base_cfg = load_config(DemoConfig, path, overrides)
    unknown = [b for b in baselines if b not in base_cfg.baselines]
    if unknown:
        raise ConfigError(f"unknown baseline label(s) {unknown}; the config has {', '.join(base_cfg.baselines)}")
    configs = {(s.name, seed): seed_config(path, s, seed, overrides) for s in settings for seed in seeds}
    configs |= {(b, seed): seed_config(path, Setting(b), seed, overrides) for b in baselines for seed in seeds}
    shared = prepare_comparison(base_cfg, eval_limit=eval_limit, log=log)
    groups: dict[str, list[EvalResults]] = {"target": [shared.target_results]}
    for (group, seed), cfg in configs.items():
        name = seed_point_name(group, seed)
        log(f"== seed sweep {name}")
        main = group not in baselines
        method = cfg.unlearn.method if main else cfg.method_config(group)
        train = select(shared.data.train, cfg.unlearn.records)
        model_dir = unlearn(cfg, method, shared.target_dir, train, Path(cfg.output_dir) / name, main=main)
        results = cached_evaluation(cfg, name, model_dir, shared.eval_records, shared.target_results, log)
        groups.setdefault(group, []).append(results)
    return groups


__all__ = ["DISTILLATION_TEACHER_FIELDS", "SHARED_FIELDS", "Setting", "point_config", "point_name", "run_lr_sweep",
           "run_seed_sweep", "seed_config", "seed_point_name"]
