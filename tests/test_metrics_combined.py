"""Normalisation helpers and the harmonic-mean combined score."""

import pytest

from harmonia.errors import DataError
from harmonia.evaluation.metrics.combined import (
    COMBINED_COMPONENTS,
    combined_score,
    harmonic_mean,
    normalised_forgetting,
    normalised_retention,
    resistance_from_success_rate,
)


def test_harmonic_mean_by_hand():
    assert harmonic_mean([1.0, 0.5]) == pytest.approx(2 / (1 + 2))
    assert harmonic_mean([0.5] * 4) == pytest.approx(0.5)
    assert harmonic_mean([0.9, 0.0, 1.0]) == 0.0


def test_harmonic_mean_rejects_out_of_range_and_empty():
    with pytest.raises(DataError, match="record 1"):
        harmonic_mean([0.5, 1.5])
    with pytest.raises(DataError):
        harmonic_mean([])


def test_normalised_forgetting():
    assert normalised_forgetting(0.2, 0.8) == pytest.approx(0.75)
    assert normalised_forgetting(0.9, 0.8) == 0.0  # worse than before: clipped
    assert normalised_forgetting(0.25, 0.55, chance=0.25) == pytest.approx(1.0)  # down to chance
    with pytest.raises(DataError, match="nothing to forget"):
        normalised_forgetting(0.1, 0.0)


def test_normalised_retention():
    assert normalised_retention(0.6, 0.8) == pytest.approx(0.75)
    assert normalised_retention(0.5, 0.65, chance=0.25) == pytest.approx(0.25 / 0.4)
    assert normalised_retention(0.9, 0.8) == 1.0
    assert normalised_retention(0.1, 0.65, chance=0.25) == 0.0


def test_resistance():
    assert resistance_from_success_rate(0.125) == pytest.approx(0.875)
    with pytest.raises(DataError):
        resistance_from_success_rate(1.2)


def test_combined_score():
    r = combined_score(forget_efficacy=1.0, neighbour_retention=0.5, utility=1.0, attack_resistance=0.5)
    assert r.value == pytest.approx(4 / (1 + 2 + 1 + 2))
    assert r.per_example == [1.0, 0.5, 1.0, 0.5]
    assert list(r.details) == list(COMBINED_COMPONENTS)
    zero = combined_score(forget_efficacy=0.0, neighbour_retention=1.0, utility=1.0, attack_resistance=1.0)
    assert zero.value == 0.0
    with pytest.raises(DataError, match="utility"):
        combined_score(
            forget_efficacy=1.0, neighbour_retention=1.0, utility=float("nan"), attack_resistance=1.0
        )
