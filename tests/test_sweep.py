"""The sweeps: a learning-rate point changes only the swept method's rate (at the config's own rate it
is the demo's run); a seed point only its setting and seed, never the target or the evaluation; the
seed table's statistics on known values; both scripts run end to end on a tiny random model."""

from __future__ import annotations

import json

import pytest

from harmonia.config import load_config
from harmonia.errors import ConfigError
from harmonia.evaluation.results import AttackEntry, EvalResults, Objectives
from harmonia.pipelines.demo_config import DemoConfig, demo_config_path
from harmonia.pipelines.sweep import Setting, point_config, point_name, seed_config
from harmonia.reports.headline import headline_columns
from harmonia.reports.seeds import SeedStats, seed_stats, seed_table

FAST = demo_config_path("demo_fast")


def test_a_baseline_point_sets_only_that_baselines_rate():
    base = load_config(DemoConfig, FAST, [])
    cfg, main = point_config(FAST, "idkdpo", 2e-4)
    assert not main
    swept = cfg.method_config("idkdpo")
    assert swept.lr == 2e-4 and swept.name == "idkdpo"
    assert swept.params == base.method_config("idkdpo").params  # demo.yaml's retain roles kept
    assert cfg.unlearn == base.unlearn
    assert {k: v for k, v in cfg.baselines.items() if k != "idkdpo"} == \
        {k: v for k, v in base.baselines.items() if k != "idkdpo"}


def test_the_main_method_point_sets_the_unlearning_rate():
    base = load_config(DemoConfig, FAST, [])
    cfg, main = point_config(FAST, base.unlearn.method.name, 5e-4)
    assert main and cfg.unlearn.train.lr == 5e-4
    assert cfg.baselines == base.baselines


def test_a_point_at_the_configs_own_rate_is_the_demo_config():
    base = load_config(DemoConfig, FAST, [])
    npo_rate = base.method_config("npo").lr
    assert npo_rate is not None
    assert point_config(FAST, "npo", npo_rate)[0] == base
    assert point_config(FAST, "harmonia", base.unlearn.train.lr)[0] == base


def test_bad_rates_are_named(script):
    with pytest.raises(ConfigError, match="'npo'"):
        point_config(FAST, "npo", 0.0)
    sweep = script("sweep_lr")
    assert sweep.parse_rates("2e-4, 3.5e-4") == [2e-4, 3.5e-4]
    with pytest.raises(ConfigError, match="--lrs 'fast'"):
        sweep.parse_rates("fast")


def test_script_runs_end_to_end_on_a_tiny_model(script, tiny_demo, tmp_path):
    out, runs = tmp_path / "sweep.md", tmp_path / "runs"
    text = script("sweep_lr").main(["--method", "npo", "--lrs", "1e-4,4e-4", "--eval-limit", "2", "--output-dir",
                                    str(runs), "-o", str(out), *tiny_demo, "unlearn.train.steps=1"])
    assert out.read_text() == text
    names = [point_name("npo", 1e-4), point_name("npo", 4e-4)]
    for name in ("target", *names):
        assert f"| {name} |" in text
    # each point trained at its own rate (the logged rate is the schedule's: the same factor of both)
    rates = [next(json.loads(line)["lr"] for line in (runs / n / "train_log.jsonl").read_text().splitlines()
                  if '"step"' in line) for n in names]
    assert rates[1] == pytest.approx(4 * rates[0])


# -- seed sweeps ------------------------------------------------------------------------------------

def test_a_setting_is_a_name_and_overrides():
    assert Setting.parse("alpha2: teacher.alpha=2.0 'unlearn.records.prefilled.forget=80'") == \
        Setting("alpha2", ("teacher.alpha=2.0", "unlearn.records.prefilled.forget=80"))
    assert Setting.parse(" base ") == Setting("base")
    with pytest.raises(ConfigError, match=r"'alpha 2: teacher\.alpha=2'"):
        Setting.parse("alpha 2: teacher.alpha=2")
    with pytest.raises(ConfigError, match=r"setting 'a2': 'teacher\.alpha' is not"):
        Setting.parse("a2: teacher.alpha")


