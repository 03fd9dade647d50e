"""Registry and MetricResult behaviour shared by all metrics."""

import json

import pytest

from harmonia.errors import ConfigError, DataError
from harmonia.evaluation.metrics import base, get_metric, list_metrics
from harmonia.evaluation.metrics.base import MetricResult, mean_result, register_metric

EXPECTED = {
    "rougeL_recall",
    "rougeL_f1",
    "refusal_rate",
    "over_refusal",
    "mcq_acc",
    "mcq_acc_norm",
    "answer_probability",
    "probability_with_options",
    "truth_ratio",
    "mia_loss",
    "mia_zlib",
    "mia_min_k",
    "mia_min_k_plus_plus",
    "ngram_entropy",
    "perplexity",
    "combined_score",
}


def test_all_metrics_are_registered_by_importing_the_package():
    assert set(list_metrics()) >= EXPECTED
    assert list_metrics() == sorted(list_metrics())


def test_get_metric_returns_the_function_and_rejects_unknown_names():
    from harmonia.evaluation.metrics.rouge import rouge_l_recall

    assert get_metric("rougeL_recall") is rouge_l_recall
    with pytest.raises(ConfigError, match=r"unknown metric 'nope'.*rougeL_recall"):
        get_metric("nope")


def test_register_twice_under_one_name_raises(monkeypatch):
    monkeypatch.setattr(base, "_REGISTRY", {})

    @register_metric("x")
    def first() -> MetricResult:
        return mean_result("x", [1.0])

    with pytest.raises(ValueError, match="already registered"):

        @register_metric("x")
        def second() -> MetricResult:
            return mean_result("x", [0.0])

    assert base.get_metric("x") is first


def test_mean_result_ignores_none_and_counts_used():
    r = mean_result("m", [1.0, None, 0.5])
    assert r.value == pytest.approx(0.75)
    assert (r.n_used, r.n_total) == (2, 3)
    assert r.per_example == [1.0, None, 0.5]
    assert json.loads(json.dumps(r.as_dict()))["n_used"] == 2


def test_mean_result_with_no_defined_value_raises():
    with pytest.raises(DataError, match="no example has a defined value"):
        mean_result("m", [None, None])


def test_metric_result_is_frozen():
    r = mean_result("m", [1.0])
    with pytest.raises(AttributeError):
        r.value = 2.0  # type: ignore[misc]
