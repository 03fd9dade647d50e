"""Demo presets (MUSE-Books, WMDP-Cyber, CPU and GPU sized): they load, validate, inherit the demo,
name missing data clearly, and their data builds give every role the configured counts."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from harmonia.cli.main import app
from harmonia.config import load_config
from harmonia.data.build import build_dataset
from harmonia.data.config import load_data_config
from harmonia.data.jsonl import read_records, record_length
from harmonia.errors import ConfigError
from harmonia.pipelines.demo_config import DemoConfig, demo_config_path, demo_presets
from harmonia.pipelines.targets import calibration_records
from harmonia.teacher.context import build_context

PRESETS = ("muse_books", "wmdp_cyber", "muse_books_gpu", "wmdp_cyber_gpu")
CPU_PRESETS = ("muse_books", "wmdp_cyber")
runner = CliRunner()


@pytest.fixture()
def data_env(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HARMONIA_MUSE_BOOKS", str(shared_data / "muse_books"))
    monkeypatch.setenv("HARMONIA_MMLU", str(shared_data / "mmlu"))
    return shared_data


def test_presets_are_listed_and_unknown_names_rejected():
    assert set(PRESETS) | {"demo", "demo_fast", "demo_attacks"} == set(demo_presets())
    with pytest.raises(ConfigError, match=r"unknown demo preset 'muse'.*muse_books"):
        demo_config_path("muse")


@pytest.mark.parametrize("name", PRESETS)
def test_preset_validates_and_keeps_the_demo_pipeline(name):
    demo = load_config(DemoConfig, demo_config_path("demo_fast"))
    cfg = load_config(DemoConfig, demo_config_path(name))
    assert cfg.name != demo.name and cfg.output_dir != demo.output_dir
    # inherited through `extends`: the same method, baselines and attacks as the default TOFU demo
    assert cfg.unlearn.method == demo.unlearn.method
    assert cfg.run_baselines == demo.run_baselines
    assert cfg.evaluation.attacks == demo.evaluation.attacks
    assert cfg.teacher.scope.forget and cfg.teacher.scope.neighbor
    roles = {src.role for src in cfg.data.sources}
    assert roles == {"forget", "neighbor", "retain", "general"}


def test_fast_demo_prepares_the_same_target_and_evaluates_the_same_records():
    """demo_fast shares the demo's cached target, reference and calibration (their inputs are equal)
    and scores the same questions; only the unlearning budget and evaluation batching differ."""
    demo = load_config(DemoConfig, demo_config_path("demo"))
    fast = load_config(DemoConfig, demo_config_path("demo_fast"))
    assert fast.output_dir != demo.output_dir
    for section in ("model", "data", "eval_data", "target", "heldout", "eval_records", "run_baselines"):
        assert getattr(fast, section) == getattr(demo, section), section
    assert fast.teacher.model_copy(update={"report": demo.teacher.report}) == demo.teacher
    # the same records, except that demo_fast trains every prefilled copy of the forget and neighbour questions
    assert fast.unlearn.records.prefilled == {role: None for role in demo.unlearn.records.prefilled}
    assert fast.unlearn.records.model_copy(update={"prefilled": demo.unlearn.records.prefilled}) == demo.unlearn.records
    assert fast.evaluation.model_copy(update={"generation": demo.evaluation.generation}) == demo.evaluation
    assert fast.evaluation.generation.max_new_tokens == demo.evaluation.generation.max_new_tokens
    budget = fast.unlearn.train
    assert budget.steps * budget.batch_size < demo.unlearn.train.steps * demo.unlearn.train.batch_size
    assert budget.train_top_layers is not None
    # float32 unlearning: on a CPU without AMX a bf16 step costs ~1.5x a float32 one (docs/demo.md)
    assert demo.unlearn.train.bf16 and not budget.bf16
    assert not demo.target.bf16  # and the target and reference, shared by both profiles
    # RMU trains only its own layers: they must be among the trained top layers (30 in the model)
    rmu = fast.method_config("rmu").params
    layers = {int(n) for n in re.findall(r"\d+", rmu["trainable_params"][0])}
    assert min(layers) >= 30 - budget.train_top_layers and re.search(r"\d+", rmu["layer"])[0] == str(max(layers))


def test_attack_profile_evaluates_demo_fast_runs_under_every_qa_attack():
    """demo_attacks trains exactly what demo_fast trains (the same run keys) and adds the jailbreak and
    relearning attacks to the same evaluation; the combined score still reads the prefilling attack."""
    fast = load_config(DemoConfig, demo_config_path("demo_fast"))
    full = load_config(DemoConfig, demo_config_path("demo_attacks"))
    assert full.output_dir != fast.output_dir
    for section in ("model", "data", "eval_data", "target", "teacher", "unlearn", "baselines", "run_baselines",
                    "heldout", "eval_records"):
        assert getattr(full, section) == getattr(fast, section), section
    attacks = full.evaluation.attacks
    assert attacks.prefill == fast.evaluation.attacks.prefill
    assert fast.evaluation.attacks.jailbreak is None and fast.evaluation.attacks.relearn is None
    assert attacks.jailbreak is not None and attacks.jailbreak.sources == ["dan"]
    # relearning below the target's SFT rate, where it separates the target from the reference (session 22)
    assert attacks.relearn is not None and attacks.relearn.lr < fast.target.lr
    assert full.evaluation.objectives == fast.evaluation.objectives
    assert full.evaluation.model_copy(update={"attacks": fast.evaluation.attacks}) == fast.evaluation


def test_gpu_presets_use_the_papers_models():
    assert load_config(DemoConfig, demo_config_path("muse_books_gpu")).model.spec == "meta-llama/Llama-3.2-3B-Instruct"
    assert load_config(DemoConfig, demo_config_path("wmdp_cyber_gpu")).model.spec == "HuggingFaceH4/zephyr-7b-beta"


@pytest.mark.parametrize("name", ("muse_books_gpu", "wmdp_cyber_gpu"))
def test_gpu_presets_drop_the_cpu_profiles_choices(name):
    """The CPU presets inherit demo_fast's budget, kernel, precision and baseline rates, chosen for the
    135M model on this CPU; the GPU presets train every layer in bf16 with the default kernel, every
    method at their rate."""
    cfg = load_config(DemoConfig, demo_config_path(name))
    cpu = load_config(DemoConfig, demo_config_path(name.removesuffix("_gpu")))
    assert cpu.unlearn.train.attention == "eager" and cpu.baselines["npo"].lr is not None
    assert not cpu.unlearn.train.bf16 and not cpu.target.bf16
    assert cfg.unlearn.train.attention is None and cfg.unlearn.train.train_top_layers is None
    assert cfg.unlearn.train.bf16 and cfg.target.bf16
    assert all(b.lr is None for b in cfg.baselines.values())
    # demo_fast's update scales were tuned on the 135M TOFU demo; every preset trains as trained
    assert cpu.unlearn.train.update_scale == cfg.unlearn.train.update_scale == 1.0
    assert all(b.update_scale in (None, 1.0) for preset in (cpu, cfg) for b in preset.baselines.values())


def test_missing_muse_folder_names_the_source_field_and_variable(monkeypatch, tokenizer):
    monkeypatch.delenv("HARMONIA_MUSE_BOOKS", raising=False)
    cfg = load_config(DemoConfig, demo_config_path("muse_books"))
    with pytest.raises(ConfigError, match=r"'muse_forget': key 'path' .*HARMONIA_MUSE_BOOKS are not set"):
        build_dataset(cfg.data, tokenizer=tokenizer)


def test_extends_merges_sections_and_rejects_cycles(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text(yaml.safe_dump({"extends": str(demo_config_path("demo")), "name": "child",
                                     "unlearn": {"train": {"steps": 3}}, "data": "pkg:configs/demo_data.yaml"}))
    cfg = load_config(DemoConfig, child)
    demo = load_config(DemoConfig, demo_config_path("demo"))
    assert cfg.name == "child" and cfg.unlearn.train.steps == 3
    assert cfg.unlearn.train.lr == demo.unlearn.train.lr  # the rest of the section is inherited
    loop = tmp_path / "loop.yaml"
    loop.write_text(yaml.safe_dump({"extends": "loop.yaml"}))
    with pytest.raises(ConfigError, match="extends itself"):
        load_config(DemoConfig, loop)


TOFU_QA_PER_AUTHOR = 20


def _expected(cfg: DemoConfig) -> Counter:
    """Plain records per (role, calibration) as the data config's limits (or TOFU author lists) say."""
    out: Counter = Counter()
    for src in cfg.data.sources:
        if src.limit is None:
            assert src.loader == "tofu" and src.authors, "CPU presets draw a fixed sample from every source"
        out[(src.role, src.calibration)] += src.limit or TOFU_QA_PER_AUTHOR * len(src.authors)
    return out


