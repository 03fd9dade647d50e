"""Benchmark (not a test): what the micro-batch cut and the attention kernel cost a demo step.

Runs the forward and backward passes of the same global batches of one method of a demo config
(default: harmonia on ``demo_fast``, started from its cached target) in one process, under
three settings stepped in turn (round-robin, the order rotating every round) so a busy machine
slows all of them alike:

- ``equal/sdpa``: two micro-batches of 8 records each after sorting by length (``equal_split``),
  PyTorch's sdpa attention (the engine before session 7);
- ``least/sdpa``: the engine's cut that pads the fewest tokens (``split_micro_batches``);
- ``least/eager``: that cut with eager attention (``train.attention: eager``, the demo_fast preset).

No optimiser step: the settings must see the same weights. Prints seconds per setting and round
and the ratio of each to ``equal/sdpa``, plus the padded tokens of each cut.

Usage: ``python benchmarks/bench_demo_step.py [--config demo_fast] [--method harmonia]
[--steps 8] [--rounds 2]`` (about five minutes on two idle CPU cores with the target cached; the
first run of a config prepares its target, which takes much longer).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from harmonia.config import load_config
from harmonia.methods.base import MethodContext
from harmonia.models import load_model
from harmonia.pipelines.demo import load_demo_data, plan_unlearning, select
from harmonia.pipelines.demo_config import DemoConfig, demo_config_path
from harmonia.pipelines.targets import prepare_model
from harmonia.training.batching import BatchSchedule, collate
from harmonia.training.engine import equal_split, padded_tokens, split_micro_batches
from harmonia.training.trainable import apply_trainable

Split = Callable[[Sequence[int], int], list[list[int]]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="demo_fast")
    parser.add_argument("--method", default="harmonia", help="the main method, or a baseline's label")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    cfg = load_config(DemoConfig, demo_config_path(args.config), [])
    quiet = lambda *_: None  # noqa: E731
    data = load_demo_data(cfg, log=quiet)
    target = prepare_model("target", data.base.path, data.records, cfg.teacher, cfg.target, data.base.tokenizer,
                           scope=data.context.scope, log=print)
    main_method = args.method == cfg.unlearn.method.name
    method_cfg = cfg.unlearn.method if main_method else cfg.method_config(args.method)
    plan = plan_unlearning(cfg, method_cfg, target.model_dir, select(data.train, cfg.unlearn.records),
                           main=main_method)
    loaded = load_model(str(target.model_dir))
    model = apply_trainable(loaded.model, plan.train).train()
    reference = load_model(str(target.model_dir)).model.eval().requires_grad_(False)

    @contextlib.contextmanager
    def frozen() -> Iterator[Any]:
        yield reference

    ctx = MethodContext(tokenizer=loaded.tokenizer, max_length=plan.train.max_length, reference=frozen)
    method = plan.method(plan.params, ctx)
    records = method.prepare(plan.records)
    schedule = BatchSchedule(records, plan.train.mix or method.default_mix, plan.train.batch_size, plan.train.seed)
    parts = plan.train.batch_size // plan.train.micro_batch_size
    batches = [[method.encode(records[i]) for i in batch] for batch in schedule.batches(args.steps)]
    lengths = [[len(ex["input_ids"]) for ex in batch] for batch in batches]
    real = sum(sum(ls) for ls in lengths)
    for name, split in (("equal", equal_split), ("least", split_micro_batches)):
        padded = sum(padded_tokens(ls, split(ls, parts)) for ls in lengths)
        print(f"{name} cut: {padded} padded tokens for {real} real ones ({padded / real:.2f}x)")

    def run(split: Split, attention: str) -> float:
        model.set_attn_implementation(attention)
        start = time.perf_counter()
        for batch, ls in zip(batches, lengths, strict=True):
            for part in split(ls, parts):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=plan.train.bf16):
                    terms = method.loss(model, collate([batch[i] for i in part]))
                    loss = sum(term.weight * term.total for term in terms.values())
                loss.backward()
            model.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    settings: dict[str, tuple[Split, str]] = {"equal/sdpa": (equal_split, "sdpa"),
                                              "least/sdpa": (split_micro_batches, "sdpa"),
                                              "least/eager": (split_micro_batches, "eager")}
    run(split_micro_batches, "sdpa")  # warm-up: allocator, kernels
    seconds: dict[str, list[float]] = {name: [] for name in settings}
    names = list(settings)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            seconds[name].append(run(*settings[name]))
            print(f"round {r + 1} {name}: {seconds[name][-1]:.1f} s", flush=True)
    base = statistics.median(seconds["equal/sdpa"])
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"{name}: median {median:.1f} s for {args.steps} steps ({median / base:.2f}x equal/sdpa)")


if __name__ == "__main__":
    main()
