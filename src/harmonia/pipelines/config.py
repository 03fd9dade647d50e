"""The run configuration file: one YAML with model, data, train and method sections."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator

from harmonia.config import MethodConfig, ModelConfig, Section, TrainConfig
from harmonia.data.config import DataConfig, load_data_config
from harmonia.data.paths import resolve_path
from harmonia.evaluation.config import EvalConfig


def config_dir(info: ValidationInfo) -> Path | None:
    base = (info.context or {}).get("config_dir")
    return Path(base) if base else None


def coerce_data_config(value: object, info: ValidationInfo) -> object:
    """A data config given inline, or as the path of a data YAML (``pkg:`` = inside harmonia)."""
    if isinstance(value, str):
        path = resolve_path(value, config_dir(info))
        if not path.is_file():
            raise ValueError(f"data config not found: {path}")
        return load_data_config(path)
    if isinstance(value, dict):
        return DataConfig.model_validate(value).with_base_dir(config_dir(info))
    return value


class RunConfig(Section):
    """``data`` is an inline data config or the path of one (``pkg:`` = inside harmonia);
    ``data_file`` is a JSONL already built by ``harmonia data build``. Relative paths resolve
    against the config file's folder."""

    name: str = "run"
    model: ModelConfig = Field(default_factory=ModelConfig)
    data_file: Path | None = None
    data: DataConfig | None = None
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=1))
    method: MethodConfig = Field(default_factory=MethodConfig)
    evaluation: EvalConfig = Field(default_factory=EvalConfig)

    @field_validator("data_file")
    @classmethod
    def _data_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        path = resolve_path(value, config_dir(info))
        if not path.is_file():
            raise ValueError(f"file not found: {path}")
        return path

    _data = field_validator("data", mode="before")(coerce_data_config)
