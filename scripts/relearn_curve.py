"""Relearning at several strengths: what a few fine-tuning steps bring back, beside the reference model.

The relearning attack (``harmonia.attacks.relearn``) fine-tunes a copy of a model on half the forget
QA and asks the other half. The recall it reaches is knowledge the model kept only as far as it
exceeds what the same steps teach the reference model, which never learned the forget authors: a
strong attack teaches the held-out answers' shared facts (the authors' names, genres, places and
the answers' template) to any model. This script runs the attack on every run given, at several
learning rates and on several splits of the forget set (each split seed trains on another half),
and prints per run and rate, averaged over the splits: the held-out answers' mean ROUGE-L recall
before and after, the recall after minus the reference's, the success rate after (recall >= the
evaluation's threshold) and the relearning's final loss on the answers it trained on. Beside them,
per run, TOFU's answer probability of the gold forget answers before any relearning (the mean
length-normalised probability, ``answer_probability/forget``): a model that declines while the gold
answers stay likely under teacher forcing keeps what relearning brings back (docs/demo.md, session 23).

    .venv/bin/python scripts/relearn_curve.py runs/demo_attacks/{target,reference,harmonia,npo} \\
        --config demo_attacks --lrs 1e-5,3e-5,1e-4 --splits 0,1 -o relearn.md

The attack's other settings (steps, batch, split fraction, ``cross``) are the config's
``evaluation.attacks.relearn`` (or the attack's defaults); ``--steps`` and ``--cross/--no-cross``
change them. With ``-o`` every attack entry (the probed answers and their recall, per split) is
written beside the table as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from statistics import fmean
from typing import NamedTuple

from harmonia.evaluation.results import AttackEntry

REFERENCE = "reference"


class Point(NamedTuple):
    """One run at one learning rate, averaged over the splits."""

    before: float
    after: float
    success_after: float
    final_loss: float


def summarise(entries: Sequence[AttackEntry]) -> Point:
    """The mean over splits of one run's relearn entries (settings ``steps=0`` and ``steps=N``)."""
    if not entries:
        raise ValueError("no relearning entries to summarise")
    after = [f"steps={e.details['steps']}" for e in entries]
    return Point(
        before=fmean(e.details["mean_recall"]["steps=0"] for e in entries),
        after=fmean(e.details["mean_recall"][key] for e, key in zip(entries, after, strict=True)),
        success_after=fmean(e.success_rate[key] for e, key in zip(entries, after, strict=True)),
        final_loss=fmean(e.details["final_loss"] for e in entries),
    )


def curve_table(points: Mapping[str, Mapping[float, Point]], reference: str | None = REFERENCE,
                probability: Mapping[str, float] | None = None) -> str:
    """A markdown table, one row per run and rate; "- reference" is the recall after minus the
    reference run's at the same rate (a dash without one); ``probability`` (per run) fills the
    gold forget answers' probability before relearning (a dash for a run without one)."""
    probability = probability or {}
    lines = ["| run | lr | recall before | recall after | after - reference | success after | final loss "
             "| forget answer probability |",
             "|:---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, by_lr in points.items():
        prob = f"{probability[name]:.3f}" if name in probability else "-"
        for lr, p in by_lr.items():
            ref = points.get(reference, {}).get(lr) if reference else None
            excess = f"{p.after - ref.after:+.3f}" if ref is not None else "-"
            lines.append(f"| {name} | {lr:g} | {p.before:.3f} | {p.after:.3f} | {excess} | "
                         f"{p.success_after:.3f} | {p.final_loss:.3f} | {prob} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    from harmonia.attacks.relearn import RelearnAttack, RelearnParams
    from harmonia.cli.comparison import command_line, parse_rates, parse_seeds
    from harmonia.config import load_config
    from harmonia.evaluation.harness import attack_settings
    from harmonia.evaluation.scoring import probability_metrics
    from harmonia.io import write_text_atomic
    from harmonia.models import load_model
    from harmonia.pipelines.demo import load_demo_data, select
    from harmonia.pipelines.demo_config import DemoConfig, demo_config_path
    from harmonia.reports.compare import load_runs

    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders or results files (their model is attacked)")
    parser.add_argument("--config", default="demo_attacks", help="demo config or preset whose forget set is relearned")
    parser.add_argument("--lrs", default="1e-5,3e-5,1e-4", help="comma-separated learning rates")
    parser.add_argument("--splits", default="0", help="comma-separated seeds of the train/probe split")
    parser.add_argument("--steps", type=int, default=None, help="relearning steps (default: the config's)")
    parser.add_argument("--cross", action=argparse.BooleanOptionalAction, default=None,
                        help="relearn each half in turn, probing every question (default: the config's)")
    parser.add_argument("--reference", default=REFERENCE, help="the run the recall after is compared with")
    parser.add_argument("-o", "--output", type=Path, default=None, help="write the table (and entries as .json)")
    args = parser.parse_args(argv)
    lrs = parse_rates(args.lrs)
    splits = parse_seeds(args.splits, "--splits")

    cfg = load_config(DemoConfig, demo_config_path(args.config), [])
    data = load_demo_data(cfg, log=lambda *_: None)
    records = select(data.evaluation, cfg.eval_records) + data.eval_extra
    settings = attack_settings(cfg.evaluation)
    base = cfg.evaluation.attacks.relearn or RelearnParams()
    if args.steps is not None:
        base = base.model_copy(update={"steps": args.steps})
    if args.cross is not None:
        base = base.model_copy(update={"cross": args.cross})

    runs = load_runs(args.runs)
    points: dict[str, dict[float, Point]] = {}
    probability: dict[str, float] = {}
    forget = [r for r in records if r.role == "forget"]
    entries: dict[str, dict[str, list[dict]]] = {}
    for run in runs:
        loaded = load_model(run.model)
        loaded.model.eval()
        metrics = probability_metrics(loaded.model, loaded.tokenizer, forget, truth_ratio=False, progress=False)
        probability[run.name] = metrics["answer_probability/forget"].value
        for lr in lrs:
            found = []
            for split in splits:
                attack = RelearnAttack(base.model_copy(update={"lr": lr, "seed": split}))
                found.append(attack.run(loaded.model, loaded.tokenizer, records, settings))
            points.setdefault(run.name, {})[lr] = summarise(found)
            entries.setdefault(run.name, {})[f"{lr:g}"] = [e.model_dump() for e in found]
        del loaded
    command = command_line("relearn_curve.py", argv)
    both = ", then the other way round (cross)" if base.cross else ""
    text = (f"`{command}`\n\nRelearning {base.steps} steps of {base.batch_size} on "
            f"{base.train_fraction:g} of the forget QA{both}, means over splits {splits}:\n\n"
            f"{curve_table(points, args.reference if args.reference in points else None, probability)}")
    print(text)
    if args.output is not None:
        write_text_atomic(args.output, text)
        write_text_atomic(args.output.with_suffix(".json"), json.dumps(entries, indent=1) + "\n")
    return text


if __name__ == "__main__":
    main()
