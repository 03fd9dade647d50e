"""One training step of the embedded model, eager against ``torch.compile`` (one run, one shape).

The step is the demo's unlearning configuration: float32, the top 15 of 30 decoder layers trained
(``apply_trainable``), next-token loss on 8 rows of random tokens, AdamW. Each mode runs in its own
subprocess so the compiled graph's caches do not leak into the eager run. Prints the first step
(for the compiled model: the compilation) and the mean of the next ones. Usage::

    python benchmarks/bench_compile_step.py [--steps 4] [--tokens 96] [--modes eager,compile]
"""

from __future__ import annotations

import argparse
import json
import time

from child_process import measure_in_child


def run_one(mode: str, steps: int, tokens: int) -> dict[str, float]:
    import torch

    from harmonia.config import TrainConfig
    from harmonia.models import load_model
    from harmonia.training.trainable import apply_trainable

    torch.manual_seed(0)
    model = apply_trainable(load_model().model, TrainConfig(steps=1, train_top_layers=15))
    forward = torch.compile(model, dynamic=False) if mode == "compile" else model
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    ids = torch.randint(100, 40_000, (8, tokens))

    def step() -> float:
        start = time.perf_counter()
        forward(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return time.perf_counter() - start

    first = step()
    rest = [step() for _ in range(steps)]
    return {"first_s": first, "step_s": sum(rest) / len(rest)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--modes", default="eager,compile")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child, args.steps, args.tokens)))
        return
    rows = {}
    for mode in args.modes.split(","):
        rows[mode] = measure_in_child(__file__, mode, "--steps", str(args.steps), "--tokens", str(args.tokens))
    base = rows[next(iter(rows))]["step_s"]
    print(f"{'mode':<8} {'first step s':>13} {'step s':>8} {'vs first':>9}")
    for mode, r in rows.items():
        print(f"{mode:<8} {r['first_s']:>13.1f} {r['step_s']:>8.2f} {r['step_s'] / base:>9.2f}")


if __name__ == "__main__":
    main()
