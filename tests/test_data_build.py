"""DataConfig (paths, validation) and build_dataset: the demo config end to end, text sources, errors."""

from __future__ import annotations

import io
import json
import re
import time
from collections import Counter
from pathlib import Path

import pytest
from rich.console import Console

from harmonia.data.build import build_dataset, inspect_dataset, render_summary
from harmonia.data.config import load_data_config, parse_data_config
from harmonia.data.jsonl import write_records
from harmonia.data.paths import resolve_path, resources_dir
from harmonia.errors import ConfigError, DataError

DEMO = resolve_path("pkg:configs/demo_data.yaml")


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "data.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def demo(tokenizer):
    cfg = load_data_config(DEMO)
    start = time.perf_counter()
    records = build_dataset(cfg, tokenizer=tokenizer)
    return cfg, records, time.perf_counter() - start


def test_demo_builds_fast_with_every_role(demo):
    _, records, seconds = demo
    assert seconds < 60
    base = [r for r in records if "kind" not in r.metadata]
    assert Counter(r.role for r in base) == {"forget": 40, "neighbor": 40, "retain": 800, "general": 157}
    assert len({r.id for r in records}) == len(records)
    authors = {
        role: {r.metadata.get("author_index") for r in base if r.role == role}
        for role in ("forget", "neighbor")
    }
    assert authors == {"forget": {198, 199}, "neighbor": {196, 197}}
    calibration = {r.metadata["author_index"] for r in base if r.metadata.get("calibration")}
    retain = {
        r.metadata["author_index"] for r in base if r.role == "retain" and not r.metadata.get("calibration")
    }
    assert calibration == set(range(150, 186)) and retain == set(range(192, 196))
    # the wide calibration entities are not learned by the target first (in_target: false)
    not_learned = {r.metadata["author_index"] for r in base if r.metadata.get("in_target") is False}
    assert not_learned == set(range(150, 180))
    general = Counter(r.source for r in base if r.role == "general")
    assert general == {"mmlu": 40, "tofu": 117}
    for r in base:
        if r.source == "mmlu":
            assert "\nA. " in r.question and re.match(r"^[A-D]\. ", r.answer) and not r.is_mcq


def test_demo_anchor_links_are_consistent(demo):
    _, records, _ = demo
    by_id = {r.id: r for r in records}
    forget = [r for r in records if r.role == "forget" and "kind" not in r.metadata]
    assert all(r.anchor_id is not None for r in forget)
    for r in forget:
        neighbour = by_id[r.anchor_id]
        assert neighbour.role == "neighbor" and r.id in neighbour.metadata["anchor_of"]
    for n in (r for r in records if r.role == "neighbor" and r.anchor_id is not None):
        assert by_id[n.anchor_id].anchor_id == n.id and n.anchor_id == n.metadata["anchor_of"][0]
    assert all(r.anchor_id is None for r in records if r.role in ("retain", "general"))


def test_demo_prefill_records(demo, tokenizer):
    _, records, _ = demo
    by_id = {r.id: r for r in records}
    kinds = Counter(
        (r.role, r.metadata.get("kind"), r.metadata.get("k")) for r in records if "kind" in r.metadata
    )
    for role in ("forget", "neighbor"):
        assert kinds[(role, "opener", None)] == 40
        assert all(kinds[(role, "gold_prefix", k)] == 40 for k in (2, 5, 10))
    assert {r.role for r in records if "kind" in r.metadata} == {"forget", "neighbor"}
    for r in records:
        if r.metadata.get("kind") == "gold_prefix":
            parent = by_id[r.metadata["parent_id"]]
            assert r.prefill + r.answer == parent.answer
            assert len(tokenizer.encode(r.prefill, add_special_tokens=False)) == r.metadata["k"]


def test_demo_is_deterministic_and_round_trips_through_inspect(demo, tokenizer, tmp_path):
    cfg, records, _ = demo
    assert build_dataset(cfg, tokenizer=tokenizer) == records
    path = write_records(tmp_path / "demo.jsonl", records)
    summary = inspect_dataset(path)
    assert summary.n_records == len(records) and summary.by_role["forget"] == 40 + 160
    assert summary.by_kind == {"base": 1037, "gold_prefix": 240, "opener": 80}
    assert summary.n_anchored == 40 and summary.n_calibration == 720
    assert sum(c for _, _, c in summary.histogram) == len(records)
    console = Console(file=io.StringIO(), width=120)
    render_summary(summary, console)
    text = console.file.getvalue()
    assert "Basil Mahfouz Al-Kuwaiti" in text and f"{len(records)} records" in text


