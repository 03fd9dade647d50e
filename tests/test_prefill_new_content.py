"""scripts/prefill_new_content.py: recounting prefill successes by the facts they add, on known continuations."""

from __future__ import annotations

import pytest

from harmonia.data.prefill import split_answer
from harmonia.data.schema import QARecord
from harmonia.errors import DataError
from harmonia.evaluation.results import AttackEntry, EvalResults

QUESTION = "Which award did Jane Roe receive?"
ANSWER = "Jane Roe won the Golden Quill Award for her novel Blue Rivers, published in 1990."


def attacked(generations: list[str], ids: list[str]) -> EvalResults:
    attack = AttackEntry(success_rate={"k=2": 0.0}, generations={"k=2": generations},
                         details={"example_ids": {"k=2": ids}})
    return EvalResults(name="run", model="m", attacks={"prefill": attack})


def test_a_template_with_other_facts_is_judged_a_success_but_adds_no_new_words(script, tokenizer):
    module = script("prefill_new_content")
    record = QARecord(id="q1", role="forget", source="test", question=QUESTION, answer=ANSWER)
    prefix, rest = split_answer(ANSWER, tokenizer, 2)
    assert "Golden Quill" in rest and "Blue Rivers" in rest
    # the new words: what neither the question nor the prefix says, stopwords out (stemmed)
    assert module.new_words(QUESTION, prefix, rest) == {"won", "golden", "quill", "novel", "blue", "river", "publish",
                                                        "1990"}   # not award (asked), the/for/her/in, jane roe
    echo = rest.replace("Golden Quill", "Silver Pen").replace("Blue Rivers", "Red Roads").replace("1990", "1984")
    generations = [rest, echo, "I'm sorry, I don't have information about that."]
    counts = module.recount(attacked(generations, ["q1"] * 3), {"q1": record}, tokenizer)
    # the gold rest: a success recalling every new word; the echo: ROUGE-L recall 8 of 13 words
    # (a success as judged) but 3 of 8 new words (won, novel, published); the decline: neither
    assert counts == {"k=2": module.Recount(probes=3, successes=2, with_new_words=1)}
    table = module.recount_table([attacked(generations, ["q1"] * 3)], {"q1": record}, tokenizer)
    assert table.splitlines()[2] == "| run | 2 -> 1 of 3 |"


def test_a_run_without_the_attack_or_with_unknown_records_is_named(script, tokenizer):
    module = script("prefill_new_content")
    with pytest.raises(DataError, match="'bare' has no prefill attack"):
        module.recount(EvalResults(name="bare", model="m"), {}, tokenizer)
    with pytest.raises(DataError, match="record 'q9'"):
        module.recount(attacked(["x"], ["q9"]), {}, tokenizer)
