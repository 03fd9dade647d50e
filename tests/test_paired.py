"""The paired bootstrap difference between two runs' per-example scores."""

from __future__ import annotations

import os

import pytest

from harmonia.errors import HarmoniaError
from harmonia.evaluation.config import ObjectiveSettings
from harmonia.evaluation.objectives import compute_objectives
from harmonia.evaluation.paired import paired_difference, paired_objectives, paired_objectives_over_seeds
from harmonia.evaluation.results import AttackEntry, EvalResults, MetricEntry


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


FORGET = [f"f{i}" for i in range(4)]
OTHERS = {"neighbor": [f"n{i}" for i in range(4)], "retain": [f"r{i}" for i in range(4)]}
SETTINGS = ObjectiveSettings(utility_metric="rougeL_recall/retain")
TARGET = EvalResults(name="target", model="t", metrics={
    "rougeL_recall/forget": entry([0.5] * 4, FORGET), "rougeL_recall/neighbor": entry([0.8] * 4, OTHERS["neighbor"]),
    "rougeL_recall/retain": entry([0.5] * 4, OTHERS["retain"])})


def scored_run(name: str, *, forget: list[float], attack: list[float], neighbor: list[float] | None = None,
               refused: list[float] | None = None, target: EvalResults = TARGET) -> EvalResults:
    """A run scored as the harness scores one: metrics, the prefill attack, objectives and their explanation."""
    metrics = {"rougeL_recall/forget": entry(forget, FORGET),
               "rougeL_recall/neighbor": entry(neighbor or [0.8] * 4, OTHERS["neighbor"]),
               "over_refusal/neighbor": entry(refused or [0.0] * 4, OTHERS["neighbor"]),
               "rougeL_recall/retain": entry([0.4] * 4, OTHERS["retain"])}
    attacks = {"prefill": AttackEntry(success_rate={"k=2": sum(attack) / len(attack)}, per_example={"k=2": attack},
                                      example_ids=FORGET)}
    objectives, explain = compute_objectives(metrics, attacks, settings=SETTINGS, target=target)
    meta = {"config": {"objectives": SETTINGS.model_dump(mode="json"), "mcq": {"chance": 0.25}},
            "objectives": explain, "target": target.name}
    return EvalResults(name=name, model=name, metrics=metrics, attacks=attacks, objectives=objectives, meta=meta)


def test_objectives_of_runs_that_differ_on_every_question_alike_have_exact_differences():
    a = scored_run("a", forget=[0.25] * 4, attack=[0.0] * 4)   # forget efficacy 1 - 0.25/0.5 = 0.5
    b = scored_run("b", forget=[0.0] * 4, attack=[0.0] * 4)    # 1.0
    diffs = paired_objectives(a, b)
    # neighbour retention 1 (0.8 / 0.8, no refusal), utility 0.8 (0.4 / 0.5), resistance 1
    combined_a, combined_b = 4 / (1 / 0.5 + 1 + 1 / 0.8 + 1), 4 / (1 + 1 + 1 / 0.8 + 1)
    assert a.objectives.combined == pytest.approx(combined_a)
    for key, expected in (("forget_efficacy", 0.5), ("combined", combined_b - combined_a),
                          ("neighbour_retention", 0.0), ("utility", 0.0), ("attack_resistance", 0.0)):
        d = diffs[key]
        assert (d.mean, d.low, d.high) == (pytest.approx(expected), pytest.approx(expected), pytest.approx(expected))
    assert diffs["combined"].n == 12  # the distinct questions resampled


def test_a_question_resampled_for_one_metric_is_resampled_for_the_attack_on_it():
    # b leaks exactly the forget questions it still recalls: in every resample the two move together,
    # so the combined score (resistance and efficacy both fall) can only drop when either does
    a = scored_run("a", forget=[0.0] * 4, attack=[0.0] * 4)
    b = scored_run("b", forget=[0.5, 0.0, 0.0, 0.0], attack=[1.0, 0.0, 0.0, 0.0])
    diffs = paired_objectives(a, b, resamples=500)
    assert diffs["forget_efficacy"].high == pytest.approx(0.0) and diffs["attack_resistance"].high == 0.0
    assert diffs["forget_efficacy"].low < -0.25 and diffs["attack_resistance"].low < -0.25
    assert diffs["combined"].mean < 0 and diffs["combined"].high == pytest.approx(0.0)
    assert paired_objectives(a, b, resamples=500) == diffs  # seeded


def test_runs_scored_against_different_targets_or_without_per_example_values_are_refused():
    other = TARGET.model_copy(update={"metrics": {**TARGET.metrics, "rougeL_recall/forget": entry([0.9] * 4, FORGET)}})
    a = scored_run("a", forget=[0.25] * 4, attack=[0.0] * 4)
    with pytest.raises(HarmoniaError, match="same target"):
        paired_objectives(a, scored_run("b", forget=[0.0] * 4, attack=[0.0] * 4, target=other))
    bare = a.model_copy(update={"metrics": {**a.metrics, "rougeL_recall/retain": MetricEntry(value=0.4, n_used=4)}})
    with pytest.raises(HarmoniaError, match="rougeL_recall/retain"):
        paired_objectives(bare, bare)


def test_cli_compare_prints_the_combined_score_difference(tmp_path):
    from typer.testing import CliRunner

    from harmonia.cli.main import app

    scored_run("a", forget=[0.25] * 4, attack=[0.0] * 4).save(tmp_path / "a.json")
    scored_run("b", forget=[0.0] * 4, attack=[0.0] * 4).save(tmp_path / "b.json")
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                                      "--paired", "forget_efficacy"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "forget_efficacy: b - a = +0.500 (95% CI +0.500 .. +0.500, n = 12)" in result.output


