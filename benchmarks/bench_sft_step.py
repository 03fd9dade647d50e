"""SFT step time, tokens/s and peak memory of the embedded model, fp32 against bf16 (one run).

Each configuration runs in its own subprocess so its peak resident memory (ru_maxrss) is its own.
The batch is 8 chat-formatted TOFU-like records padded to about 128 tokens, as in the target
preparation step. Usage::

    python benchmarks/bench_sft_step.py [--steps 4] [--configs fp32,bf16,bf16-top8,lora]
"""

from __future__ import annotations

import argparse
import json
import resource
import time

from child_process import measure_in_child

CONFIGS = {
    "fp32": {},
    "bf16": {"bf16": True},
    "bf16-top8": {"bf16": True, "train_top_layers": 8},
    "fp32-top8": {"train_top_layers": 8},
    "fp32-top15": {"train_top_layers": 15},
    "lora": {"bf16": True, "lora": {"r": 16, "alpha": 32}},
}


def run_one(name: str, steps: int) -> dict[str, float]:
    import torch

    from harmonia.config import TrainConfig
    from harmonia.data.schema import QARecord
    from harmonia.methods.base import build_params, get_method
    from harmonia.models import load_model
    from harmonia.training.engine import Engine

    torch.manual_seed(0)
    loaded = load_model()
    filler = "The author's work explores identity, memory and the cities that shaped the family. " * 3
    records = [QARecord(id=str(i), question=f"What themes does author number {i} explore in their novels?",
                        answer=filler[: 300 + 7 * i], role="retain", source="bench") for i in range(8)]
    cfg = TrainConfig(steps=steps + 1, batch_size=8, micro_batch_size=8, lr=1e-5, max_length=128,
                      progress=False, save="none", **CONFIGS[name])
    cls = get_method("sft")
    engine = Engine(cfg, cls, build_params(cls, {}), loaded.model, loaded.tokenizer, f"/tmp/bench-sft-{name}")
    start = time.perf_counter()
    result = engine.train(records)
    timed = result.history[1:]  # the first step pays one-time costs (allocation, autocast caches)
    seconds = sum(h["seconds"] for h in timed) / len(timed)
    tokens = sum(h["tokens"] for h in timed) / len(timed)
    return {"step_s": seconds, "tokens_per_s": tokens / seconds, "tokens": tokens,
            "wall_s": time.perf_counter() - start,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--configs", default="fp32,bf16")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child, args.steps)))
        return
    rows = {}
    for name in args.configs.split(","):
        rows[name] = measure_in_child(__file__, name, "--steps", str(args.steps))
    base = rows[next(iter(rows))]["step_s"]
    print(f"{'config':<10} {'step s':>8} {'tokens/s':>9} {'vs first':>9} {'peak RSS GiB':>13}")
    for name, r in rows.items():
        print(f"{name:<10} {r['step_s']:>8.2f} {r['tokens_per_s']:>9.0f} {r['step_s'] / base:>9.2f} "
              f"{r['peak_rss_gib']:>13.2f}")


if __name__ == "__main__":
    main()
