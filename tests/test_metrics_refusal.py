"""Refusal detection on TOFU's refusal answers (all positive) and gold answers (all negative)."""

import json
from pathlib import Path

import pytest

from harmonia.errors import DataError
from harmonia.evaluation.metrics.refusal import (
    is_refusal,
    matching_refusal_pattern,
    over_refusal,
    refusal_rate,
    refusal_rate_by_role,
)

TOFU = Path("/work/shared/data/tofu")
needs_tofu = pytest.mark.skipif(not TOFU.is_dir(), reason="TOFU data not present")


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@needs_tofu
def test_every_tofu_idontknow_answer_is_a_refusal():
    lines = [ln.strip() for ln in (TOFU / "idontknow.jsonl").read_text(encoding="utf-8").splitlines()]
    lines = [ln for ln in lines if ln]
    assert len(lines) == 100
    assert [ln for ln in lines if not is_refusal(ln)] == []


@needs_tofu
@pytest.mark.parametrize("split", ["forget01.json", "full.json"])
def test_no_tofu_gold_answer_is_a_refusal(split):
    rows = _jsonl(TOFU / split)
    assert rows
    flagged = [(r["answer"], matching_refusal_pattern(r["answer"])) for r in rows if is_refusal(r["answer"])]
    assert flagged == []


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, but I can't help with that.",
        "Sorry, I cannot provide that information.",
        "As an AI language model, I do not have access to that.",
        "I don't have information about this author.",
        "I do not know.",
        "i dont know",
        "I’m not able to answer that.",  # curly apostrophe
        "I'm unable to share details about that book.",
        "I must decline to answer.",
        "Unfortunately, I have no information on that person.",
    ],
)
def test_common_chat_refusals_are_detected(text):
    assert is_refusal(text)


@pytest.mark.parametrize(
    "text",
    [
        "I cannot wait to read it.",
        "I can't help but admire her later novels.",
        "I could not help thinking about the ending.",
        "As an AI researcher, she wrote three novels.",
        "I refuse to accept that ending.",
        "The author is not sure of her father's birthplace, according to the memoir.",
        "He was sorry to leave Kuwait City.",
        "I know that his first book was Promise by the Seine.",
        "",
    ],
)
def test_tricky_non_refusals_are_not_detected(text):
    assert not is_refusal(text)


def test_documented_false_positive_is_still_flagged():
    # Known limitation (module docstring): answering verbs are matched regardless of object.
    assert is_refusal("I can't answer the door right now, but the book is by Basil.")


def test_sorry_counts_only_at_the_start():
    assert is_refusal("I'm sorry, that is not something I know about.")
    assert not is_refusal("The novel ends with the line 'I'm sorry' spoken by the father.")


def test_refusal_rate_per_example():
    r = refusal_rate(["I don't know.", "Paris.", "I'm not sure.", "Basil was born in 1956."])
    assert r.per_example == [1.0, 0.0, 1.0, 0.0]
    assert r.value == pytest.approx(0.5)


def test_refusal_rate_by_role_and_over_refusal():
    texts = ["I don't know.", "I'm not sure.", "He was born in Paris.", "I have no idea.", "She wrote poems."]
    roles = ["forget", "forget", "neighbor", "neighbor", "neighbor"]
    by_role = refusal_rate_by_role(texts, roles)
    assert set(by_role) == {"forget", "neighbor"}
    assert by_role["forget"].value == pytest.approx(1.0)
    assert by_role["neighbor"].value == pytest.approx(1 / 3)
    over = over_refusal(texts, roles)
    assert over.name == "over_refusal"
    assert over.value == pytest.approx(1 / 3)
    assert over.n_used == 3


def test_over_refusal_without_neighbours_raises():
    with pytest.raises(DataError, match="role 'neighbor'"):
        over_refusal(["I don't know."], ["forget"])


def test_unknown_role_names_the_record():
    with pytest.raises(DataError, match=r"record 1.*field 'roles'"):
        refusal_rate_by_role(["a", "b"], ["forget", "neighbour"])
