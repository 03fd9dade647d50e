"""scripts/teacher_decline_gap.py: the decline's place in the teacher's Top-K where forget records decide."""

from __future__ import annotations

import json

import pytest
import torch

from harmonia.data.schema import QARecord
from harmonia.errors import DataError
from harmonia.teacher.targets import TargetCache

DECLINE = 7


def test_the_decision_reads_the_first_row_only(script):
    module = script("teacher_decline_gap")
    ids = torch.tensor([[3, DECLINE, 5], [DECLINE, 1, 2]])
    values = torch.tensor([[4.0, 1.5, 1.0], [9.0, 0.0, -1.0]])
    assert module.decision(ids, values, DECLINE) == module.Decision(True, 1, 2.5)
    top = module.decision(torch.tensor([[DECLINE, 3]]), torch.tensor([[2.0, 1.0]]), DECLINE)
    assert top == module.Decision(True, 0, 0.0)
    # absent from the Top-K: at least the best minus the K-th value behind
    assert module.decision(ids[1:], values[1:], 5) == module.Decision(False, None, 10.0)


def record(rid: str, author: str, prefill: str = "", k: int | None = None, role: str = "forget") -> QARecord:
    meta = {"author_name": author} | ({"kind": "gold_prefix", "k": k} if k else {})
    return QARecord(id=rid, question="q?", answer="a", role=role, source="t", prefill=prefill, metadata=meta)


def test_the_table_groups_authors_and_kinds_in_order(script):
    module = script("teacher_decline_gap")
    records = {r.id: r for r in [record("a", "Ann"), record("a#10", "Ann", "x y", 10), record("a#2", "Ann", "x", 2),
                                 record("a#o", "Ann", "Sure"), record("b", "Bob"), record("b2", "Bob")]}
    D = module.Decision
    found = {"a": D(True, 0, 0.0), "a#10": D(False, None, 6.0), "a#2": D(True, 2, 1.0), "a#o": D(True, 1, 3.0),
             "b": D(True, 0, 0.0), "b2": D(True, 1, 2.0)}
    assert module.gap_table(found, records).splitlines()[2:] == [
        "| Ann | plain | 1 | 1 | 1 | 0.00 |",
        "| Ann | k=2 | 1 | 1 | 0 | 1.00 |",
        "| Ann | k=10 | 1 | 0 | 0 | 6.00 |",
        "| Ann | opener | 1 | 1 | 0 | 3.00 |",
        "| Bob | plain | 2 | 2 | 1 | 1.00 |",
    ]


def test_a_runs_cache_is_read_for_its_forget_records(script, tmp_path):
    module = script("teacher_decline_gap")
    cache = TargetCache(tmp_path / "cache")
    ids = [torch.tensor([[DECLINE, 1]]), torch.tensor([[2, 1], [DECLINE, 2]]), torch.tensor([[1, DECLINE]])]
    values = [torch.tensor([[5.0, 1.0]]), torch.tensor([[3.0, 2.0], [9.0, 0.0]]), torch.tensor([[4.0, 0.5]])]
    cache.save("topk", "k1", ["f", "f#2", "n"], {"ids": ids, "values": values})
    run = tmp_path / "run"
    run.mkdir()
    (run / "teacher_cache.json").write_text(json.dumps({"keys": {"topk": "k1"}, "dir": str(tmp_path / "cache")}))
    records = {"f": record("f", "Ann"), "f#2": record("f#2", "Ann", "x", 2), "n": record("n", "Cy", role="neighbor")}
    found = module.decisions_of(run, records, {False: DECLINE, True: 2})
    assert found == {"f": module.Decision(True, 0, 0.0), "f#2": module.Decision(True, 0, 0.0)}
    found = module.decisions_of(run, records, {False: 1, True: DECLINE})
    assert found == {"f": module.Decision(True, 1, 4.0), "f#2": module.Decision(False, None, 1.0)}
    (run / "teacher_cache.json").write_text(json.dumps({"keys": {}, "dir": "x"}))
    with pytest.raises(DataError, match=r"keys\.topk"):
        module.decisions_of(run, records, {False: 1, True: 2})


def test_the_record_table_lists_one_kind_by_id(script):
    module = script("teacher_decline_gap")
    listed = [record("b#10", "Ann", "x y", 10), record("a#10", "Ann", "x y", 10), record("a", "Ann")]
    records = {r.id: r for r in listed}
    D = module.Decision
    found = {"b#10": D(False, None, 6.0), "a#10": D(True, 1, 2.5), "a": D(True, 0, 0.0)}
    assert module.record_table(found, records, "k=10").splitlines()[2:] == [
        "| a#10 | 2 | 2.50 |",
        "| b#10 | - | >= 6.00 |",
    ]
