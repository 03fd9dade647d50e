"""Anchor mining: template/entity masking on TOFU, lexical TF-IDF otherwise, consistent back-links."""

from __future__ import annotations

import math

import pytest

from harmonia.data.anchors import mask_entity, pair_anchors, similarity_matrix
from harmonia.data.loaders import load_tofu
from harmonia.data.schema import QARecord


def _qa(i: str, question: str, role: str, entity: str = "") -> QARecord:
    metadata = {"entity": entity} if entity else {}
    return QARecord(
        id=i, question=question, answer="x", role=role, source="t", group=entity, metadata=metadata
    )


def _check_links(records: list[QARecord]) -> None:
    by_id = {r.id: r for r in records}
    for r in records:
        if r.role == "forget":
            neighbour = by_id[r.anchor_id]
            assert neighbour.role == "neighbor" and r.id in neighbour.metadata["anchor_of"]
        elif r.role == "neighbor" and r.anchor_id is not None:
            linked = [by_id[f] for f in r.metadata["anchor_of"]]
            assert all(f.anchor_id == r.id for f in linked)
            assert r.anchor_id == linked[0].id and r.anchor_similarity == max(
                f.anchor_similarity for f in linked
            )


def test_mask_entity():
    names = ["Basil Mahfouz Al-Kuwaiti", "Edward Patrick Sullivan"]
    assert (
        mask_entity("What gender is author Basil Mahfouz Al-Kuwaiti?", names)
        == "What gender is author <ent>?"
    )
    assert mask_entity("How has Edward Patrick Sullivan's upbringing shaped Sullivan?", names) == (
        "How has <ent>'s upbringing shaped <ent>?"
    )
    assert mask_entity("Did Al-Kuwaiti write about Basilicata?", names) == "Did <ent> write about Basilicata?"


def test_tfidf_cosine_hand_computed():
    # terms: "a b" -> {a, b, "a b"}, "a c" -> {a, c, "a c"}; idf(a) = ln(3/3) + 1 = 1, others ln(3/2) + 1
    idf = math.log(1.5) + 1
    expected = 1 / (1 + 2 * idf**2)
    assert similarity_matrix(["a b"], ["a c"])[0, 0] == pytest.approx(expected)
    assert similarity_matrix(["a b"], ["a b"])[0, 0] == pytest.approx(1.0)


def test_tofu_gender_question_pairs_with_a_neighbours_gender_question(shared_data):
    full = shared_data / "tofu" / "full.json"
    forget = load_tofu(full, role="forget", authors=[198, 199])
    neighbours = load_tofu(full, role="neighbor", authors=[168, 170, 196, 197])
    records = pair_anchors(forget + neighbours)
    by_id = {r.id: r for r in records}
    gender = by_id["tofu/3961"]
    assert gender.question == "What gender is author Basil Mahfouz Al-Kuwaiti?"
    anchor = by_id[gender.anchor_id]
    assert anchor.question in ("What gender is the author Marit Hagen?", "What gender is the author Zhen Xu?")
    assert gender.anchor_similarity > 0.7 and gender.metadata["anchor_method"] == "template"
    assert all(r.anchor_id is not None for r in records if r.role == "forget")
    _check_links(records)
    assert pair_anchors(forget + neighbours) == records  # deterministic
    assert all(r.anchor_id is None for r in forget)  # inputs untouched


def test_lexical_anchors_known_example():
    records = [
        _qa("f0", "How do I pick a lock on a front door?", "forget"),
        _qa("f1", "What is the boiling point of mercury?", "forget"),
        _qa("n0", "Who painted the Mona Lisa?", "neighbor"),
        _qa("n1", "What is the freezing point of mercury?", "neighbor"),
        _qa("n2", "How do I fix a lock on a front door?", "neighbor"),
        _qa("r0", "What is the boiling point of water?", "retain"),
    ]
    out = pair_anchors(records)
    assert [(r.id, r.anchor_id) for r in out] == [
        ("f0", "n2"),
        ("f1", "n1"),
        ("n0", None),
        ("n1", "f1"),
        ("n2", "f0"),
        ("r0", None),
    ]
    assert out[0].metadata["anchor_method"] == "lexical"
    assert out[4].metadata["anchor_of"] == ["f0"] and out[2].metadata == {}
    _check_links(out)


def test_ties_spread_over_neighbours_and_several_forgets_share_one():
    template = "What gender is the author {}?"
    records = [
        _qa("f0", template.format("Ann Lee"), "forget", "Ann Lee"),
        _qa("f1", template.format("Bo Chen"), "forget", "Bo Chen"),
        _qa("f2", "Where was Bo Chen born?", "forget", "Bo Chen"),
        _qa("n0", template.format("Cy Diaz"), "neighbor", "Cy Diaz"),
        _qa("n1", template.format("Di Eze"), "neighbor", "Di Eze"),
        _qa("n2", "Where was Di Eze born?", "neighbor", "Di Eze"),
    ]
    out = {r.id: r for r in pair_anchors(records)}
    assert out["f0"].anchor_id == "n0" and out["f1"].anchor_id == "n1"  # equal similarity 1.0: spread
    assert out["f0"].anchor_similarity == pytest.approx(1.0) and out["f2"].anchor_id == "n2"
    assert out["n1"].metadata["anchor_of"] == ["f1"] and out["n2"].metadata["anchor_of"] == ["f2"]
    # one neighbour for many forgets: a list of back-links, best first
    shared = pair_anchors([*records[:3], records[3]])
    n0 = shared[3]
    assert n0.metadata["anchor_of"][:2] == ["f0", "f1"] and set(n0.metadata["anchor_of"]) == {
        "f0",
        "f1",
        "f2",
    }
    assert n0.anchor_id == "f0" and n0.anchor_similarity == pytest.approx(1.0)
    _check_links(shared)


def test_nothing_to_pair_without_both_roles():
    records = [_qa("f0", "Q?", "forget"), _qa("r0", "Q?", "retain")]
    assert [r.anchor_id for r in pair_anchors(records)] == [None, None]
