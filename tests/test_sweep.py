"""The learning-rate sweep: each point changes only the swept method's rate, a point at the
config's own rate is the demo's run, and the script runs end to end on a tiny random model."""

from __future__ import annotations

import json

import pytest

from harmonia.config import load_config
from harmonia.errors import ConfigError
from harmonia.pipelines.demo_config import DemoConfig, demo_config_path
from harmonia.pipelines.sweep import point_config, point_name

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
