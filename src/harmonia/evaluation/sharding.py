"""Data-parallel evaluation: split per-example work over processes and gather it back in order.

Under ``accelerate launch --num_processes N`` every process holds the whole model and the whole
record list. The model-running primitives (:func:`harmonia.evaluation.backends.generate_texts`,
:func:`harmonia.evaluation.loglik.score_continuations`, :func:`~harmonia.evaluation.loglik.next_token_logprobs`)
pass their per-example work through :func:`map_sharded`: each process runs every N-th item,
and the results are gathered back into input order on every process. Everything downstream
(metrics, attacks, objectives) then runs on the full lists, identically on every process, so a
metric or an attack never needs to know about processes.

Sharding is switched on only inside :func:`across_processes` (the harness enters it). Outside it,
and with one process, :func:`map_sharded` is a plain call; that keeps code that runs on one rank
only (a report written by the main process, a training run's teacher) from waiting on a
collective the other processes never join.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Processes:
    """This process's place among the evaluating processes."""

    rank: int
    world: int

    def __post_init__(self) -> None:
        if self.world < 1 or not 0 <= self.rank < self.world:
            raise ValueError(f"need 0 <= rank < world, got rank {self.rank} of {self.world}")


_ACTIVE: contextvars.ContextVar[Processes | None] = contextvars.ContextVar("harmonia_eval_processes", default=None)


@contextlib.contextmanager
def across_processes(rank: int, world: int) -> Iterator[Processes]:
    """Shard :func:`map_sharded` calls over ``world`` processes while the block runs."""
    token = _ACTIVE.set(Processes(rank, world))
    try:
        yield Processes(rank, world)
    finally:
        _ACTIVE.reset(token)


def active_processes() -> Processes:
    """The sharding in force (one process when none is)."""
    return _ACTIVE.get() or Processes(0, 1)


def shard(items: Sequence[T], rank: int, world: int) -> list[T]:
    """Every ``world``-th item from ``rank`` on.

    Strided rather than contiguous: records come grouped by role and kind, so contiguous blocks
    would give one process all the long prompts.
    """
    return list(items[rank::world])


def merge_shards(parts: Sequence[Sequence[R]], total: int) -> list[R]:
    """Invert :func:`shard`: ``parts[r]`` holds items ``r, r + world, ...``; returns all ``total`` in order."""
    world = len(parts)
    expected = [len(range(r, total, world)) for r in range(world)]
    got = [len(p) for p in parts]
    if got != expected:
        raise RuntimeError(f"sharded results of sizes {got} for {total} items over {world} processes "
                           f"(expected {expected}): a process skipped or duplicated work")
    out: list[R] = []
    for j in range(expected[0]):
        out.extend(p[j] for p in parts if j < len(p))
    return out


def all_gather_objects(local: list[R], world: int) -> list[list[R]]:
    """Every process's ``local`` list, indexed by rank (torch.distributed, pickled objects)."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(f"evaluation is sharded over {world} processes but no torch.distributed process "
                           "group is initialised; start it with accelerate launch")
    parts: list[list[R] | None] = [None] * world
    dist.all_gather_object(parts, local)
    return [p if p is not None else [] for p in parts]


def gather_in_order(local: list[R], total: int, procs: Processes) -> list[R]:
    """This process's shard results -> all ``total`` results in input order, on every process."""
    if procs.world == 1:
        return local
    return merge_shards(all_gather_objects(local, procs.world), total)


def map_sharded(fn: Callable[[list[T]], list[R]], items: Sequence[T]) -> list[R]:
    """``fn(items)`` computed as ``fn`` of this process's shard, gathered back in input order.

    ``fn`` must map a list to a list of the same length with per-item results that do not depend
    on the other items of the list (batch-independent scoring and greedy generation are).
    Every process must make the same calls in the same order: each one is a collective.
    """
    procs = active_processes()
    if procs.world == 1:
        return fn(list(items))
    mine = shard(items, procs.rank, procs.world)
    local = fn(mine)
    if len(local) != len(mine):
        raise RuntimeError(f"{len(local)} results for {len(mine)} items on process {procs.rank}")
    return gather_in_order(local, len(items), procs)
