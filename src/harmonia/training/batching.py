"""Global batch schedule by role, and collation of examples into padded tensors.

The schedule is a pure function of (records, mix, global batch size, seed), computed up front:
the batch at step ``s`` is the same whatever the number of processes, and resuming at step ``s``
needs no sampler state beyond the step number. Anchor pairs stay in the same batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from harmonia.data.schema import QARecord
from harmonia.errors import ConfigError


def role_quota(mix: dict[str, float], batch_size: int) -> dict[str, int]:
    """Split ``batch_size`` records among roles in proportion to ``mix`` (largest remainders)."""
    mix = {r: w for r, w in mix.items() if w > 0}
    if not mix:
        raise ConfigError("train.mix: no role has a positive weight")
    total = sum(mix.values())
    exact = {r: batch_size * w / total for r, w in mix.items()}
    if batch_size < len(mix):
        raise ConfigError(f"train.batch_size {batch_size} is smaller than the {len(mix)} roles in train.mix")
    # Every role with a positive weight gets at least one slot, so no pool is starved.
    quota = {r: max(1, math.floor(x)) for r, x in exact.items()}
    while sum(quota.values()) > batch_size:
        largest = max(quota, key=lambda r: (quota[r] - exact[r], r))
        quota[largest] -= 1
    for r in sorted(exact, key=lambda r: (quota[r] - exact[r], r))[: batch_size - sum(quota.values())]:
        quota[r] += 1
    return quota


UNIFORM = "*"


class BatchSchedule:
    """Which record indices form each optimiser step's global batch.

    Each role is a pool cycled in a fresh seeded permutation every pass. When a drawn forget record
    has an anchor in the neighbour pool, that neighbour fills one of the batch's neighbour slots
    (or an extra slot when the quota has no room), so the contrastive pair is learnt together.
    """

    def __init__(self, records: Sequence[QARecord], mix: dict[str, float] | None, batch_size: int, seed: int,
                 *, keep_anchor_pairs: bool = True) -> None:
        self.batch_size = batch_size
        if mix is None:
            # Uniform over all records (fine-tuning): one pool, so an epoch is exactly one pass.
            self.quota = {UNIFORM: batch_size}
            self.pools = {UNIFORM: list(range(len(records)))}
        else:
            self.quota = role_quota(mix, batch_size)
            self.pools = {r: [i for i, rec in enumerate(records) if rec.role == r] for r in self.quota}
        empty = [r for r, pool in self.pools.items() if not pool]
        if empty:
            raise ConfigError(f"train.mix asks for roles with no records: {', '.join(empty)}")
        by_id = {rec.id: i for i, rec in enumerate(records)}
        self.anchor = {i: by_id[rec.anchor_id] for i, rec in enumerate(records)
                       if keep_anchor_pairs and rec.role == "forget" and rec.anchor_id in by_id
                       and records[by_id[rec.anchor_id]].role in self.quota}
        self.seed = seed

    def steps_per_epoch(self) -> int:
        """Steps until the largest pool has been seen once at its quota."""
        return max(math.ceil(len(pool) / self.quota[r]) for r, pool in self.pools.items())

    def batches(self, num_steps: int) -> list[list[int]]:
        rng = np.random.default_rng(self.seed)
        streams = {r: _Stream(pool, rng) for r, pool in self.pools.items()}
        out = []
        for _ in range(num_steps):
            batch: list[int] = []
            anchored: list[int] = []
            for role in sorted(self.quota):
                if role == "neighbor":
                    continue
                for idx in streams[role].take(self.quota[role]):
                    batch.append(idx)
                    if idx in self.anchor:
                        anchored.append(self.anchor[idx])
            if "neighbor" in self.quota:
                anchored = list(dict.fromkeys(anchored))
                free = max(self.quota["neighbor"] - len(anchored), 0)
                batch.extend(anchored)
                batch.extend(streams["neighbor"].take(free, exclude=set(anchored)))
            out.append(batch)
        return out


class _Stream:
    """An endless, seeded, reshuffled-every-pass walk over one role's pool."""

    def __init__(self, pool: list[int], rng: np.random.Generator) -> None:
        self.pool = pool
        self.rng = rng
        self.order: list[int] = []

    def take(self, n: int, exclude: set[int] | None = None) -> list[int]:
        taken: list[int] = []
        guard = 0
        while len(taken) < n and guard < 4 * (n + len(self.pool)):
            if not self.order:
                self.order = [self.pool[i] for i in self.rng.permutation(len(self.pool))]
            idx = self.order.pop(0)
            guard += 1
            if exclude and idx in exclude and len(self.pool) > len(exclude):
                continue
            taken.append(idx)
        return taken


PAD_VALUES = {"labels": -100}


def collate(examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Right-pad token-aligned features to the longest example; stack scalars.

    A key is token-aligned when its value is a list (nested lists too, e.g. per-position Top-K
    ids); keys ending in ``labels`` pad with -100, everything else with 0 (so masks pad as 0).
    """
    keys = examples[0].keys()
    batch: dict[str, torch.Tensor] = {}
    for key in keys:
        values = [ex[key] for ex in examples]
        if isinstance(values[0], (list, tuple)):
            pad = -100 if key.endswith("labels") else 0
            width = max(len(v) for v in values)
            tensors = [torch.as_tensor(v) for v in values]
            tail = tensors[0].shape[1:]
            out = torch.full((len(values), width, *tail), pad, dtype=tensors[0].dtype)
            for row, t in enumerate(tensors):
                if len(t):
                    out[row, : len(t)] = t
            batch[key] = out
        else:
            batch[key] = torch.as_tensor(values)
    return batch
