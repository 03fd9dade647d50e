"""Keep another fraction of saved unlearning runs' update, the same in every layer or changing with depth.

A run saved with ``unlearn.train.update_scale = kept`` holds ``start + kept x (trained - start)``.
For each schedule this script rebuilds ``start + s x (trained - start)`` from it, no training, and
evaluates the weights on the demo's questions (cached by content, as the demo caches them). A
schedule is ``s`` (every trained weight keeps ``s``) or ``a:b``: linear in depth, ``a`` at the
lowest trained decoder layer and ``b`` at the highest, the weights above the layers (the final
norm) at ``b`` and the embeddings at ``a``. ``0.4:1`` is LiNeS (Wang et al., ICLR 2025), which
scales a fine-tuning update up with depth so that the lower layers keep more of what the model
knew; docs/demo.md (session 24) measures it on harmonia's update.

    .venv/bin/python scripts/rescale_update.py runs/seeds_s20/us07-seed{0,1} --kept 0.7 \\
        --schedule 0.4:1 --schedule 1 --output-dir runs/rescaled

Every run must start from the config's target (``--config``, default ``demo_fast``). A rebuilt
model is deleted once evaluated (``--keep`` keeps it under ``<output-dir>/<run>@<schedule>``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from torch import Tensor

from harmonia.errors import ConfigError
from harmonia.training.interpolation import interpolated, weight_files

LAYER = re.compile(r"\.layers\.(\d+)\.")


class Schedule(NamedTuple):
    """The kept fraction at the lowest (``bottom``) and highest (``top``) trained layer, linear between."""

    bottom: float
    top: float

    @classmethod
    def parse(cls, text: str) -> Schedule:
        parts = text.split(":")
        try:
            values = [float(p) for p in parts]
        except ValueError as err:
            raise ConfigError(f"--schedule '{text}': a kept fraction 's' or 'bottom:top', e.g. 0.7 or 0.4:1") from err
        if len(values) not in (1, 2) or not all(0 < v <= 1 for v in values):
            raise ConfigError(f"--schedule '{text}': one or two kept fractions in (0, 1], e.g. 0.7 or 0.4:1")
        return cls(values[0], values[-1])

    def at(self, depth: float) -> float:
        """The kept fraction at ``depth`` (0 = lowest trained layer, 1 = highest)."""
        return self.bottom + (self.top - self.bottom) * depth

    def __str__(self) -> str:
        return f"{self.bottom:g}" if self.bottom == self.top else f"{self.bottom:g}:{self.top:g}"


def depth(name: str, lowest: int, highest: int) -> float:
    """Where weight ``name`` sits between the lowest and highest trained layer (0 to 1); the
    embeddings sit below every layer (0), every other weight outside the layers above them (1)."""
    found = LAYER.search(name)
    if found is None:
        return 0.0 if "embed" in name else 1.0
    return 0.0 if highest == lowest else (int(found.group(1)) - lowest) / (highest - lowest)


def rescaled(start: Mapping[str, Tensor], saved: Mapping[str, Tensor], kept: float,
             schedule: Schedule) -> dict[str, Tensor]:
    """``saved`` (``start + kept x update``) with each changed weight at ``start + s x update``,
    ``s`` the schedule's fraction at the weight's depth among the layers training changed."""
    if not 0 < kept <= 1:
        raise ConfigError(f"--kept {kept}: the fraction of the update the runs were saved with, in (0, 1]")
    if missing := sorted(set(saved) - set(start)):
        raise ConfigError(f"the start has no weights {missing[:3]}: rescale a run with its own start")
    changed = [name for name, weight in saved.items() if not weight.equal(start[name])]
    layers = [int(m.group(1)) for m in map(LAYER.search, changed) if m is not None]
    lowest, highest = (min(layers), max(layers)) if layers else (0, 0)
    out = dict(saved)
    for name in changed:
        factor = schedule.at(depth(name, lowest, highest)) / kept
        if factor != 1:  # start + 1 x (saved - start) need not round back to saved's bytes
            out[name] = interpolated(start[name], saved[name], factor)
    return out


def single_weights_file(folder: Path) -> Path:
    """``folder``'s one ``model.safetensors`` (a sharded model is refused)."""
    single = folder / "model.safetensors"
    if set(weight_files(folder).values()) != {single}:
        raise ConfigError(f"{folder}: one model.safetensors expected (a sharded model is not supported)")
    return single


def main(argv: list[str] | None = None) -> str:
    from safetensors.torch import load_file, save_file

    from harmonia.cli.comparison import add_comparison_arguments, table_with_command
    from harmonia.config import load_config
    from harmonia.io import atomic_path
    from harmonia.pipelines.ablation import prepare_comparison
    from harmonia.pipelines.demo import cached_evaluation
    from harmonia.pipelines.demo_config import DemoConfig, demo_config_path
    from harmonia.reports.tables import markdown_table

    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders (their model/ is rescaled); key=value: an override")
    parser.add_argument("--kept", type=float, required=True, help="the update_scale the runs were saved with")
    parser.add_argument("--schedule", action="append", required=True, help="'s' or 'bottom:top' (repeatable)")
    parser.add_argument("--keep", action="store_true", help="keep the rebuilt models")
    add_comparison_arguments(parser, output_dir="runs/rescaled", output_help="also write the table to this file")
    args = parser.parse_intermixed_args(argv)  # run folders first, options, then overrides
    # argparse gives every positional to the first list: the ones with '=' are the trailing overrides
    overrides = [a for a in args.runs if "=" in a] + args.overrides
    runs = [Path(a) for a in args.runs if "=" not in a]
    schedules = [Schedule.parse(text) for text in args.schedule]

    cfg = load_config(DemoConfig, demo_config_path(args.config), [f"output_dir={args.output_dir}", *overrides])
    shared = prepare_comparison(cfg, eval_limit=args.eval_limit)
    start = load_file(single_weights_file(shared.target_dir))
    results = [shared.target_results]
    for run in runs:
        saved = load_file(single_weights_file(run / "model"))
        for schedule in schedules:
            name = f"{run.name}@{schedule}"
            folder = Path(args.output_dir) / name / "model"
            if not folder.is_dir():
                with atomic_path(folder, directory=True) as tmp:
                    shutil.copytree(run / "model", tmp, dirs_exist_ok=True,
                                    ignore=shutil.ignore_patterns("*.safetensors"))
                    save_file(rescaled(start, saved, args.kept, schedule), tmp / "model.safetensors",
                              metadata={"format": "pt"})
            results.append(cached_evaluation(cfg, name, folder, shared.eval_records, shared.target_results, print))
            if not args.keep:
                shutil.rmtree(folder)
    return table_with_command("rescale_update.py", argv, markdown_table(results), args.output)


if __name__ == "__main__":
    print(main())
