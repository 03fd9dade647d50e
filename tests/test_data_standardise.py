"""MCQ -> QA, offline text -> QA (exact output), parsing of generated QA, the LLM conversion loop."""

from __future__ import annotations

import pytest

from harmonia.data.paths import resolve_path
from harmonia.data.schema import QARecord
from harmonia.data.standardise import (
    continuation_passages,
    continuation_records,
    generated_records,
    generation_passages,
    load_prompt_template,
    mcq_to_qa,
    parse_qa_pairs,
)
from harmonia.data.tokens import WhitespaceTokenizer
from harmonia.errors import DataError

MCQ = QARecord(
    id="m/0",
    question="Which port does SSH use?",
    answer="22",
    role="general",
    source="m",
    choices=["21", "22", "23"],
    correct=1,
)
TEXT = "The quick brown fox jumps over the lazy dog. It was a sunny day in the park and everyone smiled."


def test_mcq_to_qa_letter_text():
    qa = mcq_to_qa(MCQ)
    assert qa.question == "Which port does SSH use?\nA. 21\nB. 22\nC. 23"
    assert qa.answer == "B. 22"
    assert qa.choices is None and qa.correct is None and not qa.is_mcq
    assert qa.metadata["mcq"] == {
        "question": "Which port does SSH use?",
        "choices": ["21", "22", "23"],
        "correct": 1,
        "style": "letter_text",
    }
    assert MCQ.is_mcq and MCQ.question == "Which port does SSH use?"  # the input is not modified


def test_mcq_to_qa_letter_only_and_plain_qa_untouched():
    assert mcq_to_qa(MCQ, style="letter").answer == "B"
    plain = QARecord(id="q", question="Q?", answer="A.", role="retain", source="s")
    assert mcq_to_qa(plain) is plain


def test_offline_text_to_qa_exact():
    passages = continuation_passages([TEXT], prefix_length=4, continuation_length=4)
    records = continuation_records(passages, role="forget", source="book", group="ch1", id_prefix="book/ch1")
    assert [(r.id, r.question, r.answer) for r in records] == [
        ("book/ch1/0/0", "Continue the passage:\nThe quick brown fox", "jumps over the lazy"),
        ("book/ch1/0/1", "Continue the passage:\ndog. It was a", "sunny day in the"),
    ]  # the last 4 words would have an empty continuation: dropped
    assert records[0].metadata == {"format": "continuation", "doc": 0, "passage": 0}
    longer = continuation_passages([TEXT], prefix_length=4, continuation_length=6)
    assert [(p.text, p.continuation) for p in longer] == [
        ("The quick brown fox", "jumps over the lazy dog. It"),
        ("was a sunny day", "in the park and everyone smiled."),
    ]


def test_offline_keeps_line_breaks_inside_and_is_deterministic():
    docs = ["Line one here.\nLine two there.\n\nAnd a third line follows now.", TEXT]
    first = continuation_passages(docs, prefix_length=3, continuation_length=3)
    assert first[0].text == "Line one here." and first[0].continuation == "Line two there."
    assert first[1].text == "And a third" and first[1].continuation == "line follows now."
    assert (first[2].doc, first[2].index) == (1, 0)
    assert continuation_passages(docs, prefix_length=3, continuation_length=3) == first


def test_offline_token_unit():
    passages = continuation_passages(
        [TEXT], prefix_length=2, continuation_length=3, unit="tokens", tokenizer=WhitespaceTokenizer()
    )
    assert (passages[0].text, passages[0].continuation) == ("The quick", "brown fox jumps")
    with pytest.raises(ValueError, match="needs a tokenizer"):
        continuation_passages([TEXT], prefix_length=2, continuation_length=3, unit="tokens")


def test_generation_passages_tail_rule():
    words = " ".join(f"w{i}" for i in range(25))
    tail_half = generation_passages([words], length=10)  # tail of 5 = half a passage: kept
    assert [len(p.text.split()) for p in tail_half] == [10, 10, 5]
    tail_one = generation_passages([words], length=12)  # tail of 1 word: dropped
    assert [len(p.text.split()) for p in tail_one] == [12, 12]
    assert [len(p.text.split()) for p in generation_passages(["a b c"], length=10)] == [3]  # whole doc kept


MESSY = """Sure! Here are the pairs:

1. **Q:** Who wrote the letter?
**A:** Albus Dumbledore wrote
it by hand.

Question 2: Where is Hogwarts?
Answer 2: In Scotland.

Q: An orphan question without answer
A:
A: stray answer
Some closing chatter."""


def test_parse_qa_pairs_tolerates_junk_and_counts_malformed():
    parsed = parse_qa_pairs(MESSY)
    assert parsed.pairs == [
        ("Who wrote the letter?", "Albus Dumbledore wrote it by hand."),
        ("Where is Hogwarts?", "In Scotland."),
    ]
    assert parsed.malformed == 2  # the question with a blank answer, the stray answer


def test_parse_qa_pairs_json_fallback_and_nothing():
    parsed = parse_qa_pairs(
        'Here: [{"question": "Q1?", "answer": "A1."}, {"question": "", "answer": "x"}] ok'
    )
    assert parsed.pairs == [("Q1?", "A1.")] and parsed.malformed == 1
    nothing = parse_qa_pairs("I cannot help with that.")
    assert nothing.pairs == [] and nothing.malformed == 0


class ScriptedGenerator:
    """Answers prompt i with replies[i] and records the prompts."""

    def __init__(self, replies: list[str]) -> None:
        self.replies = replies
        self.prompts: list[str] = []

    def generate(self, prompts: list[str]) -> list[str]:
        self.prompts = list(prompts)
        return self.replies[: len(prompts)]


def test_generated_records_with_report():
    template = load_prompt_template(resolve_path("pkg:data/prompts/text_to_qa.txt"))
    passages = generation_passages(["Alpha beta gamma.", "Delta epsilon zeta."], length=50)
    generator = ScriptedGenerator(
        [
            "Q: What is alpha?\nA: A letter.\n\nQ: And beta?\nA: Another.\n\nQ: X?\nA: Y.",
            "nothing useful here",
        ]
    )
    records, report = generated_records(
        passages,
        generator,
        template=template,
        pairs_per_passage=2,
        role="forget",
        source="book",
        group="g",
        id_prefix="book/x",
    )
    assert [(r.id, r.question, r.answer) for r in records] == [
        ("book/x/0/0/0", "What is alpha?", "A letter."),
        ("book/x/0/0/1", "And beta?", "Another."),
    ]
    assert (report.requested, report.kept, report.extra, report.malformed, report.empty_outputs) == (
        4,
        2,
        1,
        0,
        1,
    )
    assert report.dropped == 1 and report.missing == 2
    assert (
        "exactly 2 question-answer pairs" in generator.prompts[0]
        and "Alpha beta gamma." in generator.prompts[0]
    )


def test_generated_records_zero_pairs_is_an_error():
    passages = generation_passages(["Alpha beta gamma."], length=50)
    with pytest.raises(DataError, match="no parseable QA pair for any of 1 passages"):
        generated_records(
            passages,
            ScriptedGenerator(["Sorry, I can't."]),
            template="{n} {passage}",
            pairs_per_passage=1,
            role="forget",
            source="b",
            group="g",
            id_prefix="b",
        )


def test_prompt_template_fields_checked(tmp_path):
    bad = tmp_path / "t.txt"
    bad.write_text("Write {count} pairs about {passage}")
    with pytest.raises(DataError, match=r"fields \{n\} and \{passage\} only, found \['count', 'passage'\]"):
        load_prompt_template(bad)
