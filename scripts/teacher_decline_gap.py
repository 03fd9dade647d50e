"""How far the teacher is from declining where harmonia's forget records decide: per author and prefill.

harmonia distils each forget record along the decline sentence; at the record's decision position
(its first answer position, or the first after a prefilled start) ``decline_margin`` puts the
decline's first token ``margin`` logits above the teacher's best. Where the teacher already
declines that is a small move; where it would confidently continue a started answer, the student
is asked to move far from what the same weights predict. This script reads a harmonia run's cached
teacher Top-K (``teacher_cache.json`` in the run folder: the values before the lift) and prints,
per forget author and kind of record (plain, ``k=K`` gold tokens prefilled, an opener), how often
the decline's first token is in the teacher's Top-K at the decision position, how often it is the
top-1, and the median gap from the best value to it (the gap is at least the best minus the K-th
value where it is not in the Top-K). docs/demo.md (session 24) reads it beside the prefilling
attack's leaks per question (``scripts/prefill_by_question.py``).

    .venv/bin/python scripts/teacher_decline_gap.py runs/demo_fast/harmonia --records k=10
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from statistics import median
from typing import NamedTuple

from torch import Tensor

from harmonia.data.schema import QARecord
from harmonia.errors import DataError
from harmonia.methods.losses import TopK
from harmonia.teacher.targets import token_gaps, token_slot


class Decision(NamedTuple):
    """The teacher's Top-K at one record's decision position, read for the decline's first token."""

    in_top_k: bool
    rank: int | None
    gap: float
    """best value minus the token's (the best minus the K-th value when it is not in the Top-K)"""


def decision(ids: Tensor, values: Tensor, token: int) -> Decision:
    """The decline token's place in the first row of a record's Top-K ``ids`` / ``values`` ``[T, K]``."""
    gap = token_gaps(TopK(ids, values), token)[0]
    slot = token_slot(ids[0], token)
    if slot is None:
        return Decision(False, None, gap)
    return Decision(True, int((values[0] > values[0, slot]).sum()), gap)


def kind(record: QARecord) -> str:
    """``plain``, ``k=K`` (gold tokens prefilled) or ``opener``."""
    if not record.prefill:
        return "plain"
    k = record.metadata.get("k")
    return f"k={k}" if record.metadata.get("kind") == "gold_prefix" and k is not None else "opener"


def _kind_order(what: str) -> tuple[int, int]:
    """plain first, then k=2, k=5, ... in order, openers last."""
    if what.startswith("k="):
        return 1, int(what[2:])
    return (0, 0) if what == "plain" else (2, 0)


def gap_table(decisions: Mapping[str, Decision], records: Mapping[str, QARecord]) -> str:
    """One markdown row per (author, kind): records, decline in the Top-K, top-1, median gap."""
    groups: dict[tuple[str, str], list[Decision]] = {}
    for record_id, found in decisions.items():
        record = records[record_id]
        author = str(record.metadata.get("author_name") or record.metadata.get("entity") or record.group or "-")
        groups.setdefault((author, kind(record)), []).append(found)
    lines = ["| author | records | n | decline in the teacher's Top-K | decline top-1 | median gap (logits) |",
             "|:---|:---|---:|---:|---:|---:|"]
    for (author, what), found in sorted(groups.items(), key=lambda g: (g[0][0], _kind_order(g[0][1]))):
        n = len(found)
        lines.append(f"| {author} | {what} | {n} | {sum(d.in_top_k for d in found)} | "
                     f"{sum(d.rank == 0 for d in found)} | {median(d.gap for d in found):.2f} |")
    return "\n".join(lines) + "\n"


def record_table(decisions: Mapping[str, Decision], records: Mapping[str, QARecord], what: str) -> str:
    """One markdown row per forget record of kind ``what`` (e.g. ``k=10``): its decision, by record id."""
    lines = ["| record | decline rank in the teacher's Top-K | gap (logits) |", "|:---|---:|---:|"]
    for record_id in sorted(r for r in decisions if kind(records[r]) == what):
        found = decisions[record_id]
        rank = "-" if found.rank is None else str(found.rank + 1)
        lines.append(f"| {record_id} | {rank} | {'>= ' if not found.in_top_k else ''}{found.gap:.2f} |")
    return "\n".join(lines) + "\n"


def cached_topk(run: Path) -> tuple[list[str], Tensor, Tensor, list[int]]:
    """``(record_ids, ids, values, offsets)`` of the Top-K cache a harmonia run used."""
    from safetensors import safe_open

    pointer = run / "teacher_cache.json"
    if not pointer.is_file():
        raise DataError(pointer, "no teacher_cache.json: not a harmonia run with cache: true", field="path")
    info = json.loads(pointer.read_text())
    key = info.get("keys", {}).get("topk")
    if not key:
        raise DataError(pointer, "no Top-K cache key", field="keys.topk")
    path = Path(info["dir"]) / f"topk-{key}.safetensors"
    if not path.is_file():
        raise DataError(path, "the run's Top-K cache is gone (it is rebuilt when the run is trained again)",
                        field="path")
    with safe_open(str(path), framework="pt") as fh:
        record_ids = json.loads((fh.metadata() or {})["record_ids"])
        return record_ids, fh.get_tensor("ids"), fh.get_tensor("values"), fh.get_tensor("offsets").tolist()


def decisions_of(run: Path, records: Mapping[str, QARecord], tokens: Mapping[bool, int]) -> dict[str, Decision]:
    """Each cached forget record's decision; ``tokens[prefilled]`` is the decline's first token."""
    record_ids, ids, values, offsets = cached_topk(run)
    out = {}
    for i, record_id in enumerate(record_ids):
        record = records.get(record_id)
        if record is None or record.role != "forget":
            continue
        start, end = offsets[i], offsets[i + 1]
        out[record_id] = decision(ids[start:end], values[start:end], tokens[bool(record.prefill)])
    return out


def main(argv: Sequence[str] | None = None) -> str:
    from harmonia.config import load_config
    from harmonia.data.build import build_dataset
    from harmonia.models import load_tokenizer
    from harmonia.pipelines.demo_config import DemoConfig, demo_config_path
    from harmonia.teacher.config import TeacherConfig
    from harmonia.teacher.targets import encode_plain

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="a harmonia run folder (with teacher_cache.json)")
    parser.add_argument("--config", default="demo_fast", help="the demo config or preset the run was trained with")
    parser.add_argument("--records", default=None, help="also one row per forget record of this kind, e.g. k=10")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    cfg = load_config(DemoConfig, demo_config_path(args.config), [])
    tokenizer = load_tokenizer(cfg.model.spec)
    records = {r.id: r for r in build_dataset(cfg.data, tokenizer=tokenizer)}
    params = cfg.unlearn.method.params  # the demo gives the method its teacher unless the params set one
    teacher = TeacherConfig.model_validate(params["teacher"]) if "teacher" in params else cfg.teacher
    tokens = {prefilled: encode_plain(tokenizer, teacher.decline_text(prefilled))[0] for prefilled in (False, True)}
    decisions = decisions_of(args.run, records, tokens)
    text = (f"The teacher at each forget record's decision position, before the decline is lifted "
            f"({args.run}):\n\n{gap_table(decisions, records)}")
    if args.records:
        text += f"\nThe {args.records} records (rank 1 = top-1; '-' outside the Top-K):\n\n"
        text += record_table(decisions, records, args.records)
    print(text)
    return text


if __name__ == "__main__":
    main()
