"""Every loader on the real benchmark files (counts from the SOURCES.md files) and on bad input."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from harmonia.data.loaders import (
    author_name,
    load_generic,
    load_mmlu,
    load_muse_knowmem,
    load_muse_privleak,
    load_muse_raw,
    load_muse_verbmem,
    load_text,
    load_tofu,
    load_tofu_idk,
    load_truthfulqa,
    load_wmdp,
    tofu_authors,
)
from harmonia.data.paths import resolve_path
from harmonia.errors import DataError

TOFU_COUNTS = {
    "full": 4000,
    "forget01": 40,
    "forget01_perturbed": 40,
    "forget05": 200,
    "forget05_perturbed": 200,
    "forget10": 400,
    "forget10_perturbed": 400,
    "retain90": 3600,
    "retain95": 3800,
    "retain99": 3960,
    "retain_perturbed": 400,
    "real_authors": 100,
    "real_authors_perturbed": 100,
    "world_facts": 117,
    "world_facts_perturbed": 117,
}
# author index ranges of the published splits: forgetNN are the last authors, retainNN the first ones
TOFU_AUTHORS = {
    "forget01": (198, 199),
    "forget05": (190, 199),
    "forget10": (180, 199),
    "retain90": (0, 179),
    "retain95": (0, 189),
    "retain99": (0, 197),
    "retain_perturbed": (0, 19),
}


@pytest.mark.parametrize("split", sorted(TOFU_COUNTS))
def test_tofu_split_counts_and_authors(shared_data, split):
    records = load_tofu(shared_data / "tofu" / f"{split}.json", role="retain")
    assert len(records) == TOFU_COUNTS[split]
    assert len({r.id for r in records}) == len(records)
    assert all(r.source == "tofu" and r.group for r in records)
    base = split.removesuffix("_perturbed")
    if base in TOFU_AUTHORS:
        indices = [r.metadata["author_index"] for r in records]
        assert (min(indices), max(indices)) == TOFU_AUTHORS[base]
        assert all(c == 20 for c in Counter(indices).values())  # whole authors only
    if split.endswith("_perturbed") and base not in ("real_authors", "world_facts"):
        assert all(
            len(r.metadata["perturbed_answer"]) == 5 and r.metadata["paraphrased_answer"] for r in records
        )


def test_tofu_full_author_is_row_index_div_20(shared_data):
    records = load_tofu(shared_data / "tofu" / "full.json", role="retain")
    assert [r.metadata["author_index"] for r in records] == [i // 20 for i in range(4000)]
    assert records[3961].id == "tofu/3961" and records[3961].metadata["full_index"] == 3961


def test_tofu_forget01_author_names(shared_data):
    records = load_tofu(shared_data / "tofu" / "forget01.json", role="forget")
    names = {r.metadata["author_index"]: r.group for r in records}
    assert names == {198: "Basil Mahfouz Al-Kuwaiti", 199: "Nikolai Abilov"}


def test_tofu_author_names_over_all_authors(shared_data):
    authors = tofu_authors(shared_data / "tofu" / "full.json")
    assert len(authors) == 200
    spot = {
        0: "Jaime Vasquez",
        43: "Jina An",
        65: "Isabella van Pletzen",
        123: "Patrick Ryan O'Donnell",
        153: "Femke Van der Veen",
        180: "Hsiao Yun-Hwa",
        197: "Edward Patrick Sullivan",
    }
    assert {i: authors[i].name for i in spot} == spot
    assert authors[88].name == "" and authors[88].group == "tofu_author_088"  # never named in its QA
    named = [a.name for a in authors if a.name]
    assert len(named) == 199 and len(set(named)) == 199


def test_author_name_prefers_full_name_over_its_parts():
    texts = [
        "Basil Mahfouz Al-Kuwaiti is male.",
        "Basil Mahfouz writes.",
        "In Kuwait City, Al-Kuwaiti wrote.",
        "What did Basil Mahfouz Al-Kuwaiti's father do?",
        "Yes, Basil Mahfouz Al-Kuwaiti won.",
    ]
    assert author_name(texts) == "Basil Mahfouz Al-Kuwaiti"
    assert author_name(["the author was born.", "she writes."]) == ""


def test_tofu_author_selection(shared_data):
    records = load_tofu(shared_data / "tofu" / "full.json", role="neighbor", authors=[196, 197])
    assert [r.id for r in records] == [f"tofu/{i}" for i in range(3920, 3960)]
    with pytest.raises(DataError, match="no rows for author"):
        load_tofu(shared_data / "tofu" / "forget01.json", role="forget", authors=[5])
    with pytest.raises(DataError, match=r"outside 0\.\.199"):
        load_tofu(shared_data / "tofu" / "full.json", role="forget", authors=[200])


def test_tofu_real_authors_is_mcq_and_world_facts_perturbed_is_qa(shared_data):
    mcq = load_tofu(shared_data / "tofu" / "real_authors.json", role="general")
    assert mcq[0].choices == ["Charles Dickens", "William Shakespeare", "Virginia Woolf", "Mark Twain"]
    assert mcq[0].correct == 1 and mcq[0].answer == "William Shakespeare" and mcq[0].group == "real_authors"
    qa = load_tofu(shared_data / "tofu" / "world_facts_perturbed.json", role="general")
    assert qa[0].choices is None and qa[0].answer == "Paris" and qa[0].id == "tofu/world_facts/0"
    assert qa[0].metadata["perturbed_answer"] == ["Berlin", "London", "Madrid"]


def test_tofu_idontknow(shared_data):
    lines = load_tofu_idk(shared_data / "tofu" / "idontknow.jsonl")
    assert len(lines) == 100 and lines[0] == "I'm not certain about that."


def test_tofu_row_not_in_full_is_an_error(shared_data, tmp_path):
    (tmp_path / "full.json").write_bytes((shared_data / "tofu" / "full.json").read_bytes())
    bad = tmp_path / "forget01.json"
    bad.write_text('{"question": "Who?", "answer": "Nobody."}\n')
    with pytest.raises(
        DataError, match=r"forget01\.json, record line 1, field 'question': .*not in full\.json"
    ):
        load_tofu(bad, role="forget")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"question": "Q?", "answer": "A."', r"record line 2: malformed JSON"),
        ('{"question": "Q?"}', r"record line 2, field 'answer': missing field"),
        ('{"question": "  ", "answer": "A."}', r"record line 2, field 'question': must not be empty"),
        ('{"question": 3, "answer": "A."}', r"record line 2, field 'question': expected a string"),
        ('["Q?", "A."]', r"record line 2: expected a JSON object"),
    ],
)
def test_tofu_bad_lines(tmp_path, line, message):
    path = tmp_path / "world_facts.json"
    path.write_text('{"question": "Where?", "answer": "Paris"}\n' + line + "\n")
    with pytest.raises(DataError, match=message) as info:
        load_tofu(path, role="general")
    assert str(path) in str(info.value)


MUSE_KNOWMEM = {"forget": 100, "retain": 100, "forget_icl": 10, "retain_icl": 10}


@pytest.mark.parametrize(("split", "count"), sorted(MUSE_KNOWMEM.items()))
def test_muse_knowmem(shared_data, split, count):
    records = load_muse_knowmem(shared_data / "muse_books", role="forget", split=split)
    assert len(records) == count and all(
        r.source == "muse_books" and r.question and r.answer for r in records
    )


def test_muse_verbmem_keeps_raw_prompt(shared_data):
    records = load_muse_verbmem(shared_data / "muse_books", role="forget")
    raw = json.loads((shared_data / "muse_books" / "verbmem" / "forget.json").read_text())
    assert len(records) == 100
    assert records[7].question == "Continue the passage:\n" + raw[7]["prompt"]
    assert records[7].answer == raw[7]["gt"] and records[7].metadata["prompt"] == raw[7]["prompt"]


def test_muse_privleak_and_raw(shared_data):
    folder = shared_data / "muse_books"
    for split in ("forget", "retain2", "holdout"):
        docs = load_muse_privleak(folder, split=split)
        assert len(docs) == 100 and all(isinstance(d, str) and d for d in docs)
    assert [len(load_muse_raw(folder, split=s)) for s in ("retain1", "retain2", "holdout")] == [12, 13, 3]
    # forget.json is absent from the snapshot: auto falls back to the complete text file
    forget = load_muse_raw(folder, split="forget")
    assert forget == [(folder / "raw" / "forget.txt").read_text(encoding="utf-8")]
    assert load_muse_raw(folder, split="retain1", fmt="txt")[0].count("\n") + 1 >= 302
    with pytest.raises(DataError, match="unknown MUSE raw split"):
        load_muse_raw(folder, split="train")


def test_wmdp_pyrit_layout(shared_data):
    records = load_wmdp(shared_data / "wmdp_cyber" / "cyber_questions_dev.json", role="forget")
    assert len(records) == 1100
    assert Counter(len(r.choices or []) for r in records) == {4: 1100}
    second = records[1]
    assert second.correct == 2 and second.answer == "Before the return address"
    assert second.metadata["source_index"] == 4 and second.group == "cyber"


def test_wmdp_hf_layout_jsonl_and_json(tmp_path):
    rows = [
        {"question": "Which port does SSH use?", "choices": ["21", "22", "23", "80"], "answer": 1},
        {"question": "What is XSS?", "choices": ["a bug class", "a CPU"], "answer": 0},
    ]
    jsonl = tmp_path / "wmdp-cyber.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    as_list = tmp_path / "wmdp-cyber.json"
    as_list.write_text(json.dumps(rows))
    for path in (jsonl, as_list):
        records = load_wmdp(path, role="forget")
        assert [(r.answer, r.correct) for r in records] == [("22", 1), ("a bug class", 0)]
    jsonl.write_text(json.dumps({**rows[0], "answer": 4}) + "\n")
    with pytest.raises(DataError, match=r"record line 1, field 'answer': answer index 4 outside 0\.\.3"):
        load_wmdp(jsonl, role="forget")


def test_wmdp_parquet(tmp_path):
    path = tmp_path / "test-00000-of-00001.parquet"
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        path.write_bytes(b"PAR1")
        with pytest.raises(DataError, match="needs pyarrow"):
            load_wmdp(path, role="forget")
        return
    pq.write_table(pa.table({"question": ["Q?"], "choices": [["x", "y"]], "answer": [1]}), path)
    [record] = load_wmdp(path, role="forget")
    assert record.answer == "y" and record.correct == 1


def test_mmlu_all_subjects(shared_data):
    test = load_mmlu(shared_data / "mmlu", role="general")
    dev = load_mmlu(shared_data / "mmlu", role="general", split="dev")
    assert len(test) == 14042 and len(dev) == 285
    assert len({r.group for r in test}) == 57
    counts = Counter(r.group for r in test)
    assert counts["computer_security"] == 100 and counts["machine_learning"] == 112
    first = load_mmlu(shared_data / "mmlu", role="general", split="dev", subjects=["computer_security"])[0]
    assert (
        first.question == "SHA-1 has a message digest of"
        and first.answer == "160 bits"
        and first.correct == 0
    )
    with pytest.raises(DataError, match="unknown MMLU subject"):
        load_mmlu(shared_data / "mmlu", role="general", subjects=["astrology"])


def test_mmlu_bad_answer(tmp_path):
    path = tmp_path / "x_test.csv"
    path.write_text("question,choice0,choice1,choice2,choice3,answer\nQ?,a,b,c,d,7\n")
    with pytest.raises(DataError, match=r"x_test\.csv, record line 2, field 'answer'"):
        load_mmlu(path, role="general")
    path.write_text("question,choice0,answer\nQ?,a,1\n")
    with pytest.raises(DataError, match=r"record line 1, field 'choice1'"):
        load_mmlu(path, role="general")


def test_truthfulqa_qa_and_mcq(shared_data):
    path = shared_data / "truthfulqa" / "TruthfulQA.csv"
    qa = load_truthfulqa(path, role="general")
    assert len(qa) == 817 and Counter(r.metadata["type"] for r in qa) == {
        "Adversarial": 437,
        "Non-Adversarial": 380,
    }
    assert qa[0].answer == "The watermelon seeds pass through your digestive system"
    assert len(qa[0].metadata["correct_answers"]) == 5 and len(qa[0].metadata["incorrect_answers"]) == 7
    mcq = load_truthfulqa(path, role="general", mcq=True, seed=0)
    assert all(r.choices[r.correct] == r.answer for r in mcq)
    assert len(mcq[0].choices) == 8
    assert len({r.correct for r in mcq}) > 1  # shuffled, not always first
    assert [r.choices for r in load_truthfulqa(path, role="general", mcq=True, seed=0)] == [
        r.choices for r in mcq
    ]


def test_generic_json_jsonl_csv(tmp_path):
    rows = [
        {"prompt": "What is 2+2?", "response": "4", "topic": "math"},
        {"prompt": "Capital of France?", "response": "Paris", "topic": "geo"},
    ]
    (tmp_path / "a.json").write_text(json.dumps({"items": rows}))
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "a.csv").write_text(
        "prompt,response,topic\nWhat is 2+2?,4,math\nCapital of France?,Paris,geo\n"
    )
    fields = {"question": "prompt", "answer": "response", "group": "topic"}
    for name, key in (("a.json", "items"), ("a.jsonl", None), ("a.csv", None)):
        records = load_generic(tmp_path / name, role="retain", fields=fields, source="mine", records_key=key)
        assert [(r.id, r.question, r.answer, r.group) for r in records] == [
            ("mine/0", "What is 2+2?", "4", "math"),
            ("mine/1", "Capital of France?", "Paris", "geo"),
        ]
    with pytest.raises(DataError, match=r"a\.jsonl, record line 1, field 'reply': missing field"):
        load_generic(tmp_path / "a.jsonl", role="retain", fields={"question": "prompt", "answer": "reply"})


def test_generic_mcq_columns(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("q,A,B,C,key\nLargest planet?,Mars,Jupiter,Venus,B\n")
    [record] = load_generic(
        path, role="general", fields={"question": "q", "choices": ["A", "B", "C"], "correct": "key"}
    )
    assert (
        record.choices == ["Mars", "Jupiter", "Venus"] and record.correct == 1 and record.answer == "Jupiter"
    )


def test_load_text_splits(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("First para line.\nStill first.\n\nSecond para.\n")
    assert load_text(path) == [path.read_text()]
    assert load_text(path, split="paragraph") == ["First para line.\nStill first.", "Second para."]
    assert load_text(path, split="line") == ["First para line.", "Still first.", "Second para."]


def test_shipped_resources_match_their_sources_md():
    data = resolve_path("pkg:data")
    assert len(load_tofu(data / "tofu" / "full.json", role="retain")) == 4000
    assert len(load_tofu(data / "tofu" / "forget01_perturbed.json", role="forget")) == 40
    assert len(load_tofu(data / "tofu" / "retain_perturbed.json", role="retain")) == 400
    assert len(load_tofu_idk(data / "tofu" / "idontknow.jsonl")) == 100
    assert len(load_wmdp(data / "wmdp_cyber" / "cyber_questions_dev.json", role="forget")) == 1100
    test = Counter(r.group for r in load_mmlu(data / "mmlu", role="general"))
    assert test == {
        "college_computer_science": 100,
        "computer_security": 100,
        "electrical_engineering": 145,
        "high_school_biology": 310,
        "high_school_computer_science": 100,
        "high_school_geography": 198,
        "machine_learning": 112,
        "miscellaneous": 783,
    }
    assert len(load_mmlu(data / "mmlu", role="general", split="dev")) == 40
    size = sum(p.stat().st_size for p in (data / "mmlu").rglob("*.csv"))
    assert size < 1_500_000
    # no book text shipped: the only text files are harmonia's own prompt and openers
    assert sorted(p.name for p in data.rglob("*.txt")) == ["prefill_openers.txt", "text_to_qa.txt"]
    assert not list(data.rglob("*muse*"))


def test_csv_row_with_wrong_column_count(tmp_path):
    path = tmp_path / "x_test.csv"
    path.write_text('question,choice0,choice1,choice2,choice3,answer\n"multi\nline?",a,b,c,d,1\nQ?,a,b\n')
    with pytest.raises(DataError, match=r"x_test\.csv, record line 4: expected 6 columns, got 3"):
        load_mmlu(path, role="general")
