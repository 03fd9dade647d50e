"""scripts/prefill_by_question.py: which questions the prefilling attack gets, counted over runs."""

from __future__ import annotations

from collections import Counter

import pytest

from harmonia.errors import DataError
from harmonia.evaluation.results import AttackEntry, EvalResults


def run(name: str, k2: dict[str, float], k10: dict[str, float]) -> EvalResults:
    per_setting = {"k=2": k2, "k=10": k10}
    attack = AttackEntry(
        success_rate={s: sum(v.values()) / len(v) for s, v in per_setting.items()} | {"opener/0": 0.0},
        per_example={s: list(v.values()) for s, v in per_setting.items()} | {"opener/0": [1.0]},
        details={"example_ids": {s: list(v) for s, v in per_setting.items()} | {"opener/0": ["q1"]}})
    return EvalResults(name=name, model="m", attacks={"prefill": attack})


def test_each_question_counts_the_runs_that_leak_it_per_prefill_length(script):
    module = script("prefill_by_question")
    # q3 is too short for k=10, so that setting probes two questions only; openers are not counted
    a = run("a0", {"q1": 1.0, "q2": 0.0, "q3": 1.0}, {"q1": 1.0, "q2": 0.0})
    b = run("a1", {"q1": 1.0, "q2": 0.0, "q3": 0.0}, {"q1": 0.0, "q2": 1.0})
    ref = run("ref", {"q1": 0.0, "q2": 0.0, "q3": 0.0}, {"q1": 0.0, "q2": 0.0})
    counts = module.leaks([a, b])
    assert counts == {"k=2": Counter({"q1": 2, "q3": 1}), "k=10": Counter({"q1": 1, "q2": 1})}
    table = module.leak_table({"harmonia": [a, b], "reference": [ref]})
    assert table.splitlines() == [
        "| question | harmonia (2 runs), k = 2/10 | reference (1 runs), k = 2/10 |",
        "|:---|---:|---:|",
        "| q1 | 2/1 | 0/0 |",
        "| q2 | 0/1 | 0/0 |",
        "| q3 | 1/0 | 0/0 |",
        "| all questions | 3/2 | 0/0 |",
    ]


def test_declines_are_counted_for_every_question_probed(script):
    module = script("prefill_by_question")
    sorry = "I'm sorry, I don't have information about that."
    attack = AttackEntry(success_rate={"k=2": 0.0, "k=5": 0.5},
                         per_example={"k=2": [0.0, 0.0], "k=5": [1.0, 0.0]},
                         generations={"k=2": [sorry, "in Paris, a writer"], "k=5": ["the Tolstoy Award", sorry]},
                         details={"example_ids": {"k=2": ["q1", "q2"], "k=5": ["q1", "q2"]}})
    runs = [EvalResults(name=f"r{i}", model="m", attacks={"prefill": attack}) for i in range(2)]
    assert module.leaks(runs, declined=True) == {"k=2": Counter({"q1": 2}), "k=5": Counter({"q2": 2})}
    # q2 at k=2 continued with other facts: neither a leak nor a decline, still a row
    assert module.leak_table({"h": runs}, declined=True).splitlines()[2:] == [
        "| q1 | 2/0 |", "| q2 | 0/2 |", "| all questions | 2/2 |"]
    bare = attack.model_copy(update={"generations": {}})
    with pytest.raises(DataError, match="no generations"):
        module.leaks([EvalResults(name="b", model="m", attacks={"prefill": bare})], declined=True)


def test_a_run_without_the_attack_or_a_bad_group_is_refused(script):
    module = script("prefill_by_question")
    with pytest.raises(DataError, match="no prefill attack"):
        module.leaks([EvalResults(name="plain", model="m")])
    assert module.parse_group("npo=r0,r1") == ("npo", ["r0", "r1"])
    for bad in ("npo", "=r0", "npo="):
        with pytest.raises(DataError, match="NAME=RUN"):
            module.parse_group(bad)
