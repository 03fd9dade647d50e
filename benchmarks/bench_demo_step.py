"""Benchmark (not a test): what the micro-batch cut, the attention kernel, the precision of frozen
weights and the optimiser kernel cost a demo step.

Runs the forward and backward passes of the same global batches of one method of a demo config
(default: harmonia on ``demo_fast``, started from its cached target) in one process, under
five settings stepped in turn (round-robin, the order rotating every round) so a busy machine
slows all of them alike. The first four run under bf16 autocast (the demo's setting in sessions
7-13), whatever the config says; the fifth in float32 (demo_fast's since session 14):

- ``equal/sdpa``: two micro-batches of 8 records each after sorting by length (``equal_split``),
  PyTorch's sdpa attention (the engine before session 7);
- ``least/sdpa``: the engine's cut that pads the fewest tokens (``split_micro_batches``);
- ``least/eager``: that cut with eager attention (``train.attention: eager``, as in demo_fast);
- ``least/eager/frozen-bf16``: the frozen linear weights held in bfloat16 (``training/precision.py``,
  the engine since session 8), which gives the same losses and gradients;
- ``least/eager/float32``: no autocast at all (``train.bf16: false``, demo_fast since session 14).
  Not the same numbers: on a CPU without AMX (``benchmarks/bench_matmul_precision.py``) a bf16
  matmul runs at about half the float32 rate, so this is the fastest setting there.

No optimiser step in these: the settings must see the same weights. The optimiser is timed apart,
on copies of the trainable weights with random gradients: AdamW's default (for-loop) kernel on CPU
against the fused one the engine uses since session 8. Prints seconds per setting and round and
the ratio of each to ``equal/sdpa`` (optimiser: to the for-loop kernel), plus the padded tokens of
each cut.

Usage: ``python benchmarks/bench_demo_step.py [--config demo_fast] [--method harmonia]
[--steps 8] [--rounds 2]`` (about five minutes on two idle CPU cores with the target cached; the
first run of a config prepares its target, which takes much longer).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Iterator
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
from harmonia.training.precision import frozen_linears_in
from harmonia.training.trainable import apply_trainable


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

    def run(split: Any, attention: str, frozen_dtype: torch.dtype | None = None, bf16: bool = True) -> float:
        model.set_attn_implementation(attention)
        start = time.perf_counter()
        with frozen_linears_in([model], frozen_dtype):
            for batch, ls in zip(batches, lengths, strict=True):
                for part in split(ls, parts):
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                        terms = method.loss(model, collate([batch[i] for i in part]))
                        loss = sum(term.weight * term.total for term in terms.values())
                    loss.backward()
                model.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    settings: dict[str, tuple[Any, ...]] = {"equal/sdpa": (equal_split, "sdpa"),
                                            "least/sdpa": (split_micro_batches, "sdpa"),
                                            "least/eager": (split_micro_batches, "eager"),
                                            "least/eager/frozen-bf16": (split_micro_batches, "eager", torch.bfloat16),
                                            "least/eager/float32": (split_micro_batches, "eager", None, False)}
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
    optimiser_seconds(model, args.steps, args.rounds)


def optimiser_seconds(model: Any, steps: int, rounds: int) -> None:
    """AdamW steps over copies of ``model``'s trainable weights: for-loop kernel vs fused."""
    params = [p.detach().clone().requires_grad_(True) for p in model.parameters() if p.requires_grad]
    generator = torch.Generator().manual_seed(0)
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator) * 1e-3
    seconds: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(rounds):
        for fused in (False, True):
            optimizer = torch.optim.AdamW(params, lr=1e-4, foreach=False, fused=fused or None)
            start = time.perf_counter()
            for _ in range(steps):
                optimizer.step()
            seconds[fused].append(time.perf_counter() - start)
    base = statistics.median(seconds[False])
    fused = statistics.median(seconds[True])
    print(f"AdamW for-loop: median {base:.2f} s for {steps} steps of {sum(p.numel() for p in params):,} weights; "
          f"fused: {fused:.2f} s ({fused / base:.2f}x)")


if __name__ == "__main__":
    main()
