"""Run configuration: YAML files validated by pydantic, with ``key.sub=value`` overrides.

Every section forbids unknown keys, so a typo is an error naming the key and the file instead
of a silently ignored setting.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harmonia.data.paths import resolve_path
from harmonia.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(Section):
    spec: str = "smollm2-135m-instruct"
    dtype: Literal["float32", "bfloat16"] = "float32"
    trust_remote_code: bool = False


class LoraConfig(Section):
    r: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | str = "all-linear"


class TrainConfig(Section):
    """Engine settings shared by every method (fine-tuning and unlearning alike)."""

    keyed_when_set: ClassVar[tuple[str, ...]] = ("attention", "update_scale")
    """Added after cached targets keyed on this section existed (see ``pipelines.fingerprint``)."""

    output_dir: Path | None = None
    seed: int = 0
    steps: int | None = Field(None, gt=0)
    epochs: float | None = Field(None, gt=0)
    batch_size: int = Field(8, gt=0, description="global batch: records per optimiser step, all processes")
    micro_batch_size: int = Field(8, gt=0, description="records per forward pass on one process")
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    scheduler: Literal["constant", "linear", "cosine"] = "linear"
    max_grad_norm: float | None = 1.0
    max_length: int = Field(256, gt=8)
    bf16: bool = False
    lora: LoraConfig | None = None
    train_top_layers: int | None = Field(None, gt=0, description="train only the last N decoder layers")
    attention: str | None = Field(
        None, description="attention kernel while training (transformers' attn_implementation: eager, sdpa, "
        "flash_attention_2, ...); None keeps the model's. On this CPU eager trains faster than sdpa (docs/demo.md)"
    )
    mix: dict[str, float] = Field(default_factory=dict,
                                  description="records per batch per role, as weights; empty = the method's default")
    update_scale: float = Field(
        1.0, gt=0, le=1, description="keep this fraction of the update: the saved weights are start + "
        "update_scale x (trained - start) (WiSE-FT interpolation, training/interpolation.py); 1 = as trained"
    )
    checkpoint_every: int = Field(0, ge=0, description="0 = no intermediate checkpoints")
    keep_checkpoints: int = Field(1, gt=0)
    save: Literal["merged", "adapter", "none"] = "merged"
    log_every: int = Field(1, gt=0)
    progress: bool = True

    @model_validator(mode="after")
    def _duration(self) -> TrainConfig:
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("set exactly one of 'steps' and 'epochs'")
        if self.batch_size % self.micro_batch_size:
            raise ValueError(f"batch_size {self.batch_size} is not a multiple of micro_batch_size "
                             f"{self.micro_batch_size}")
        return self


class MethodConfig(Section):
    name: str = "sft"
    params: dict[str, Any] = Field(default_factory=dict)


def _format_loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "<root>"


def _override_of(loc: tuple[Any, ...], overrides: Sequence[str]) -> str | None:
    """The last override that set the key at ``loc`` or a section around it or inside it."""
    key = [str(p) for p in loc]
    for text in reversed(overrides):
        path = parse_override(text)[0]
        if key[: len(path)] == path or path[: len(key)] == key:
            return text
    return None


def validation_message(exc: ValidationError, source: str, overrides: Sequence[str] = ()) -> str:
    """One line per problem, naming the key; a key set on the command line names the override too
    (the file named in the first line does not contain it)."""
    lines = [f"{source}: invalid configuration"]
    for err in exc.errors():
        key = _format_loc(err["loc"])
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        override = _override_of(err["loc"], overrides)
        where = f" (set by the override '{override}')" if override else ""
        lines.append(f"  key '{key}': {msg}{where}")
    return "\n".join(lines)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.lr=3e-4`` -> (["train", "lr"], 0.0003); values are parsed as YAML scalars."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key.sub=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{text}': value is not valid YAML: {exc}") from exc
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override '{text}': '{part}' is not a section")
            node = child
        node[path[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data


EXTENDS_KEY = "extends"


def read_config_tree(path: str | Path, _seen: frozenset[Path] = frozenset()) -> dict[str, Any]:
    """A YAML config merged over the config its ``extends`` key names (a path or ``pkg:...``).

    The file's own keys win; sections merge key by key, lists are replaced whole. This is how a
    preset states only how it differs from the demo, so both keep running the same pipeline.
    """
    path = Path(path)
    data = read_yaml(path)
    parent = data.pop(EXTENDS_KEY, None)
    if parent is None:
        return data
    parent_path = resolve_path(str(parent), path.resolve().parent)
    if parent_path.resolve() in _seen | {path.resolve()}:
        raise ConfigError(f"{path}: key '{EXTENDS_KEY}': {parent_path} extends itself")
    return _deep_merge(read_config_tree(parent_path, _seen | {path.resolve()}), data)


def load_config(model: type[M], path: str | Path | None, overrides: list[str] | None = None,
                *, base: dict[str, Any] | None = None) -> M:
    """Read YAML (optional, with its ``extends`` chain), apply overrides, validate with ``model``;
    errors name file and key.

    Relative paths inside the file resolve against the file's folder (via the validation
    context key ``config_dir``), so a config works from any working directory; paths inherited
    through ``extends`` resolve against the extending file's folder too.
    """
    data: dict[str, Any] = dict(base or {})
    source = str(path) if path is not None else "<defaults>"
    if path is not None:
        data = _deep_merge(data, read_config_tree(path))
    data = apply_overrides(data, overrides or [])
    config_dir = Path(path).resolve().parent if path is not None else Path.cwd()
    try:
        return model.model_validate(data, context={"config_dir": config_dir})
    except ValidationError as exc:
        raise ConfigError(validation_message(exc, source, overrides or [])) from None


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