def test_paths_resolve_against_the_config_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "qa.jsonl").write_text(json.dumps({"prompt": "Q?", "response": "A."}) + "\n")
    cfg = load_data_config(
        _config(
            tmp_path,
            """
sources:
  - {loader: generic, role: retain, path: sub/qa.jsonl, fields: {question: prompt, answer: response}}
  - {loader: wmdp, role: forget, limit: 2}
anchors: {enabled: false}
prefill: {enabled: false}
""",
        )
    )
    assert cfg.source_path(cfg.sources[0]) == tmp_path / "sub" / "qa.jsonl"
    assert (
        cfg.source_path(cfg.sources[1])
        == resources_dir() / "data" / "wmdp_cyber" / "cyber_questions_dev.json"
    )
    records = build_dataset(cfg)
    assert [r.id for r in records] == ["custom/0", "wmdp/cyber/0", "wmdp/cyber/1"]
    assert resolve_path("/abs/x", tmp_path) == Path("/abs/x")


def test_a_relative_path_from_an_environment_variable_is_taken_from_the_current_directory(tmp_path, monkeypatch):
    # `export HARMONIA_DATA=../data` means the shell's ../data, not the config file's
    config_dir, work_dir = tmp_path / "configs", tmp_path / "work"
    config_dir.mkdir()
    (work_dir / "data").mkdir(parents=True)
    (work_dir / "data" / "qa.jsonl").write_text(json.dumps({"prompt": "Q?", "response": "A."}) + "\n")
    cfg = load_data_config(
        _config(
            config_dir,
            """
sources:
  - {loader: generic, role: retain, path: "${HARMONIA_DATA}/qa.jsonl", fields: {question: prompt, answer: response}}
  - {loader: generic, role: retain, path: "sub/${HARMONIA_DATA}/qa.jsonl", fields: {question: prompt, answer: response}}
anchors: {enabled: false}
prefill: {enabled: false}
""",
        )
    )
    monkeypatch.chdir(work_dir)
    monkeypatch.setenv("HARMONIA_DATA", "data")
    assert cfg.source_path(cfg.sources[0]) == work_dir / "data" / "qa.jsonl"
    assert [r.question for r in build_dataset(cfg.model_copy(update={"sources": cfg.sources[:1]}))] == ["Q?"]
    # a variable inside a relative spec is a path component: the spec stays relative to the config
    assert cfg.source_path(cfg.sources[1]) == config_dir / "sub" / "data" / "qa.jsonl"
    monkeypatch.setenv("HARMONIA_DATA", str(tmp_path / "elsewhere"))
    assert cfg.source_path(cfg.sources[0]) == tmp_path / "elsewhere" / "qa.jsonl"
    monkeypatch.setenv("HARMONIA_DATA", "~/muse")
    assert cfg.source_path(cfg.sources[0]) == Path("~/muse/qa.jsonl").expanduser()


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(
        ConfigError, match=r"TOFU author 185 is in both tofu_cal \(role retain, calibration\)"
    ):
        load_data_config(
            _config(
                tmp_path,
                """
sources:
  - {name: tofu_cal, loader: tofu, role: retain, authors: "180-189", calibration: true}
  - {loader: tofu, role: neighbor, authors: [185]}
""",
            )
        )
    with pytest.raises(ConfigError, match=r"data\.yaml: key 'sources\.0\.subject': Extra inputs"):
        load_data_config(_config(tmp_path, "sources:\n  - {loader: mmlu, role: general, subject: [x]}\n"))
    with pytest.raises(ConfigError, match=r"key 'sources\.0': .*loader 'muse' needs a 'path'"):
        load_data_config(_config(tmp_path, "sources:\n  - {loader: muse, role: forget}\n"))
    with pytest.raises(ConfigError, match=r"key 'standardise': .*needs an 'http' block"):
        parse_data_config(
            {"sources": [{"loader": "wmdp", "role": "forget"}], "standardise": {"text_mode": "http"}}
        )


def test_build_errors():
    base = {"anchors": {"enabled": False}, "prefill": {"enabled": False}}
    overlapping = [
        {"loader": "tofu", "role": "forget", "split": "forget01"},
        {"loader": "tofu", "role": "retain", "authors": [198]},
    ]
    with pytest.raises(
        DataError, match=r"record tofu/3960, field 'id': duplicate record id: sources tofu\[0\] and tofu\[1\]"
    ):
        build_dataset({"sources": overlapping, **base})
    forget_only = {"sources": [{"loader": "tofu", "role": "forget", "authors": [199]}]}
    with pytest.raises(ConfigError, match="no source has role 'neighbor'"):
        build_dataset(forget_only | {"prefill": {"enabled": False}})
    with pytest.raises(ConfigError, match="pass the model's tokenizer"):
        build_dataset(forget_only | {"anchors": {"enabled": False}})
    words = build_dataset(
        forget_only | {"anchors": {"enabled": False}, "prefill": {"tokenizer": "whitespace"}}
    )
    assert Counter(r.metadata.get("kind", "base") for r in words) == {
        "base": 20,
        "gold_prefix": 60,
        "opener": 20,
    }


