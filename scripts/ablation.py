"""Ablate the method's design choices one at a time against a demo config; write the table into docs/ablations.md.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python scripts/ablation.py --steps 30
    .venv/bin/python scripts/ablation.py --variants base,pull_only,k5 --steps 5 --eval-limit 8 -o /tmp/ablations.md

Variants (``--variants``, comma-separated; default all): see ``harmonia.pipelines.ablation.VARIANTS``.
Trailing ``key.sub=value`` arguments override the config for every variant (e.g. ``model.spec=...``).
The table replaces the section ``<!-- ablation:<config>:begin -->`` .. ``end`` of the output file
(``ablation:demo_fast`` for ``--config demo_fast``); the rest of the file is kept.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harmonia.cli.comparison import add_comparison_arguments, command_line
from harmonia.errors import HarmoniaError
from harmonia.io import check_section, write_section_atomic
from harmonia.pipelines.ablation import VARIANTS, ablation_markdown, choose_variants, run_ablation, variant_config
from harmonia.pipelines.demo_config import demo_config_path


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=None, help="unlearning steps of every variant (default: config)")
    names = ", ".join(v.name for v in VARIANTS)
    parser.add_argument("--variants", default="", help=f"comma-separated subset of: {names}")
    add_comparison_arguments(parser, output_dir="runs/ablation", output=Path("docs/ablations.md"),
                             output_help="markdown file whose ablation:<config> section is replaced (created if "
                             "missing)", config="demo",
                             config_help="demo config file or preset (default: demo, the 60-step profile; "
                             "docs/ablations.md's first section is --config demo_fast)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    variants = choose_variants([n.strip() for n in args.variants.split(",") if n.strip()])
    path = demo_config_path(args.config)
    overrides = [f"output_dir={args.output_dir}", *args.overrides]
    if args.steps is not None:
        overrides.append(f"unlearn.train.steps={args.steps}")
    steps = variant_config(path, VARIANTS[0], overrides).unlearn.train.steps
    assert steps is not None, "the demo's unlearning stage counts steps, not epochs"
    section = f"ablation:{path.stem}"
    check_section(args.output, section)  # before hours of training, not after
    results = run_ablation(path, variants, overrides=overrides, eval_limit=args.eval_limit)
    command = command_line("ablation.py", argv)
    table = ablation_markdown(results, variants, command=command, steps=steps)
    return write_section_atomic(args.output, section, table)


if __name__ == "__main__":
    try:
        print(f"wrote {main()}")
    except HarmoniaError as err:  # bad config or output file: the message names it; no traceback
        sys.exit(f"error: {err}")