@pytest.mark.parametrize("name", CPU_PRESETS)
def test_data_build_gives_every_role_its_count(name, data_env, tmp_path, tokenizer):
    cfg = load_config(DemoConfig, demo_config_path(name))
    data_yaml = demo_config_path(name).with_name(f"{name}_data.yaml")
    out = tmp_path / "records.jsonl"
    result = runner.invoke(app, ["data", "build", str(data_yaml), "-o", str(out)])
    assert result.exit_code == 0, result.output
    records = read_records(out)
    plain = Counter((r.role, bool(r.metadata.get("calibration"))) for r in records if not r.prefill)
    assert plain == _expected(cfg)
    prefilled = Counter(r.role for r in records if r.prefill)
    assert set(prefilled) == set(load_data_config(data_yaml).prefill.roles)
    assert all(r.anchor_id for r in records if r.role == "forget" and not r.prefill)
    for src in cfg.data.sources:  # long questions were left out before the sample was drawn
        mine = [r for r in records if r.source == src.loader.replace("muse", "muse_books") and not r.prefill
                and r.role == src.role and bool(r.metadata.get("calibration")) == src.calibration]
        if src.max_tokens is not None:
            assert mine and all(sum(record_length(r, tokenizer).values()) <= src.max_tokens for r in mine)


@pytest.mark.parametrize("name", CPU_PRESETS)
def test_calibration_topics_are_disjoint_from_the_forget_scope(name, data_env, tokenizer):
    cfg = load_config(DemoConfig, demo_config_path(name))
    records = build_dataset(cfg.data, tokenizer=tokenizer)
    context = build_context(cfg.teacher, records)
    calibration = calibration_records(records, cfg.teacher, tokenizer, scope=context.scope)  # raises on a leak
    topics = {r.group for r in calibration}
    assert topics == {r.group for r in records if r.metadata.get("calibration")}  # every calibration entity
    assert len(topics) == 30  # the TOFU calibration authors 150-179
    assert not topics & {r.group for r in records if r.role in ("forget", "neighbor")}
