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
import ctypes
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

SHARED_TOFU = Path(__file__).resolve().parents[2] / "shared" / "data" / "tofu"


def _records(n: int) -> list[Any]:
    """``n`` TOFU forget01 questions and ``n`` retain questions (synthetic when TOFU is absent)."""
    from harmonia.data.schema import QARecord

    if (SHARED_TOFU / "forget01.json").is_file():
        from harmonia.data.loaders.tofu import load_tofu

        forget = load_tofu(SHARED_TOFU / "forget01.json", role="forget")[:n]
        retain = load_tofu(SHARED_TOFU / "retain99.json", role="retain", authors=[0, 1])[:n]
        return forget + retain
    return [QARecord(id=f"{role}{i}", question=f"Where was writer number {i} of the {role} set born?",
                     answer=f"Writer number {i} was born in a small coastal town called Port {i}, in 19{50 + i}.",
                     role=role, source="synthetic", group=f"Writer {role} {i}")
            for role in ("forget", "retain") for i in range(n)]


class PeakMemory:
    """Peak memory (MiB) during a block, above the level at its start."""

    def __init__(self, cuda: bool) -> None:
        import psutil

        self.cuda = cuda
        self.proc = psutil.Process()
        self.peak = 0.0
        try:
            self._trim = ctypes.CDLL("libc.so.6").malloc_trim
        except OSError:  # not glibc: the CPU level may then start high after a big step
            self._trim = None

    @contextlib.contextmanager
    def measure(self) -> Any:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            start = torch.cuda.memory_allocated()
            yield
            torch.cuda.synchronize()
            self.peak = (torch.cuda.max_memory_allocated() - start) / 2**20
            return
        if self._trim is not None:
            self._trim(0)
        start = self.proc.memory_info().rss
        top = [start]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                top[0] = max(top[0], self.proc.memory_info().rss)
                time.sleep(0.002)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
            top[0] = max(top[0], self.proc.memory_info().rss)
            self.peak = (top[0] - start) / 2**20


def main() -> None:
    import torch

    from harmonia.methods.base import MethodContext, build_params, get_method
    from harmonia.models import load_model
    from harmonia.training.batching import collate
    from harmonia.training.engine import Engine

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
    records = _records(args.batch_size // 2)
    tmp = tempfile.TemporaryDirectory()
    harmonia = get_method("harmonia")
    distill = {"positions": ["response"], "response": "gold", "push": "hinge",
               "teacher": {"cache_dir": str(Path(tmp.name) / "cache")}}
    methods = {
        "sft": get_method("sft")(build_params(get_method("sft"), {}), MethodContext(tok, 512)),
        "live": harmonia(build_params(harmonia, distill),
                         MethodContext(tok, 512, reference=lambda: contextlib.nullcontext(teacher))),
        "cached": harmonia(build_params(harmonia, {**distill, "cache": True}),
                           MethodContext(tok, 512, reference=lambda: contextlib.nullcontext(teacher))),
    }
    prepare: dict[str, float] = {}
    batches, units, examples = {}, {}, {}
    for name, method in methods.items():
        t0 = time.perf_counter()
        method.prepare(records)
        prepare[name] = time.perf_counter() - t0
        examples[name] = [method.encode(r) for r in records]
        batch = collate(examples[name])
        units[name] = {k: float(v) for k, v in method.units(batch).items()}
        batches[name] = {k: v.to(device) for k, v in batch.items()}

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
                terms = methods[name].loss(model, batches[name])
                Engine._normalised(terms, units[name]).backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if cuda:
                    torch.cuda.synchronize()
                elapsed = time.perf_counter() - t0
            if sampled:
                peaks[name] = memory.peak
            elif round_ > 0:
                seconds[name].append(elapsed)
    tmp.cleanup()

    step = {n: statistics.median(s) for n, s in seconds.items()}
    student_tokens = {n: sum(len(e["input_ids"]) for e in ex) for n, ex in examples.items()}
    teacher_tokens = sum(len(e["teacher_input_ids"]) for e in examples["live"])
    floor = 1 + teacher_tokens / (3 * student_tokens["live"])
    teacher_mb = sum(p.numel() * p.element_size() for p in teacher.parameters()) / 2**20
    topk = methods["cached"].topk.values()  # type: ignore[attr-defined]
    cache_mb = sum(t.ids.numel() * 8 + t.values.numel() * 4 for t in topk) / 2**20
    persistent = {"sft": "", "live": f"teacher copy {teacher_mb:.0f} MB", "cached": f"Top-K {cache_mb:.2f} MB"}
    print(f"device {device}, {len(records)} records per step, {args.steps - 1} timed rounds after 1 warm-up")
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
