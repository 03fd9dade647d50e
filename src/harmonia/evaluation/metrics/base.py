"""The metric result type, the metric registry, and input checks shared by every metric.

Metrics are pure: they take strings and numbers (what the model-running code produced) and
return a :class:`MetricResult`. Keeping them free of models makes each one testable on
hand-computed inputs and lets reports recompute aggregates from stored per-example values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from harmonia.errors import ConfigError, DataError


@dataclass(frozen=True)
class MetricResult:
    """One metric over a set of examples.

    ``per_example`` keeps one entry per input example, ``None`` where the metric is undefined
    for it (e.g. an empty gold answer); ``value`` aggregates the defined entries only and
    ``n_used`` says how many that was, so a report can show "0.41 (38/40)".
    """

    name: str
    value: float
    per_example: list[float | None]
    n_used: int
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def n_total(self) -> int:
        return len(self.per_example)

    def as_dict(self) -> dict[str, Any]:
        """Plain-JSON form for results files."""
        return asdict(self)


MetricFn = Callable[..., MetricResult]
_REGISTRY: dict[str, MetricFn] = {}


def register_metric(name: str) -> Callable[[MetricFn], MetricFn]:
    """Decorator: make a metric function available to configs under ``name``.

    A name registered twice is a programming error (two modules would silently shadow each
    other in configs), so it raises at import time.
    """

    def decorator(fn: MetricFn) -> MetricFn:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"metric '{name}' is already registered by {_REGISTRY[name].__module__}")
        _REGISTRY[name] = fn
        return fn

    return decorator


def get_metric(name: str) -> MetricFn:
    """The metric function registered under ``name``; a config naming an unknown one fails here."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown metric '{name}'; known metrics: {', '.join(list_metrics())}") from None


def list_metrics() -> list[str]:
    """Names of all registered metrics, sorted."""
    return sorted(_REGISTRY)


def mean_result(
    name: str, per_example: Sequence[float | None], details: dict[str, Any] | None = None
) -> MetricResult:
    """Build a result whose value is the mean of the defined (non-None) per-example values.

    Having no defined value at all raises: a silent NaN would propagate into the combined
    score and the reports.
    """
    used = [v for v in per_example if v is not None]
    if not used:
        raise DataError(None, f"metric '{name}': no example has a defined value ({len(per_example)} given)")
    return MetricResult(
        name=name,
        value=float(math.fsum(used) / len(used)),
        per_example=[None if v is None else float(v) for v in per_example],
        n_used=len(used),
        details=dict(details or {}),
    )


def check_same_length(**sequences: Sequence[Any]) -> int:
    """Raise unless all named sequences have one common length; return it."""
    lengths = {k: len(v) for k, v in sequences.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{k}={n}" for k, n in lengths.items())
        first = next(iter(lengths))
        raise DataError(None, f"inputs must have the same length, got {shown}", field=first)
    return next(iter(lengths.values()), 0)


def check_finite(value: float, *, field: str, record: int | str | None = None) -> float:
    """Return ``value`` as float; NaN or inf raises naming the record and field."""
    out = float(value)
    if not math.isfinite(out):
        raise DataError(None, f"value must be finite, got {out}", record=record, field=field)
    return out


def check_unit_interval(value: float, *, field: str, record: int | str | None = None) -> float:
    """Return ``value`` as float; anything outside [0, 1] (or non-finite) raises."""
    out = check_finite(value, field=field, record=record)
    if not 0.0 <= out <= 1.0:
        raise DataError(None, f"value must lie in [0, 1], got {out}", record=record, field=field)
    return out
