"""The ablation: each variant toggles exactly one design choice, its records change only as toggled,
and the script runs end to end on a tiny random model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harmonia.data.anchors import drop_anchor_links
from harmonia.data.build import build_dataset
from harmonia.data.schema import QARecord
from harmonia.errors import ConfigError, HarmoniaError
from harmonia.pipelines.ablation import (
    VARIANTS,
    choose_variants,
    limit_per_role,
    raw_text_data,
    unlearning_records,
    variant_config,
)
from harmonia.pipelines.demo_config import demo_config_path


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict) and tree:
        return {k: v for key, sub in tree.items() for k, v in flatten(sub, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): tree}


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_each_variant_differs_from_the_base_in_its_toggled_field_only(variant):
    base = flatten(variant_config(demo_config_path(None), VARIANTS[0]).model_dump(mode="json"))
    cfg = flatten(variant_config(demo_config_path(None), variant).model_dump(mode="json"))
    changed = {k for k in base.keys() | cfg.keys() if base.get(k) != cfg.get(k)}
    toggled = {o.split("=", 1)[0] for o in variant.overrides}
    # an override equal to the demo's own value (e.g. the demo's teacher mode) changes nothing
    assert changed <= {k for k in base.keys() | cfg.keys() if any(k == t or k.startswith(t + ".") for t in toggled)}
    assert changed or variant.name in {"base", "raw_text", "no_anchors", "teacher_amplified1", "centre"}


def test_unknown_variant_is_named():
    assert [v.name for v in choose_variants(["k5", "base"])] == ["base", "k5"]
    with pytest.raises(ConfigError, match="'nope'"):
        choose_variants(["nope"])


@pytest.fixture(scope="module")
def demo_records(tokenizer) -> list[QARecord]:
    return build_dataset(variant_config(demo_config_path(None), VARIANTS[0]).data, tokenizer=tokenizer)


def test_no_anchors_removes_links_and_nothing_else(demo_records):
    assert any(r.anchor_id for r in demo_records)
    stripped = drop_anchor_links(demo_records)
    assert not any(r.anchor_id or r.anchor_similarity is not None or "anchor_of" in r.metadata for r in stripped)
    assert [(r.id, r.question, r.answer, r.prefill) for r in stripped] == \
        [(r.id, r.question, r.answer, r.prefill) for r in demo_records]


def test_raw_text_replaces_only_the_forget_records(demo_records, tokenizer, tmp_path, monkeypatch):
    cfg = variant_config(demo_config_path(None), next(v for v in VARIANTS if v.raw_text))
    # the script's output folder is relative to where it runs, not to the demo config's folder
    monkeypatch.chdir(tmp_path)
    raw = unlearning_records(cfg, next(v for v in VARIANTS if v.raw_text), demo_records, tokenizer,
                             Path("runs/ablation/raw_text/raw_text"))
    qa = unlearning_records(cfg, VARIANTS[0], demo_records, tokenizer, tmp_path)
    forget_raw = [r for r in raw if r.role == "forget"]
    assert forget_raw and all(r.question.startswith("Continue the passage") for r in forget_raw)
    assert {r.group for r in forget_raw} == {r.group for r in qa if r.role == "forget"}  # same scope
    assert any(r.prefill for r in forget_raw)  # prefill augmentation still applies to the raw text
    assert [r.id for r in raw if r.role != "forget"] == [r.id for r in qa if r.role != "forget"]
    data = raw_text_data(cfg.data, demo_records, tmp_path)
    assert [s.role for s in data.sources].count("forget") == len({r.group for r in forget_raw})


def test_limit_per_role_caps_each_role(demo_records):
    limited = limit_per_role(demo_records, 3)
    for role in {r.role for r in demo_records}:
        assert sum(r.role == role and not r.prefill for r in limited) == 3
    assert limit_per_role(demo_records, None) == demo_records


def test_script_runs_end_to_end_on_a_tiny_model(script, tiny_demo, tmp_path):
    out = tmp_path / "ablations.md"
    # the table replaces its config's marked section; the prose around it and other sections stay
    prose = ("# Ablations\n\nintro\n\n<!-- ablation:demo:begin -->\nold table\n<!-- ablation:demo:end -->\n\n"
             "reading\n\n<!-- ablation:demo_fast:begin -->\nother profile\n<!-- ablation:demo_fast:end -->\n")
    out.write_text(prose)
    script("ablation").main(["--steps", "1", "--variants", "base,raw_text,no_anchors,pull_only", "--eval-limit", "2",
                             "--output-dir", str(tmp_path / "runs"), "-o", str(out), *tiny_demo])
    text = out.read_text()
    for name in ("target", "base", "raw_text", "no_anchors", "pull_only"):
        assert f"| {name} |" in text
    assert "train 1 steps" in text and "combined" in text
    assert "old table" not in text
    assert text.startswith("# Ablations\n\nintro\n\n<!-- ablation:demo:begin -->\nEach row toggles")
    assert text.endswith("<!-- ablation:demo:end -->\n\nreading\n\n<!-- ablation:demo_fast:begin -->\nother profile\n"
                         "<!-- ablation:demo_fast:end -->\n")


def test_script_checks_the_output_before_training(script, tiny_demo, tmp_path):
    out = tmp_path / "notes.md"
    out.write_text("hand-written notes without markers\n")
    with pytest.raises(HarmoniaError, match=r"notes\.md: expected one '<!-- ablation:demo:begin -->'"):
        script("ablation").main(["--steps", "1", "--variants", "base", "--output-dir", str(tmp_path / "runs"),
                                 "-o", str(out), *tiny_demo])
    assert out.read_text() == "hand-written notes without markers\n"
    assert not (tmp_path / "runs").exists()  # refused before the target was prepared