def test_max_length_error_or_drop():
    src = {
        "sources": [{"loader": "wmdp", "role": "forget", "limit": 50}],
        "anchors": {"enabled": False},
        "prefill": {"enabled": False},
    }
    with pytest.raises(
        DataError, match=r"record wmdp/cyber/0, field 'question': record is \d+ characters long"
    ):
        build_dataset(src | {"max_length": {"chars": 400}})
    kept = build_dataset(src | {"max_length": {"chars": 400, "on_overflow": "drop"}})
    assert 0 < len(kept) < 50 and all(len(r.question) + len(r.answer) <= 400 for r in kept)


def test_random_sample_is_seeded():
    def ids(seed):
        cfg = {
            "sources": [{"loader": "mmlu", "role": "general", "limit": 10, "sample": "random"}],
            "seed": seed,
            "anchors": {"enabled": False},
            "prefill": {"enabled": False},
        }
        return [r.id for r in build_dataset(cfg)]

    assert ids(0) == ids(0) and ids(0) != ids(1) and len(set(ids(0))) == 10


def test_text_source_offline_and_with_a_generator(tmp_path):
    (tmp_path / "notes.txt").write_text("one two three four five six seven eight nine ten eleven twelve")
    cfg_text = """
sources:
  - {loader: text, role: forget, path: notes.txt, source: notes, limit: 1}
anchors: {enabled: false}
prefill: {enabled: false}
standardise:
  {prefix_length: 3, continuation_length: 3, text_mode: MODE, pairs_per_passage: 1, passage_length: 6,
   http: {base_url: "http://127.0.0.1:9", model: m}}
"""
    offline = build_dataset(load_data_config(_config(tmp_path, cfg_text.replace("MODE", "offline"))))
    assert [(r.id, r.question, r.answer, r.group) for r in offline] == [
        ("notes/notes/0/0", "Continue the passage:\none two three", "four five six", "notes")
    ]

    class Scripted:
        def generate(self, prompts):
            assert len(prompts) == 1 and "one two three four five six" in prompts[0]
            return ["Q: What comes after three?\nA: Four."]

    cfg = load_data_config(_config(tmp_path, cfg_text.replace("MODE", "http")))
    generated = build_dataset(cfg, generator=Scripted())
    assert [(r.id, r.question, r.answer) for r in generated] == [
        ("notes/notes/0/0/0", "What comes after three?", "Four.")
    ]


def test_muse_sources_from_a_user_folder(shared_data, tmp_path):
    cfg = load_data_config(
        _config(
            tmp_path,
            f"""
sources:
  - {{loader: muse, role: forget, path: {shared_data / "muse_books"}, subset: knowmem, split: forget}}
  - {{loader: muse, role: forget, path: {shared_data / "muse_books"}, subset: verbmem, limit: 3}}
  - {{loader: muse, role: retain, path: {shared_data / "muse_books"}, subset: raw, split: retain1, limit: 5}}
  - {{loader: muse, role: neighbor, path: {shared_data / "muse_books"}, subset: knowmem, split: retain}}
prefill: {{enabled: false}}
""",
        )
    )
    records = build_dataset(cfg)
    assert Counter((r.role, r.metadata.get("subset", r.metadata.get("format"))) for r in records) == {
        ("forget", "knowmem"): 100,
        ("forget", "verbmem"): 3,
        ("retain", "continuation"): 5,
        ("neighbor", "knowmem"): 100,
    }
    raw = [r for r in records if r.role == "retain"]
    assert all(len(r.answer.split()) == 48 for r in raw) and raw[0].id == "muse_books/raw/retain1/0/0"
    assert all(r.anchor_id for r in records if r.role == "forget")


def test_config_read_from_the_data_section_of_a_run_config(tmp_path):
    text = "model: x\ndata:\n  sources:\n    - {loader: wmdp, role: forget}\n"
    cfg = load_data_config(_config(tmp_path, text))
    assert cfg.base_dir == tmp_path and cfg.sources[0].role == "forget"
