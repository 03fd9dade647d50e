"""Pieces shared by the distillation benchmarks (``bench_distill_step.py`` on CPU,
``bench_gpu_unlearn.py`` on one GPU): records, the three settings built from harmonia's own
methods, the engine's optimiser step, and a peak-memory probe.

A step here is what :class:`harmonia.training.engine.Engine` does per optimiser step with one
micro-batch and one process: the method's loss terms, normalised by the global unit counts
(``Engine._normalised``), backward, gradient clipping at 1.0, the optimiser step.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
import time
from pathlib import Path
from typing import Any

SHARED_TOFU = Path(__file__).resolve().parents[2] / "shared" / "data" / "tofu"


def records(n: int) -> list[Any]:
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


SETTINGS = ("sft", "live", "cached")


def build_methods(tokenizer: Any, teacher: Any, cache_dir: Path, max_length: int,
                  teacher_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """SFT, harmonia with the live teacher, harmonia with the cached Top-K (hinge push), on the gold answers.

    Distillation runs on the gold answer positions (``response: gold``), so the student sees the
    tokens SFT sees and only the teacher's share differs.
    """
    from harmonia.methods.base import MethodContext, build_params, get_method

    harmonia = get_method("harmonia")
    distill = {"positions": ["response"], "response": "gold", "push": "hinge",
               "teacher": {"cache_dir": str(cache_dir), **(teacher_config or {})}}
    frozen = MethodContext(tokenizer, max_length, reference=lambda: contextlib.nullcontext(teacher))
    sft = get_method("sft")
    return {
        "sft": sft(build_params(sft, {}), MethodContext(tokenizer, max_length)),
        "live": harmonia(build_params(harmonia, distill), frozen),
        "cached": harmonia(build_params(harmonia, {**distill, "cache": True}), frozen),
    }


def prepare_batches(methods: dict[str, Any], records: list[Any], device: Any) -> dict[str, dict[str, Any]]:
    """Per setting: ``prepare`` seconds, the encoded examples, the collated batch on ``device``, its unit counts."""
    from harmonia.training.batching import collate

    out: dict[str, dict[str, Any]] = {}
    for name, method in methods.items():
        t0 = time.perf_counter()
        method.prepare(records)
        prepare_s = time.perf_counter() - t0
        examples = [method.encode(r) for r in records]
        batch = collate(examples)
        out[name] = {"prepare_s": prepare_s, "examples": examples,
                     "units": {k: float(v) for k, v in method.units(batch).items()},
                     "batch": {k: v.to(device) for k, v in batch.items()}}
    return out


def train_step(method: Any, model: Any, prepared: dict[str, Any], optimizer: Any,
               autocast: contextlib.AbstractContextManager[Any] | None = None) -> None:
    """One engine step of ``method`` on its prepared batch (see the module docstring)."""
    import torch

    from harmonia.training.engine import Engine

    with autocast or contextlib.nullcontext():
        terms = method.loss(model, prepared["batch"])
        loss = Engine._normalised(terms, prepared["units"])
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def token_counts(prepared: dict[str, dict[str, Any]]) -> tuple[dict[str, int], int]:
    """Student tokens per step of each setting, and the live teacher's tokens per step."""
    student = {n: sum(len(e["input_ids"]) for e in p["examples"]) for n, p in prepared.items()}
    return student, sum(len(e["teacher_input_ids"]) for e in prepared["live"]["examples"])
