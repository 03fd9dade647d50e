"""Train the method under several settings at several seeds; print mean ± sd (worst seed) per setting.

Baselines (``--baselines``) run at the same seeds and get a row of their own.

    .venv/bin/python scripts/sweep_seeds.py --seeds 0,1,2 --setting alpha1 \
        --setting "alpha2: teacher.alpha=2.0" --baselines npo -o docs/sweeps/alpha.md

``--setting "NAME: key=value ..."`` trains the main method with those overrides (a bare ``NAME`` is
the config as it is); settings may change the unlearning and the teacher's distillation (mode,
alpha), not the target or the evaluation. ``--baselines`` runs baseline labels of the config at
the same seeds, and a table gives each setting's combined score minus each baseline's, paired over
the questions at each seed and over all the seeds (``paired_objectives_over_seeds``). Trailing
``key.sub=value`` arguments override the config for every run. Each run is written to
``<output-dir>/<name>-seed<N>``; a finished run with the same settings is reused.
"""

from __future__ import annotations

import argparse
import sys

from harmonia.cli.comparison import add_comparison_arguments, command_line, parse_seeds
from harmonia.io import write_text_atomic
from harmonia.pipelines.demo_config import demo_config_path
from harmonia.pipelines.sweep import Setting, run_seed_sweep
from harmonia.reports.seeds import paired_seed_table, seed_table
from harmonia.reports.tables import markdown_table


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated unlearning seeds (default: 0,1,2)")
    parser.add_argument("--setting", action="append", default=[], help="'NAME: key=value ...' (repeatable)")
    parser.add_argument("--baselines", default="", help="comma-separated baseline labels run at the same seeds")
    add_comparison_arguments(parser, output_dir="runs/seeds", output_help="also write the tables to this markdown file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> str:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    settings = [Setting.parse(text) for text in args.setting]
    baselines = [b.strip() for b in args.baselines.split(",") if b.strip()]
    seeds = parse_seeds(args.seeds)
    groups = run_seed_sweep(demo_config_path(args.config), settings, seeds, baselines=baselines,
                            overrides=[f"output_dir={args.output_dir}", *args.overrides], eval_limit=args.eval_limit)
    command = command_line("sweep_seeds.py", argv)
    runs = [r for group in groups.values() for r in group]
    text = f"`{command}`\n\nPer setting: mean ± sd (worst seed) over seeds {args.seeds}.\n\n{seed_table(groups)}\n"
    if settings and baselines:
        text += ("Combined score, setting minus baseline, paired over the questions at each seed and over the "
                 f"seeds (seeds resampled too), 95% intervals:\n\n"
                 f"{paired_seed_table(groups, [s.name for s in settings], baselines, seeds)}\n")
    text += f"Every run:\n\n{markdown_table(runs)}\n"
    if args.output is not None:
        write_text_atomic(args.output, text)
    return text


if __name__ == "__main__":
    print(main())
