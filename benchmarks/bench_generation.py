"""Batched greedy generation against one example at a time, on the embedded model (one run).

The 16 questions are the first 16 of TOFU forget01 shipped with harmonia, chat-formatted as
the evaluation asks them. Both runs use :func:`harmonia.evaluation.generation.generate` (the
only difference is ``batch_size``) after one untimed warm-up call. Prints both times, the
speed-up and how many of the 16 answers are identical between the two runs. Wall time is the
headline; CPU time of this process is printed beside it because on a shared machine other jobs
inflate wall time of whichever run they overlap. Usage::

    python benchmarks/bench_generation.py [--n 16] [--max-new-tokens 64] [--batch-size 16] [--threads N]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable


def timed(fn: Callable[[], list[str]]) -> tuple[list[str], float, float]:
    """``fn()``, its wall time and this process's CPU time, in seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()

    import torch

    if args.threads:
        # On a shared machine one thread per process avoids threads spinning while others hold the cores.
        torch.set_num_threads(args.threads)

    from harmonia.data.loaders.tofu import load_tofu
    from harmonia.data.paths import resources_dir
    from harmonia.evaluation.generation import generate
    from harmonia.models import load_model
    from harmonia.models.chat import render_prompt

    torch.manual_seed(0)
    loaded = load_model()
    records = load_tofu(resources_dir() / "data" / "tofu" / "forget01.json", role="forget")[: args.n]
    prompts = [render_prompt(loaded.tokenizer, r.question) for r in records]
    kw = {"max_new_tokens": args.max_new_tokens, "progress": False}
    generate(loaded.model, loaded.tokenizer, prompts[:2], batch_size=2, **{**kw, "max_new_tokens": 4})  # warm-up

    batched, batched_wall, batched_cpu = timed(lambda: generate(loaded.model, loaded.tokenizer, prompts,
                                                                 batch_size=args.batch_size, **kw))
    single, single_wall, single_cpu = timed(lambda: generate(loaded.model, loaded.tokenizer, prompts,
                                                              batch_size=1, **kw))

    same = sum(a == b for a, b in zip(batched, single, strict=True))
    print(f"model: {loaded.spec} on {next(loaded.model.parameters()).device}, torch threads: "
          f"{torch.get_num_threads()}")
    print(f"{len(prompts)} TOFU questions, greedy, max_new_tokens={args.max_new_tokens}")
    print(f"batched (batch_size={args.batch_size}): {batched_wall:.2f} s wall, {batched_cpu:.2f} s CPU")
    print(f"one at a time (batch_size=1): {single_wall:.2f} s wall, {single_cpu:.2f} s CPU")
    print(f"speed-up: {single_wall / batched_wall:.1f}x wall, {single_cpu / batched_cpu:.1f}x CPU")
    print(f"identical answers: {same}/{len(prompts)}")


if __name__ == "__main__":
    main()
