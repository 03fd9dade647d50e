"""Benchmark (not a test): cost of a harmonia unlearning step relative to a plain SFT step.

Measured in one process, on the same records, with the embedded model
(``harmonia.models.load_model()``) and full fine-tuning, stepping the three settings in turn
(round-robin, the order rotating every round) so a busy machine slows all of them alike:

- ``sft``: the plain SFT step (baseline);
- ``live``: harmonia with the live teacher (the frozen starting weights, a copy as the engine
  keeps for full fine-tuning, run on the instructed input every step);
- ``cached``: harmonia with the teacher's Top-K computed once in ``prepare()`` (hinge push).

A step is what the engine does per optimiser step: the method's loss terms, normalised by the
global unit counts, backward, gradient clipping at 1.0, AdamW step. Distillation runs on the gold
answer positions (``response: gold``), so the student sees the tokens SFT sees and only the
teacher's share differs. The FLOP floor of the live step is ``1 + T_teacher / (3 T_student)``: a
teacher forward costs about a third of a student forward + backward per token. Goals (issue 4):
live within 10% of its floor, cached <= 1.05.

Memory, per setting: the peak during a step above the level before it (activations, logits,
gradients), measured in one extra round after the timed ones. On CPU that is the process's
resident set size sampled every 2 ms by a thread (psutil; freed heap is trimmed with
``malloc_trim`` before each step so the level starts clean); on CUDA
``torch.cuda.max_memory_allocated``. The persistent extra of each setting is printed beside
it: the frozen teacher copy for ``live`` (none with LoRA, where the teacher is the base with
the adapter disabled) and the cached Top-K for ``cached``. tracemalloc would miss torch's
allocations.

Usage: ``python benchmarks/bench_distill_step.py [--batch-size 8] [--steps 4]`` (about two
minutes on two idle CPU cores).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import tempfile
import time
from pathlib import Path

from distill_common import PeakMemory, build_methods, prepare_batches, records, token_counts, train_step


def main() -> None:
    import torch

    from harmonia.models import load_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=8, help="records per step (half forget, half retain)")
    parser.add_argument("--steps", type=int, default=4, help="rounds of the three settings; the first is warm-up")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be >= 2 (the first round is a warm-up)")

    torch.manual_seed(0)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    loaded = load_model(device=device)
    model, tok = loaded.model, loaded.tokenizer
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    recs = records(args.batch_size // 2)
    tmp = tempfile.TemporaryDirectory()
    methods = build_methods(tok, teacher, Path(tmp.name) / "cache", 512)
    prepared = prepare_batches(methods, recs, device)
    prepare = {n: p["prepare_s"] for n, p in prepared.items()}

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-7)
    model.train()
    memory = PeakMemory(cuda)
    seconds: dict[str, list[float]] = {n: [] for n in methods}
    peaks: dict[str, float] = {}
    order = list(methods)
    # timed rounds run without the memory sampler (its polling thread would cost time); one more
    # round afterwards measures memory
    for round_ in range(args.steps + 1):
        sampled = round_ == args.steps
        for name in order[round_ % 3:] + order[: round_ % 3]:
            with memory.measure() if sampled else contextlib.nullcontext():
                t0 = time.perf_counter()
                train_step(methods[name], model, prepared[name], optimizer)
                if cuda:
                    torch.cuda.synchronize()
                elapsed = time.perf_counter() - t0
            if sampled:
                peaks[name] = memory.peak
            elif round_ > 0:
                seconds[name].append(elapsed)
    tmp.cleanup()

    step = {n: statistics.median(s) for n, s in seconds.items()}
    student_tokens, teacher_tokens = token_counts(prepared)
    floor = 1 + teacher_tokens / (3 * student_tokens["live"])
    teacher_mb = sum(p.numel() * p.element_size() for p in teacher.parameters()) / 2**20
    topk = methods["cached"].topk.values()  # type: ignore[attr-defined]
    cache_mb = sum(t.ids.numel() * 8 + t.values.numel() * 4 for t in topk) / 2**20
    persistent = {"sft": "", "live": f"teacher copy {teacher_mb:.0f} MB", "cached": f"Top-K {cache_mb:.2f} MB"}
    print(f"device {device}, {len(recs)} records per step, {args.steps - 1} timed rounds after 1 warm-up")
    print(f"tokens per step: SFT student {student_tokens['sft']}, harmonia student {student_tokens['live']}, "
          f"live teacher {teacher_tokens}")
    print(f"{'setting':<8}{'step s':>9}{'/ SFT':>8}{'goal':>8}{'prepare s':>11}{'step peak MB':>14}  persistent extra")
    for name in methods:
        goal = {"sft": "", "live": f"{floor:.3f}", "cached": "1.050"}[name]
        print(f"{name:<8}{step[name]:>9.3f}{step[name] / step['sft']:>8.3f}{goal:>8}{prepare[name]:>11.1f}"
              f"{peaks[name]:>14.0f}  {persistent[name]}")
    print(f"live: {step['live'] / step['sft'] / floor:.3f} x its FLOP floor {floor:.3f} (goal <= 1.10); "
          f"cached: {step['cached'] / step['sft']:.3f} x SFT (goal <= 1.05)")
    print("step peak: " + ("torch.cuda.max_memory_allocated above the level at the step's start" if cuda else
                           "sampled RSS above the level at the step's start (activations, logits, gradients)"))


if __name__ == "__main__":
    main()
