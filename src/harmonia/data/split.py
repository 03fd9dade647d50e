"""Questions kept back for evaluation: an entity's facts are tested on questions never trained on.

Unlearning trains on neighbour and retain QA to keep them; evaluating those roles on the very
questions a retain loss fitted measures memorisation of the answers, not kept knowledge (a
retain NLL drives their recall towards 1). :func:`split_heldout` sets aside, per role, a fraction
of each group's (entity's) plain questions, with every prefill-augmented copy of them. The
target still learns every question; only unlearning and evaluation are split.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from harmonia.data.anchors import AnchorMethod, drop_anchor_links, pair_anchors
from harmonia.data.schema import QARecord


@dataclass(frozen=True)
class HeldoutSplit:
    """``train``: what unlearning may use; ``evaluation``: the held-out records of the split roles,
    and every record of the other roles (the forget set is evaluated on what was unlearned)."""

    train: list[QARecord]
    evaluation: list[QARecord]
    heldout_ids: frozenset[str]


def heldout_ids(records: Sequence[QARecord], fractions: Mapping[str, float], seed: int = 0) -> frozenset[str]:
    """Ids kept for evaluation: per role in ``fractions``, round(f * n) of each group's n plain
    questions (a seeded sample, at least one and at most n - 1), plus their prefilled copies."""
    chosen: set[str] = set()
    for role, fraction in fractions.items():
        groups: dict[str, list[str]] = {}
        for r in records:
            if r.role == role and not r.prefill:
                groups.setdefault(r.group, []).append(r.id)
        for group, ids in sorted(groups.items()):
            if len(ids) < 2:
                continue  # a single question cannot be both trained on and held out
            n = min(max(round(fraction * len(ids)), 1), len(ids) - 1)
            chosen.update(random.Random(f"{seed}:{role}:{group}").sample(ids, n))
    chosen.update(r.id for r in records if r.metadata.get("parent_id") in chosen)
    return frozenset(chosen)


def split_heldout(records: Sequence[QARecord], fractions: Mapping[str, float], *, seed: int = 0,
                  anchor_method: AnchorMethod = "auto") -> HeldoutSplit:
    """Split ``records`` into unlearning and evaluation pools (see module doc).

    Anchor pairs are mined again among the training pool when a forget record's anchor was held
    out, so every forget question keeps a trainable look-alike neighbour.
    """
    held = heldout_ids(records, fractions, seed)
    train = [r for r in records if r.id not in held]
    evaluation = [r for r in records if r.id in held or r.role not in fractions]
    if any(r.role == "forget" and r.anchor_id in held for r in train):
        plain = [r for r in train if not r.prefill]
        paired = {r.id: r for r in pair_anchors(drop_anchor_links(plain), method=anchor_method)}
        train = [paired.get(r.id, r) for r in train]
    return HeldoutSplit(train, evaluation, held)