def test_a_seed_point_changes_the_setting_and_the_seed_only():
    base = load_config(DemoConfig, FAST, [])
    cfg = seed_config(FAST, Setting("a2", ("teacher.alpha=2.0",)), 3)
    assert cfg.unlearn.train.seed == 3 and cfg.teacher.alpha == 2.0
    assert cfg.model_copy(update={"unlearn": base.unlearn, "teacher": base.teacher}) == base
    assert seed_config(FAST, Setting("base"), base.unlearn.train.seed) == base


@pytest.mark.parametrize(("override", "field"), [("target.lr=5e-4", "target"),
                                                 ("teacher.refusal=No.", "teacher.refusal"),
                                                 ("evaluation.generation.max_new_tokens=8", "evaluation")])
def test_a_setting_that_changes_the_target_or_the_evaluation_is_refused(override, field):
    with pytest.raises(ConfigError, match=f"setting 'x' changes {field}"):
        seed_config(FAST, Setting("x", (override,)), 0)


def _combined(value: float, prefill: float) -> EvalResults:
    return EvalResults(name="r", model="m", objectives=Objectives(combined=value),
                       attacks={"prefill": AttackEntry(success_rate={"k=2": prefill, "k=5": prefill / 2})})


def test_seed_stats_take_the_worst_seed_in_each_columns_direction():
    runs = [_combined(0.8, 0.1), _combined(0.6, 0.3), _combined(0.7, 0.2)]
    columns = {c.key: c for c in headline_columns(runs)}
    combined = seed_stats(columns["combined"], runs)
    assert combined == SeedStats(3, pytest.approx(0.7), pytest.approx(0.1), 0.6)
    prefill = seed_stats(columns["prefill_k2"], runs)
    assert prefill is not None and prefill.worst == 0.3 and prefill.mean == pytest.approx(0.2)
    assert seed_stats(columns["forget_rougeL"], runs) is None
    assert SeedStats(1, 0.5, None, 0.5).cell() == "0.500"
    table = seed_table({"a": runs, "b": runs[:1]})
    row_a = next(line for line in table.splitlines() if line.startswith("| a |"))
    assert "| 3 |" in row_a and "0.700 ± 0.100 (0.600)" in row_a and "0.200 ± 0.100 (0.300)" in row_a
    assert "| b | 1 |" in table and "0.800" in table


def test_seed_sweep_script_runs_end_to_end_on_a_tiny_model(script, tiny_demo, tmp_path):
    runs = tmp_path / "runs"
    sweep = script("sweep_seeds")
    with pytest.raises(ConfigError, match="--seeds '0,0'"):
        sweep.parse_seeds("0,0")
    text = sweep.main(["--seeds", "0,1", "--setting", "base", "--setting", "a2: teacher.alpha=2.0",
                       "--baselines", "npo", "--eval-limit", "2", "--output-dir", str(runs),
                       *tiny_demo, "unlearn.train.steps=1"])
    for group in ("target", "base", "a2", "npo"):
        assert f"| {group} |" in text
    for name in ("base-seed0", "base-seed1", "a2-seed0", "npo-seed1"):
        assert f"| {name} |" in text
    assert "| difference | seed 0 | seed 1 | over the seeds |" in text
    assert "| base - npo |" in text and "| a2 - npo |" in text
    weights = {n: (runs / n / "model" / "model.safetensors").read_bytes() for n in ("base-seed0", "base-seed1")}
    assert weights["base-seed0"] != weights["base-seed1"]  # the seed reached the training
    with pytest.raises(ConfigError, match="unknown baseline label"):
        sweep.main(["--baselines", "nope", *tiny_demo])
