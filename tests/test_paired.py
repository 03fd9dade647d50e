"""The paired bootstrap difference between two runs' per-example scores."""

from __future__ import annotations

import pytest

from harmonia.errors import HarmoniaError
from harmonia.evaluation.paired import paired_difference
from harmonia.evaluation.results import MetricEntry


def entry(values: list[float | None], ids: list[str] | None = None) -> MetricEntry:
    ids = ids or [f"q{i}" for i in range(len(values))]
    present = [v for v in values if v is not None]
    return MetricEntry(value=sum(present) / len(present), n_used=len(present), per_example=values, example_ids=ids)


def test_a_constant_shift_has_a_zero_width_interval():
    d = paired_difference(entry([0.1, 0.5, 0.9]), entry([0.3, 0.7, 1.1]))
    assert (d.mean, d.low, d.high, d.n) == (pytest.approx(0.2), pytest.approx(0.2), pytest.approx(0.2), 3)


def test_pairs_follow_example_ids_not_positions_and_skip_unscored_examples():
    a = entry([0.0, 1.0, 0.5, 0.2], ["x", "y", "z", "w"])
    b = entry([1.0, 0.0, None], ["y", "x", "z"])  # same scores as a on x and y, z unscored, w missing
    d = paired_difference(a, b)
    assert (d.mean, d.low, d.high, d.n) == (0.0, 0.0, 0.0, 2)


def test_the_interval_covers_the_mean_and_is_seeded():
    a = entry([0.5] * 20)
    b = entry([0.5 + (0.1 if i % 2 else -0.05) for i in range(20)])  # mean difference 0.025
    d = paired_difference(a, b)
    assert d.mean == pytest.approx(0.025)
    # resampled means lie between all -0.05 and all +0.1; the 95% interval is well inside that
    assert -0.05 < d.low < d.mean < d.high < 0.1
    assert paired_difference(a, b) == d  # seeded
    wider = paired_difference(a, b, confidence=0.99)
    assert wider.low <= d.low and wider.high >= d.high
    assert str(d).startswith("+0.025 (95% CI")


def test_runs_without_shared_scored_examples_are_an_error():
    with pytest.raises(HarmoniaError, match="share no scored example"):
        paired_difference(entry([0.1], ["a"]), entry([0.2], ["b"]))
    with pytest.raises(HarmoniaError, match="per-example values"):
        paired_difference(MetricEntry(value=0.1, n_used=1), entry([0.2]))


def test_cli_compare_prints_paired_differences_and_names_a_missing_metric(tmp_path):
    from typer.testing import CliRunner

    from harmonia.cli.main import app
    from harmonia.evaluation.results import EvalResults

    EvalResults(name="target", model="t", metrics={"recall/neighbor": entry([0.5, 0.7])}).save(tmp_path / "t.json")
    EvalResults(name="method", model="m", metrics={"recall/neighbor": entry([0.4, 0.6])}).save(tmp_path / "m.json")
    args = ["compare", str(tmp_path / "t.json"), str(tmp_path / "m.json")]
    result = CliRunner().invoke(app, [*args, "--paired", "recall/neighbor"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "recall/neighbor: method - target = -0.100 (95% CI -0.100 .. -0.100, n = 2)" in result.output
    result = CliRunner().invoke(app, [*args, "--paired", "recall/forget"], terminal_width=200)
    assert result.exit_code != 0
    assert "'recall/forget' is not in the results of target, method" in " ".join(result.output.split())
