"""The results file every evaluation writes and every report reads (``results.json``).

Aggregates sit beside per-example values, so a report can recompute or slice any number later.
Keys of ``metrics`` are ``"{metric}/{subset}"`` (e.g. ``"rougeL_recall/forget"``); keys of
``attacks`` are attack names (e.g. ``"prefill"``), each with a value per setting (``"k=5"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from harmonia.io import write_json_atomic


class MetricEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: float
    n_used: int
    per_example: list[float | None] = Field(default_factory=list)
    example_ids: list[str] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)


class AttackEntry(BaseModel):
    """Attack success rate per setting (e.g. prefill length k), with per-example outcomes."""

    model_config = ConfigDict(extra="forbid")

    success_rate: dict[str, float]
    per_example: dict[str, list[float]] = Field(default_factory=dict)
    example_ids: list[str] = Field(default_factory=list)
    generations: dict[str, list[str]] = Field(default_factory=dict)
    details: dict[str, Any] = Field(default_factory=dict)

    @property
    def worst(self) -> float:
        return max(self.success_rate.values(), default=0.0)


class Objectives(BaseModel):
    """The four objectives in [0, 1] (higher is better) and their harmonic mean."""

    model_config = ConfigDict(extra="forbid")

    forget_efficacy: float | None = None
    neighbour_retention: float | None = None
    utility: float | None = None
    attack_resistance: float | None = None
    combined: float | None = None


class EvalResults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    model: str
    metrics: dict[str, MetricEntry] = Field(default_factory=dict)
    attacks: dict[str, AttackEntry] = Field(default_factory=dict)
    objectives: Objectives = Field(default_factory=Objectives)
    generations: dict[str, list[str]] = Field(default_factory=dict)
    meta: dict[str, Any] = Field(default_factory=dict)

    def value(self, key: str) -> float | None:
        entry = self.metrics.get(key)
        return entry.value if entry is not None else None

    def save(self, path: str | Path) -> Path:
        return write_json_atomic(path, self.model_dump(mode="json"))

    @classmethod
    def load(cls, path: str | Path) -> EvalResults:
        from pydantic import ValidationError

        from harmonia.errors import DataError

        path = Path(path)
        if path.is_dir():
            path = path / "results.json"
        try:
            return cls.model_validate_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(path, "results file not found") from None
        except ValidationError as exc:
            first = exc.errors()[0]
            raise DataError(path, first["msg"], field=".".join(map(str, first["loc"]))) from None
