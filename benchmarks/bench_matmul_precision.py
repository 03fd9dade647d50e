"""Matrix products of the embedded model's shapes in float32 and bfloat16 on this CPU (one run).

Whether bf16 training pays on a CPU depends on its matrix units: with AMX (Sapphire Rapids and
later, when the hypervisor exposes it) a bf16 product runs at about twice the float32 rate; with
AVX-512 BF16 alone it runs at about half of it. This prints which the CPU has and, for the
products of a demo micro-batch (about 700 tokens through SmolLM2-135M's projections: hidden 576,
MLP 1536, key/value 192), the GFLOP/s of each dtype and their ratio, measured back to back in
one process. ``demo_fast`` unlearns in float32 since session 14 (docs/demo.md): on a CPU
where bf16 wins here, ``unlearn.train.bf16=true`` is the faster choice. Usage::

    python benchmarks/bench_matmul_precision.py [--tokens 700] [--repeats 50]
"""

from __future__ import annotations

import argparse
import time

import torch

SHAPES = ((576, 1536), (1536, 576), (576, 576), (576, 192))
"""(in, out) of the projections in one decoder layer: MLP up/gate, MLP down, q/o, k/v."""


def gflops(tokens: int, k: int, n: int, dtype: torch.dtype, repeats: int) -> float:
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(tokens, k, generator=generator).to(dtype)
    b = torch.randn(k, n, generator=generator).to(dtype)
    for _ in range(3):  # warm-up: oneDNN picks and caches its kernel
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    seconds = (time.perf_counter() - start) / repeats
    return 2 * tokens * k * n / seconds / 1e9


def cpu_has(probe: str) -> str:
    """torch's answer to a private CPU-feature probe (``torch.cpu._is_*``), or "unknown" where this
    torch has no such probe: the timings below are the answer that matters."""
    found = getattr(torch.cpu, probe, None)
    return str(found()) if found is not None else "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=700, help="rows of each product (tokens of a micro-batch)")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, capability "
          f"{torch.backends.cpu.get_cpu_capability()}, AVX-512 BF16 {cpu_has('_is_avx512_bf16_supported')}, "
          f"AMX {cpu_has('_is_amx_tile_supported')}")
    ratios = []
    for k, n in SHAPES:
        fp32 = gflops(args.tokens, k, n, torch.float32, args.repeats)
        bf16 = gflops(args.tokens, k, n, torch.bfloat16, args.repeats)
        ratios.append(bf16 / fp32)
        print(f"{args.tokens} x {k} @ {k} x {n}: float32 {fp32:.0f} GFLOP/s, bfloat16 {bf16:.0f} GFLOP/s "
              f"(bf16 / fp32 {bf16 / fp32:.2f})")
    print(f"bf16 / fp32 rate, geometric mean over the shapes: "
          f"{torch.tensor(ratios).log().mean().exp().item():.2f}")


if __name__ == "__main__":
    main()
