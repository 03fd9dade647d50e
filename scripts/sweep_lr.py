"""Sweep one method's learning rate on the demo's budget; print (and optionally write) the table.

    .venv/bin/python scripts/sweep_lr.py --method idkdpo --lrs 2e-4,3.5e-4,7e-4
    .venv/bin/python scripts/sweep_lr.py --method harmonia --lrs 5e-4,7e-4 -o docs/sweeps/harmonia.md

``--method`` is the main method's name (its rate is ``unlearn.train.lr``) or a baseline label of the
config (``npo`` is NPO + retain in the demo; its rate is ``baselines.<label>.lr``). Trailing
``key.sub=value`` arguments override the config for every point. Every point starts from the same
cached target and is evaluated on the same questions (docs/demo.md, "Baselines at their own
learning rate").
"""

from __future__ import annotations

import argparse
import sys

from harmonia.cli.comparison import add_comparison_arguments, parse_rates, table_with_command
from harmonia.pipelines.demo_config import demo_config_path
from harmonia.pipelines.sweep import run_lr_sweep
from harmonia.reports.tables import markdown_table


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", required=True, help="the main method's name or a baseline label")
    parser.add_argument("--lrs", required=True, help="comma-separated learning rates")
    add_comparison_arguments(parser, output_dir="runs/sweep", output_help="also write the table to this markdown file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> str:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    results = run_lr_sweep(demo_config_path(args.config), args.method, parse_rates(args.lrs),
                           overrides=[f"output_dir={args.output_dir}", *args.overrides], eval_limit=args.eval_limit)
    return table_with_command("sweep_lr.py", argv, markdown_table(results), args.output)


if __name__ == "__main__":
    print(main())
