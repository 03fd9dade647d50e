"""scripts/relearn_curve.py: relearning entries averaged over splits and set beside the reference's."""

from __future__ import annotations

import pytest

from harmonia.cli.comparison import parse_rates, parse_seeds
from harmonia.errors import ConfigError
from harmonia.evaluation.results import AttackEntry


def entry(steps: int, before: float, after: float, success: float, loss: float) -> AttackEntry:
    return AttackEntry(success_rate={"steps=0": 0.0, f"steps={steps}": success},
                       details={"steps": steps, "mean_recall": {"steps=0": before, f"steps={steps}": after},
                                "final_loss": loss})


def test_splits_are_averaged_reading_each_entrys_own_steps(script):
    module = script("relearn_curve")
    point = module.summarise([entry(10, 0.1, 0.5, 0.25, 0.2), entry(5, 0.3, 0.7, 0.35, 0.4)])
    assert point == pytest.approx(module.Point(before=0.2, after=0.6, success_after=0.3, final_loss=0.3))
    with pytest.raises(ValueError, match="no relearning entries"):
        module.summarise([])


def test_the_table_sets_each_rate_beside_the_reference_at_that_rate(script):
    module = script("relearn_curve")
    Point = module.Point
    points = {
        "reference": {1e-5: Point(0.39, 0.38, 0.25, 1.2), 1e-4: Point(0.39, 0.42, 0.25, 1.1)},
        "harmonia": {1e-5: Point(0.05, 0.18, 0.05, 0.9), 1e-4: Point(0.05, 0.45, 0.25, 0.17),
                     3e-5: Point(0.05, 0.3, 0.1, 0.5)},
    }
    rows = module.curve_table(points, probability={"harmonia": 0.4567}).splitlines()[2:]
    assert rows[0] == "| reference | 1e-05 | 0.390 | 0.380 | +0.000 | 0.250 | 1.200 | - |"
    assert rows[2] == "| harmonia | 1e-05 | 0.050 | 0.180 | -0.200 | 0.050 | 0.900 | 0.457 |"
    assert rows[3] == "| harmonia | 0.0001 | 0.050 | 0.450 | +0.030 | 0.250 | 0.170 | 0.457 |"
    assert rows[4] == "| harmonia | 3e-05 | 0.050 | 0.300 | - | 0.100 | 0.500 | 0.457 |"  # the reference ran no 3e-5
    assert "| - | 0.250 | 1.100 | - |" in module.curve_table(points, reference=None).splitlines()[3]


def test_rates_and_splits_must_be_numbers():
    # the parsers the comparison scripts share (sweep_lr's --lrs, sweep_seeds' --seeds)
    assert parse_rates("1e-5, 3e-5,") == [1e-5, 3e-5]
    with pytest.raises(ConfigError, match="--lrs 'fast'"):
        parse_rates("fast")
    with pytest.raises(ConfigError, match="at least one"):
        parse_rates(",")
    assert parse_seeds("0,1", "--splits") == [0, 1]
    with pytest.raises(ConfigError, match=r"--splits '1\.5'"):   # not truncated to split 1
        parse_seeds("1.5", "--splits")
    with pytest.raises(ConfigError, match="listed twice"):
        parse_seeds("0,0", "--splits")
    with pytest.raises(ConfigError, match="at least one"):
        parse_seeds("", "--splits")
