"""Arguments shared by the comparison scripts (``scripts/ablation.py``, ``sweep_lr.py``,
``sweep_seeds.py``, ``relearn_curve.py``, ``rescale_update.py``): each trains, attacks or rebuilds
variants of a demo config from its one cached target, evaluates them on the same questions and
writes a markdown table that starts with the command that made it."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence
from pathlib import Path

from harmonia.errors import ConfigError
from harmonia.io import write_text_atomic


def add_comparison_arguments(parser: argparse.ArgumentParser, *, output_dir: str, output_help: str,
                             output: Path | None = None, config: str = "demo_fast",
                             config_help: str = "demo config file or preset (default: demo_fast)") -> None:
    """``--config``, ``--eval-limit``, ``--output-dir``, ``-o/--output`` and trailing overrides."""
    parser.add_argument("--config", default=config, help=config_help)
    parser.add_argument("--eval-limit", type=int, default=None, help="at most N evaluation records per role")
    parser.add_argument("--output-dir", default=output_dir, help="where unlearned models and results go")
    parser.add_argument("-o", "--output", type=Path, default=output, help=output_help)
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides applied to every run")


def parse_rates(text: str, option: str = "--lrs") -> list[float]:
    """Comma-separated learning rates (``2e-4,3.5e-4``); a bad or empty list names the option."""
    try:
        rates = [float(part) for part in text.split(",") if part.strip()]
    except ValueError as err:
        raise ConfigError(f"{option} '{text}': comma-separated numbers, e.g. 2e-4,3.5e-4") from err
    if not rates:
        raise ConfigError(f"{option} '{text}': give at least one rate")
    return rates


def parse_seeds(text: str, option: str = "--seeds") -> list[int]:
    """Comma-separated distinct integer seeds (``0,1,2``); a bad, repeated or empty list names the option."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as err:
        raise ConfigError(f"{option} '{text}': comma-separated integers, e.g. 0,1,2") from err
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{option} '{text}': a seed is listed twice")
    if not seeds:
        raise ConfigError(f"{option} '{text}': give at least one seed")
    return seeds


def command_line(script: str, argv: Sequence[str]) -> str:
    """How the table was made, e.g. ``python scripts/sweep_lr.py --method npo --lrs 2e-4``."""
    return f"python scripts/{script} " + shlex.join(argv)


def table_with_command(script: str, argv: Sequence[str], table: str, output: Path | None) -> str:
    """``table`` under the command line that made it; also written to ``output`` when one is given."""
    text = f"`{command_line(script, argv)}`\n\n{table}\n"
    if output is not None:
        write_text_atomic(output, text)
    return text


__all__ = ["add_comparison_arguments", "command_line", "parse_rates", "parse_seeds", "table_with_command"]
