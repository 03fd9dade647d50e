"""The run configuration file: one YAML with model, data, train, method (and later teacher, eval)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from harmonia.config import MethodConfig, ModelConfig, Section, TrainConfig


def resolve_against_config(value: Path | None, info: ValidationInfo) -> Path | None:
    """Relative paths in a config file mean 'relative to that file', not to the working directory."""
    if value is None or value.is_absolute():
        return value
    base = (info.context or {}).get("config_dir")
    return (Path(base) / value) if base else value


class RunConfig(Section):
    name: str = "run"
    model: ModelConfig = Field(default_factory=ModelConfig)
    data_file: Path | None = None
    data: dict[str, Any] | None = None
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=1))
    method: MethodConfig = Field(default_factory=MethodConfig)

    @field_validator("data_file")
    @classmethod
    def _data_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        path = resolve_against_config(value, info)
        if path is not None and not path.is_file():
            raise ValueError(f"file not found: {path}")
        return path
