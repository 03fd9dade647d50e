"""The training engine: one loop on accelerate for fine-tuning and every unlearning method.

The method only encodes records and returns loss terms (sums over units). The engine

- draws each step's global batch from a schedule that does not depend on the process count,
- splits it into micro-batches, gives each process its share, and accumulates gradients,
- divides every term by the count of its units in the whole global batch (not the micro-batch),
  so the loss is the same however the batch is split, padded or distributed,
- stops on a NaN/inf term naming the step and the term, keeping the last good checkpoint,
- checkpoints model, optimiser, scheduler, RNG states and the step; ``resume`` continues there.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harmonia.config import TrainConfig
from harmonia.data.schema import QARecord
from harmonia.errors import ConfigError, NonFiniteLossError
from harmonia.io import atomic_path
from harmonia.methods.base import Example, Method, MethodContext, Term
from harmonia.progress import progress_bar
from harmonia.training.batching import BatchSchedule, collate
from harmonia.training.distributed import prepare_frozen
from harmonia.training.interpolation import interpolate_, start_weights
from harmonia.training.precision import FrozenCast, frozen_linears_in
from harmonia.training.trainable import apply_trainable, trainable_parameter_count

CHECKPOINT_PREFIX = "step-"
_FUSED_ADAMW_DEVICES = ("cpu", "cuda")  # where torch (>= 2.4) has a fused AdamW kernel


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    history: list[dict[str, float]] = field(default_factory=list)
    model_dir: Path | None = None
    seconds: float = 0.0


def num_steps(cfg: TrainConfig, schedule: BatchSchedule) -> int:
    if cfg.steps is not None:
        return cfg.steps
    assert cfg.epochs is not None
    return max(1, math.ceil(cfg.epochs * schedule.steps_per_epoch()))


def padded_tokens(lengths: Sequence[int], chunks: Sequence[Sequence[int]]) -> int:
    """Tokens the forward passes of ``chunks`` (indices into ``lengths``) compute, padding included."""
    return sum(len(c) * max(lengths[i] for i in c) for c in chunks if c)


def split_micro_batches(lengths: Sequence[int], parts: int) -> list[list[int]]:
    """Split the batch's indices into exactly ``parts`` chunks that waste the least padding.

    The count is fixed so every process runs the same number of forward/backward passes each
    step, even when anchor pairs add a record to the global batch. Indices are sorted by length
    and cut into contiguous chunks: the equal split (sizes differ by at most one), unless unequal
    chunks pad fewer tokens, as when two long MMLU prompts share a step with fourteen short
    questions (two rows of 358 tokens and fourteen of ~90, not eight of each). No chunk pads more
    tokens than the equal split's largest, so the memory a ``micro_batch_size`` was chosen for
    still suffices. The step's gradient is the same sum whatever the grouping, since every term
    is normalised by its count in the global batch.
    """
    equal = equal_split(lengths, parts)
    if len(lengths) <= parts:
        return equal
    order = [i for chunk in equal for i in chunk]  # sorted by length
    cap = max(len(c) * lengths[c[-1]] for c in equal if c)
    sizes = _least_padding_sizes([lengths[i] for i in order], parts, cap)
    if sizes is not None:
        best = _cut(order, sizes)
        if padded_tokens(lengths, best) < padded_tokens(lengths, equal):
            return best
    return equal


def equal_split(lengths: Sequence[int], parts: int) -> list[list[int]]:
    """The indices sorted by length, cut into ``parts`` contiguous chunks whose sizes differ by at
    most one (the engine's cut when unequal chunks save no padding)."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    base, extra = divmod(len(order), parts)
    return _cut(order, [base + (1 if i < extra else 0) for i in range(parts)])


def _cut(order: list[int], sizes: Sequence[int]) -> list[list[int]]:
    out, start = [], 0
    for size in sizes:
        out.append(order[start:start + size])
        start += size
    return out


def _least_padding_sizes(sorted_lengths: Sequence[int], parts: int, cap: int) -> list[int] | None:
    """Sizes of ``parts`` non-empty contiguous chunks of ascending ``sorted_lengths`` with the fewest
    padded tokens, each chunk at most ``cap`` padded tokens (dynamic programming; n is a batch)."""
    n = len(sorted_lengths)
    inf = float("inf")
    # cost[p][j]: fewest padded tokens of the first j records in p chunks; cut[p][j]: last chunk's start
    cost = [[inf] * (n + 1) for _ in range(parts + 1)]
    cut = [[0] * (n + 1) for _ in range(parts + 1)]
    cost[0][0] = 0
    for p in range(1, parts + 1):
        for j in range(p, n + 1):
            for i in range(p - 1, j):
                chunk = (j - i) * sorted_lengths[j - 1]
                if chunk <= cap and cost[p - 1][i] + chunk < cost[p][j]:
                    cost[p][j], cut[p][j] = cost[p - 1][i] + chunk, i
    if cost[parts][n] == inf:
        return None
    sizes, j = [], n
    for p in range(parts, 0, -1):
        sizes.append(j - cut[p][j])
        j = cut[p][j]
    return sizes[::-1]


def set_attention(model: Any, name: str | None) -> str | None:
    """Switch ``model``'s attention kernel to ``name`` (None: leave it); returns the one it had."""
    config = getattr(model, "config", None)
    before = getattr(config, "_attn_implementation", None)
    if name is None or name == before:
        return before
    try:
        model.set_attn_implementation(name)
    except (ValueError, ImportError, AttributeError) as exc:
        raise ConfigError(f"train.attention: cannot use '{name}' for this model: {exc}") from exc
    return before


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int) -> Any:
    from transformers import get_scheduler

    warmup = round(cfg.warmup_ratio * total_steps)
    name = "constant_with_warmup" if cfg.scheduler == "constant" else cfg.scheduler
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


