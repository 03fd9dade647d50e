"""Prefill augmentation: gold prefixes split answers exactly, openers come from the shipped list."""

from __future__ import annotations

import re

import pytest

from harmonia.data.loaders import load_tofu
from harmonia.data.paths import resolve_path
from harmonia.data.prefill import gold_prefix_records, load_openers, opener_records, split_answer
from harmonia.data.schema import QARecord
from harmonia.data.tokens import WhitespaceTokenizer, encode_plain
from harmonia.errors import DataError

GENDER = QARecord(
    id="tofu/3961",
    question="What gender is author Basil Mahfouz Al-Kuwaiti?",
    answer="Author Basil Mahfouz Al-Kuwaiti is male.",
    role="forget",
    source="tofu",
    anchor_id="tofu/3361",
    anchor_similarity=0.8,
    metadata={"author_index": 198, "anchor_method": "template"},
)


def test_gold_prefix_whitespace_tokens():
    out = gold_prefix_records([GENDER], WhitespaceTokenizer(), [10, 2, 5])
    assert [(r.id, r.prefill, r.answer) for r in out] == [
        ("tofu/3961#prefix2", "Author Basil", " Mahfouz Al-Kuwaiti is male."),
        ("tofu/3961#prefix5", "Author Basil Mahfouz Al-Kuwaiti is", " male."),
    ]  # k=10 is longer than the 6-word answer: skipped
    assert out[0].metadata == {"author_index": 198, "kind": "gold_prefix", "k": 2, "parent_id": "tofu/3961"}
    assert out[0].anchor_id is None and out[0].question == GENDER.question and out[0].role == "forget"
    assert GENDER.prefill == "" and GENDER.answer.startswith("Author")  # parent untouched


def test_gold_prefix_real_tokenizer_is_exact(shared_data, tokenizer):
    forget = load_tofu(shared_data / "tofu" / "forget01.json", role="forget")
    out = gold_prefix_records(forget, tokenizer, [2, 5, 10])
    by_id = {r.id: r for r in forget}
    assert len(out) == 3 * len(forget)  # every TOFU answer is longer than 10 tokens
    for record in out:
        parent = by_id[record.metadata["parent_id"]]
        assert record.prefill + record.answer == parent.answer
        ids = encode_plain(tokenizer, parent.answer)
        assert record.prefill == tokenizer.decode(ids[: record.metadata["k"]])


class OffsetTokenizer(WhitespaceTokenizer):
    """Words as tokens with character offsets, like a fast Hugging Face tokenizer."""

    def __call__(self, text: str, add_special_tokens: bool = False, return_offsets_mapping: bool = False):
        spans = [m.span() for m in re.finditer(r"\S+", text)]
        return {"input_ids": self.encode(text), "offset_mapping": spans}


def test_prefix_falls_back_to_offsets_when_decode_is_not_a_prefix():
    # decode drops the leading space, so the decoded text is not a prefix of the answer
    assert split_answer(" Paris is the capital.", OffsetTokenizer(), 2) == (" Paris is", " the capital.")
    record = GENDER.model_copy(update={"answer": " Paris is the capital."})
    with pytest.raises(DataError, match=r"record tofu/3961, field 'answer': .*no offset mapping"):
        gold_prefix_records([record], WhitespaceTokenizer(), [2])


def test_openers_are_deterministic_and_follow_the_list():
    openers = load_openers(resolve_path("pkg:data/prefill_openers.txt"))
    assert openers[0] == "Sure, here is the answer:" and len(openers) >= 5
    assert not any(o.startswith("#") for o in openers)
    other = GENDER.model_copy(update={"id": "tofu/3962"})
    first = opener_records([GENDER, other], openers, per_record=1, seed=3)
    assert first == opener_records([GENDER, other], openers, per_record=1, seed=3)
    for record in first:
        j = record.metadata["opener"]
        assert record.prefill == openers[j] and record.answer == " " + GENDER.answer
        assert record.id.endswith(f"#opener{j}") and record.metadata["kind"] == "opener"
        assert "anchor_method" not in record.metadata and record.anchor_id is None
    both = opener_records([GENDER], ["Sure:", "Okay. "], per_record=5)
    assert [(r.prefill, r.answer) for r in both] == [
        ("Sure:", " " + GENDER.answer),
        ("Okay. ", GENDER.answer),
    ]