def test_the_interval_does_not_depend_on_the_processs_hash_seed(tmp_path):
    # the pools draw from one seeded stream in the order they are first used: that order must be
    # fixed, not a set's (string hashing differs between processes)
    import subprocess
    import sys

    scored_run("a", forget=[0.0, 0.5, 0.25, 0.0], attack=[0.0, 1.0, 0.0, 0.0],
               neighbor=[0.8, 0.4, 0.6, 0.8], refused=[0.0, 1.0, 0.0, 0.0]).save(tmp_path / "a.json")
    scored_run("b", forget=[0.25, 0.0, 0.0, 0.5], attack=[1.0, 0.0, 0.0, 1.0],
               neighbor=[0.7, 0.8, 0.2, 0.8]).save(tmp_path / "b.json")
    code = ("import sys; from harmonia.evaluation.paired import paired_objectives; "
            "from harmonia.evaluation.results import EvalResults as R; "
            "print(paired_objectives(R.load(sys.argv[1]), R.load(sys.argv[2]), resamples=200))")
    outputs = {subprocess.run([sys.executable, "-c", code, str(tmp_path / "a.json"), str(tmp_path / "b.json")],
                              capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": h}
                              ).stdout for h in ("1", "2", "3")}
    assert len(outputs) == 1


def test_over_seeds_the_mean_of_the_seeds_differences_and_their_spread_make_the_interval():
    a = scored_run("a", forget=[0.25] * 4, attack=[0.0] * 4)   # forget efficacy 0.5
    b = scored_run("b", forget=[0.0] * 4, attack=[0.0] * 4)    # 1.0
    c = scored_run("c", forget=[0.125] * 4, attack=[0.0] * 4)  # 0.75
    # seed 0: +0.5, seed 1: +0.25 on every question; two seeds drawn with replacement average to
    # 0.5, 0.375 or 0.25, the extremes a quarter of the time each
    pooled = paired_objectives_over_seeds([(a, b), (a, c)], resamples=4000)["forget_efficacy"]
    assert (pooled.mean, pooled.low, pooled.high, pooled.pairs) == (pytest.approx(0.375), pytest.approx(0.25),
                                                                    pytest.approx(0.5), 2)
    assert str(pooled) == "+0.375 (95% CI +0.250 .. +0.500, n = 12, 2 seeds)"
    # seeds that disagree: each seed's own interval excludes 0, the pooled one spans it
    per_seed = [paired_objectives(a, b)["forget_efficacy"], paired_objectives(b, a)["forget_efficacy"]]
    assert per_seed[0].low > 0 and per_seed[1].high < 0
    split = paired_objectives_over_seeds([(a, b), (b, a)], resamples=4000)["forget_efficacy"]
    assert split.mean == pytest.approx(0.0) and split.low == pytest.approx(-0.5) and split.high == pytest.approx(0.5)


def test_over_seeds_identical_seeds_give_one_seeds_interval():
    a = scored_run("a", forget=[0.0, 0.5, 0.25, 0.0], attack=[0.0, 1.0, 0.0, 0.0])
    b = scored_run("b", forget=[0.25, 0.0, 0.0, 0.5], attack=[1.0, 0.0, 0.0, 1.0])
    one = paired_objectives(a, b, resamples=300)
    three = paired_objectives_over_seeds([(a, b)] * 3, resamples=300)
    assert three.keys() == one.keys()
    for key, d in one.items():
        # the same resamples of the questions; any draw of three equal seeds averages to the seed itself
        assert (three[key].mean, three[key].low, three[key].high) == (
            pytest.approx(d.mean), pytest.approx(d.low), pytest.approx(d.high))
        assert (three[key].n, three[key].pairs, d.pairs) == (d.n, 3, 1)


def test_over_seeds_every_run_must_share_the_target():
    other = TARGET.model_copy(update={"metrics": {**TARGET.metrics, "rougeL_recall/forget": entry([0.9] * 4, FORGET)}})
    a = scored_run("a", forget=[0.25] * 4, attack=[0.0] * 4)
    b = scored_run("b", forget=[0.0] * 4, attack=[0.0] * 4)
    elsewhere = scored_run("c", forget=[0.0] * 4, attack=[0.0] * 4, target=other)
    with pytest.raises(HarmoniaError, match="'a' and 'c' were not scored against the same target"):
        paired_objectives_over_seeds([(a, b), (a, elsewhere)])
    with pytest.raises(HarmoniaError, match="no pairs"):
        paired_objectives_over_seeds([])


def test_the_seed_table_gives_each_seed_and_the_seeds_together():
    from harmonia.reports.seeds import paired_seed_table

    a = scored_run("a", forget=[0.25] * 4, attack=[0.0] * 4)   # forget efficacy 0.5
    b = scored_run("b", forget=[0.0] * 4, attack=[0.0] * 4)    # 1.0
    c = scored_run("c", forget=[0.125] * 4, attack=[0.0] * 4)  # 0.75
    table = paired_seed_table({"base": [b, c], "npo": [a, a]}, ["base"], ["npo"], [3, 7], objective="forget_efficacy")
    assert table.splitlines()[0] == "| difference | seed 3 | seed 7 | over the seeds |"
    assert table.splitlines()[2] == ("| base - npo | +0.500 (+0.500 .. +0.500) | +0.250 (+0.250 .. +0.250) "
                                     "| +0.375 (+0.250 .. +0.500) |")