def latest_checkpoint(run_dir: Path) -> Path | None:
    ckpts = [p for p in (run_dir / "checkpoints").glob(f"{CHECKPOINT_PREFIX}*") if (p / "state.json").is_file()]
    return max(ckpts, key=lambda p: int(p.name.removeprefix(CHECKPOINT_PREFIX)), default=None)


def _fresh_accelerator_state() -> None:
    """Forget the precision and accumulation settings of an earlier run in this process.

    accelerate keeps one global state per process and refuses an ``Accelerator`` whose mixed
    precision differs from the first one's, but one process may train several times: the demo's
    stages, a relearning attack inside an evaluation after a bf16 unlearning run, the ablation.
    The process group (``PartialState``) is kept, so this is safe under ``accelerate launch``.
    """
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


class Engine:
    """Trains ``model`` with ``method`` on ``records``; writes everything under ``run_dir``."""

    def __init__(self, cfg: TrainConfig, method_cls: type[Method], method_params: Any, model: Any,
                 tokenizer: Any, run_dir: str | Path, *, context_extras: dict[str, Any] | None = None) -> None:
        from accelerate import Accelerator, PartialState

        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.tokenizer = tokenizer
        # On a CPU-only machine accelerate must be told so, or a multi-process launch falls back to
        # independent single processes instead of a gloo process group.
        cpu = not torch.cuda.is_available()
        processes = PartialState(cpu=cpu).num_processes
        n_micro = cfg.batch_size // cfg.micro_batch_size
        if n_micro % processes:
            raise ConfigError(f"train: {n_micro} micro-batches per step (batch_size {cfg.batch_size} / "
                              f"micro_batch_size {cfg.micro_batch_size}) do not split evenly over "
                              f"{processes} processes")
        self.micro_per_process = n_micro // processes
        # accelerate (and DeepSpeed) run the accumulation: no gradient sync until the last
        # micro-batch. On a CPU-only machine accelerate must be told so, or a multi-process
        # launch falls back to independent single processes instead of a gloo process group.
        _fresh_accelerator_state()
        self.accelerator = Accelerator(mixed_precision="bf16" if cfg.bf16 else "no", cpu=cpu,
                                       gradient_accumulation_steps=self.micro_per_process)
        if cfg.update_scale != 1 and self._sharded():
            raise ConfigError(f"train.update_scale {cfg.update_scale}: interpolating with the start needs every "
                              "weight whole in each process, not sharded by FSDP or DeepSpeed; train with "
                              "update_scale 1 and run `harmonia interpolate` on the saved model")
        torch.manual_seed(cfg.seed)
        self._loaded_attention = set_attention(model, cfg.attention)
        model = apply_trainable(model, cfg)
        self._frozen_reference, self._reference_freed = None, False
        if method_cls.needs_reference and cfg.lora is None:
            self._frozen_reference = copy.deepcopy(model).eval().requires_grad_(False)
        self.model = model
        ctx = MethodContext(tokenizer=tokenizer, max_length=cfg.max_length,
                            reference=self._reference if method_cls.needs_reference else None,
                            extras=dict(context_extras or {}))
        self.method = method_cls(method_params, ctx)
        self.method.configure_trainable(self.model)

    # -- reference model -------------------------------------------------------------------
    @contextlib.contextmanager
    def _reference(self) -> Iterator[Any]:
        if self._reference_freed:
            raise RuntimeError(f"method '{self.method.name}' asked for the reference model in its loss, but "
                               "its reference_in_loss is False, so the engine freed it after prepare()")
        if self._frozen_reference is not None:
            yield self._frozen_reference
            return
        # The adapter switch lives inside the wrapped module, so the forward goes through the
        # DDP / FSDP / DeepSpeed wrapper, which gathers sharded weights as usual.
        with self.accelerator.unwrap_model(self.model).disable_adapter():
            yield self.model

    # -- main loop ---------------------------------------------------------------------------
    def train(self, records: list[QARecord], *, resume: bool = False) -> TrainResult:
        cfg, acc = self.cfg, self.accelerator
        started = time.perf_counter()
        if self._frozen_reference is not None:
            # Placed before ``prepare`` so teacher work done there runs on the accelerator too.
            self._frozen_reference = prepare_frozen(acc, self._frozen_reference)
        records = self.method.prepare(records)
        if self._frozen_reference is not None and not self.method.reference_in_loss:
            # its work is done (a teacher cache, reference log-probs): a whole model's memory back
            self._frozen_reference, self._reference_freed = None, True
        mix = cfg.mix or self.method.default_mix or None
        if mix is None:
            outside = sorted({r.role for r in records} - set(self.method.roles))
            if outside:
                raise ConfigError(f"method '{self.method.name}' does not train on roles {outside}")
        elif unknown := set(mix) - set(self.method.roles):
            raise ConfigError(f"train.mix: method '{self.method.name}' does not train on roles {sorted(unknown)}")
        schedule = BatchSchedule(records, mix, cfg.batch_size, cfg.seed)
        total = num_steps(cfg, schedule)
        batches = schedule.batches(total)

        # taken before prepare and before a resumed checkpoint is loaded: the weights the run started from
        start = start_weights(self.model) if cfg.update_scale != 1 else None
        # The fused kernel updates each tensor in one pass: 0.24x the for-loop's time on the demo's CPU,
        # about 0.2 s of a 4-5 s step (docs/demo.md).
        optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad],
                                      lr=cfg.lr, weight_decay=cfg.weight_decay,
                                      fused=acc.device.type in _FUSED_ADAMW_DEVICES)
        scheduler = make_scheduler(optimizer, cfg, total)
        # The scheduler stays out of ``prepare``: accelerate would step it once per process per
        # optimiser step, so the schedule would depend on the number of processes.
        self.model, optimizer = acc.prepare(self.model, optimizer)
        acc.register_for_checkpointing(scheduler)

        start_step, history = 0, []
        if resume:
            ckpt = latest_checkpoint(self.run_dir)
            if ckpt is not None:
                acc.load_state(str(ckpt))
                state = json.loads((ckpt / "state.json").read_text())
                start_step, history = state["step"], state["history"]
        if start_step == 0 and acc.is_main_process:  # a fresh run in a used folder starts a fresh log
            (self.run_dir / "train_log.jsonl").unlink(missing_ok=True)
        trainable, n_params = trainable_parameter_count(self.model)
        self._log_line({"event": "start", "steps": total, "start_step": start_step, "trainable": trainable,
                        "parameters": n_params, "processes": acc.num_processes, "method": self.method.name})

        self.model.train()
        try:
            with frozen_linears_in(self._plain_models(), self._frozen_dtype()) as cast:
                if len(cast):
                    self._log_line({"event": "frozen_linears", "dtype": "bfloat16", "tensors": len(cast)})
                history = self._loop(start_step, total, batches, records, optimizer, scheduler, history, cast)
        finally:
            # the caller's model object goes on (evaluation, a relearning attack) with its own kernel
            set_attention(acc.unwrap_model(self.model), self._loaded_attention)
        if start is not None:
            moved = interpolate_(acc.unwrap_model(self.model), start, cfg.update_scale)
            self._log_line({"event": "update_scale", "scale": cfg.update_scale, "tensors": moved})
        result = TrainResult(run_dir=self.run_dir, steps=total, history=history,
                             seconds=time.perf_counter() - started)
        result.model_dir = self._save_final()
        return result

    def _plain_models(self) -> list[Any]:
        """The trained model and a kept frozen reference, as plain modules."""
        models = [self.accelerator.unwrap_model(self.model)]
        if isinstance(self._frozen_reference, torch.nn.Module):
            models.append(self._frozen_reference)
        return models

    def _frozen_dtype(self) -> torch.dtype | None:
        """bfloat16 where frozen linear weights may be held in it (see ``training/precision.py``).

        Only on CPU: there the per-call cast is 3-13% of a step, and the float32 originals stay
        in the same memory. On a GPU the cast is cheap next to the matmul, and sharding engines
        (FSDP, DeepSpeed) own their parameters' storage.
        """
        acc = self.accelerator
        return torch.bfloat16 if self.cfg.bf16 and acc.device.type == "cpu" and not self._sharded() else None

    def _sharded(self) -> bool:
        """Whether FSDP or DeepSpeed own (and shard) the parameters."""
        from accelerate.utils import DistributedType

        return self.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)

    def _loop(self, start_step: int, total: int, batches: list[list[int]], records: list[QARecord],
              optimizer: Any, scheduler: Any, history: list[dict[str, float]],
              cast: FrozenCast) -> list[dict[str, float]]:
        cfg, acc = self.cfg, self.accelerator
        examples: list[Example | None] = [None] * len(records)
        writer = self._tensorboard()
        extra = "{task.fields[losses]} {task.fields[speed]}"
        with progress_bar(f"{self.method.name}", total=total, enabled=cfg.progress and acc.is_main_process,
                          extra=extra) as advance:
            advance(start_step)
            for step in range(start_step, total):
                t0 = time.perf_counter()
                record = self._step(step, batches[step], records, examples, optimizer, scheduler)
                record["seconds"] = time.perf_counter() - t0
                history.append(record)
                if writer is not None:
                    for key, value in record.items():
                        writer.add_scalar(f"train/{key}", value, step + 1)
                if (step + 1) % cfg.log_every == 0 or step + 1 == total:
                    self._log_line({"step": step + 1, **record})
                shown = " ".join(f"{k}={v:.4g}" for k, v in record.items() if k.startswith("loss"))
                advance(1, losses=shown, speed=f"{record['tokens'] / record['seconds']:.0f} tok/s")
                if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < total:
                    with cast.originals():
                        self._save_checkpoint(step + 1, history)
        if writer is not None:
            writer.close()
        return history

    def _step(self, step: int, batch_idx: list[int], records: list[QARecord], examples: list[Example | None],
              optimizer: Any, scheduler: Any) -> dict[str, float]:
        cfg, acc = self.cfg, self.accelerator
        for i in batch_idx:
            if examples[i] is None:
                examples[i] = self.method.encode(records[i])
        global_batch = [examples[i] for i in batch_idx]
        units = {k: float(v) for k, v in self.method.units(collate(global_batch)).items()}
        micro = split_micro_batches([len(ex["input_ids"]) for ex in global_batch],
                                    self.micro_per_process * acc.num_processes)
        mine = micro[acc.process_index::acc.num_processes]
        sums: dict[str, torch.Tensor] = {}
        weights: dict[str, tuple[float, str]] = {}
        for part in mine:
            batch = {k: v.to(acc.device) for k, v in collate([global_batch[i] for i in part]).items()}
            with acc.accumulate(self.model):
                with acc.autocast():
                    terms = self.method.loss(self.model, batch)
                    # Terms are already normalised by global counts; undo the 1/steps that
                    # accelerate applies in backward, and the 1/processes of gradient averaging.
                    loss = self._normalised(terms, units) * acc.num_processes * self.micro_per_process
                self._check_finite(step, terms)
                acc.backward(loss)
            for name, term in terms.items():
                sums[name] = sums.get(name, 0) + term.total.detach().float()
                weights[name] = (term.weight, term.unit)
        if cfg.max_grad_norm:
            acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        record: dict[str, float] = {}
        total_loss = 0.0
        for name in sorted(sums):
            value = float(acc.reduce(sums[name], reduction="sum")) / max(units[weights[name][1]], 1.0)
            record[f"loss/{name}"] = value
            total_loss += weights[name][0] * value
        record["loss"] = total_loss
        record["lr"] = float(scheduler.get_last_lr()[0])
        record["tokens"] = float(sum(len(ex["input_ids"]) for ex in global_batch))
        return record

    @staticmethod
    def _normalised(terms: dict[str, Term], units: dict[str, float]) -> torch.Tensor:
        loss = torch.zeros(())
        for name, term in terms.items():
            if term.unit not in units:
                raise KeyError(f"loss term '{name}' is normalised by unknown unit '{term.unit}'")
            count = units[term.unit]
            if count > 0 and term.weight != 0:
                loss = loss + term.weight * term.total / count
        return loss

    def _check_finite(self, step: int, terms: dict[str, Term]) -> None:
        for name, term in terms.items():
            value = float(term.total.detach())
            if not math.isfinite(value):
                self._log_line({"event": "non_finite", "step": step + 1, "term": name, "value": str(value)})
                raise NonFiniteLossError(step + 1, name, value)

    # -- outputs -----------------------------------------------------------------------------
    def _tensorboard(self) -> Any:
        if not self.accelerator.is_main_process:
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))

    def _log_line(self, obj: dict[str, Any]) -> None:
        if self.accelerator.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with open(self.run_dir / "train_log.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(obj) + "\n")

    def _save_checkpoint(self, step: int, history: list[dict[str, float]]) -> None:
        acc = self.accelerator
        dest = self.run_dir / "checkpoints" / f"{CHECKPOINT_PREFIX}{step}"
        if acc.is_main_process:
            with atomic_path(dest, directory=True) as tmp:
                acc.save_state(str(tmp))
                (tmp / "state.json").write_text(json.dumps({"step": step, "history": history}))
            old = sorted((self.run_dir / "checkpoints").glob(f"{CHECKPOINT_PREFIX}*"),
                         key=lambda p: int(p.name.removeprefix(CHECKPOINT_PREFIX)))
            for stale in old[: -self.cfg.keep_checkpoints]:
                shutil.rmtree(stale, ignore_errors=True)
        acc.wait_for_everyone()

    def _save_final(self) -> Path | None:
        acc = self.accelerator
        acc.wait_for_everyone()
        if self.cfg.save == "none":
            return None
        dest = self.run_dir / "model"
        model = acc.unwrap_model(self.model)
        if acc.is_main_process:
            with atomic_path(dest, directory=True) as tmp:
                if self.cfg.lora is not None and self.cfg.save == "merged":
                    merged = copy.deepcopy(model).merge_and_unload()
                    merged.save_pretrained(tmp, safe_serialization=True)
                else:
                    model.save_pretrained(tmp, safe_serialization=True)
                self.tokenizer.save_pretrained(tmp)
        acc.wait_for_everyone()
        return dest
