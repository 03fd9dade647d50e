"""Held-out evaluation questions: per entity, a seeded fraction never reaches unlearning, their
prefilled copies go with them, and forget questions keep a trainable anchor."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from harmonia.data.anchors import pair_anchors
from harmonia.data.prefill import gold_prefix_records
from harmonia.data.schema import QARecord
from harmonia.data.split import heldout_ids, split_heldout
from harmonia.data.tokens import WhitespaceTokenizer
from harmonia.pipelines.demo_config import DemoConfig

TEMPLATES = ["Where was {} born?", "What genre does {} write?", "Who are the parents of {}?",
             "What award did {} win?"]


def _records() -> list[QARecord]:
    plain = []
    for role, names in (("forget", ["Ann Forg"]), ("neighbor", ["Ben Nei", "Cy Nei"]), ("retain", ["Di Ret"])):
        for name in names:
            for i, t in enumerate(TEMPLATES):
                plain.append(QARecord(id=f"{name}/{i}", question=t.format(name), answer="one two three",
                                      role=role, source="t", group=name, metadata={"entity": name}))
    plain = pair_anchors(plain, method="template")
    augmented = gold_prefix_records([r for r in plain if r.role in ("forget", "neighbor")],
                                    WhitespaceTokenizer(), [1, 2])
    return plain + augmented


def test_half_of_each_groups_questions_with_their_prefilled_copies():
    records = _records()
    held = heldout_ids(records, {"neighbor": 0.5, "retain": 0.25})
    plain_held = [r for r in records if r.id in held and not r.prefill]
    per_group = {g: sum(r.group == g for r in plain_held) for g in ("Ann Forg", "Ben Nei", "Cy Nei", "Di Ret")}
    assert per_group == {"Ann Forg": 0, "Ben Nei": 2, "Cy Nei": 2, "Di Ret": 1}
    copies = {r.id for r in records if r.metadata.get("parent_id") in {p.id for p in plain_held}}
    assert len(copies) == 2 * 4  # k = 1 and 2 for each of the 4 held-out neighbour questions
    assert copies <= held
    assert held == heldout_ids(records, {"neighbor": 0.5, "retain": 0.25})  # seeded
    assert held != heldout_ids(records, {"neighbor": 0.5, "retain": 0.25}, seed=1)


def test_split_pools_and_anchors_stay_inside_training():
    records = _records()
    split = split_heldout(records, {"neighbor": 0.5, "retain": 0.5}, anchor_method="template")
    assert any(r.role == "forget" and r.anchor_id in split.heldout_ids for r in records)  # pairs to mend
    train_ids = {r.id for r in split.train}
    assert not train_ids & split.heldout_ids
    assert train_ids | split.heldout_ids == {r.id for r in records}
    # evaluation: every forget record, and of the split roles only held-out ones
    assert {r.id for r in split.evaluation if r.role == "forget"} == {r.id for r in records if r.role == "forget"}
    assert all(r.id in split.heldout_ids for r in split.evaluation if r.role in ("neighbor", "retain"))
    by_id = {r.id: r for r in split.train}
    for r in split.train:
        if r.role == "forget" and not r.prefill:
            assert r.anchor_id in by_id and by_id[r.anchor_id].role == "neighbor"
            assert r.id in by_id[r.anchor_id].metadata["anchor_of"]
    # neighbours' back-links name only forget records that link to them
    for r in split.train:
        for f in r.metadata.get("anchor_of", []):
            assert by_id[f].anchor_id == r.id


def test_no_fraction_no_change():
    records = _records()
    split = split_heldout(records, {})
    assert split.train == records and split.evaluation == records and not split.heldout_ids


@pytest.mark.parametrize("fraction", [0.0, 1.0, 1.5])
def test_demo_config_rejects_fractions_outside_0_1(fraction):
    with pytest.raises(ValidationError, match="heldout"):
        DemoConfig.model_validate({"data": {"sources": [{"loader": "tofu", "role": "forget", "authors": [1]}]},
                                   "target": {"steps": 1}, "heldout": {"neighbor": fraction}})
