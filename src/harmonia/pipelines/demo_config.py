"""Configuration of the end-to-end demo (``harmonia demo``): one YAML drives every stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from harmonia.config import MethodConfig, ModelConfig, Section, TrainConfig
from harmonia.data.config import DataConfig
from harmonia.data.paths import resolve_path
from harmonia.data.schema import Role
from harmonia.errors import ConfigError
from harmonia.evaluation.config import EvalConfig
from harmonia.pipelines.config import coerce_data_config
from harmonia.teacher.config import TeacherConfig

PRESETS_DIR = "pkg:configs"
# the profile that meets the demo's targets in the least time (docs/demo.md); `demo` is the 60-step one
DEFAULT_DEMO_CONFIG = f"{PRESETS_DIR}/demo_fast.yaml"


class SelectionConfig(Section):
    """How many records of each kind a stage uses (a seeded sample; ``null`` = all)."""

    plain: dict[str, int | None] = Field(default_factory=dict, description="non-prefilled records per role")
    prefilled: dict[str, int | None] = Field(default_factory=dict, description="prefilled records per role")
    calibration: bool = Field(False, description="include the teacher-calibration entities' records")
    seed: int = 0


class UnlearnStage(Section):
    method: MethodConfig = Field(default_factory=lambda: MethodConfig(name="harmonia"))
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(steps=30))
    records: SelectionConfig = Field(default_factory=SelectionConfig)
    teacher_report_records: SelectionConfig = Field(default_factory=SelectionConfig)


class BaselineConfig(MethodConfig):
    """A baseline's method and params, and optionally its own learning rate and update scale. Steps,
    batch and records stay the unlearning stage's: the same budget, each method at a rate (and
    interpolation with the target) it does best at (a rate tuned for one loss can wreck another:
    docs/demo.md)."""

    lr: float | None = Field(None, gt=0, description="learning rate of this baseline (default: unlearn.train.lr)")
    update_scale: float | None = Field(None, gt=0, le=1, description="fraction of the update this baseline keeps "
                                       "(default: unlearn.train.update_scale; see TrainConfig)")
    keyed_when_set: ClassVar[tuple[str, ...]] = ("lr", "update_scale")
    """Added after cached runs keyed on this section existed (see ``pipelines.fingerprint``)."""


class DemoConfig(Section):
    """Every stage of the demo. Baselines share the unlearning stage's train settings and records,
    so all methods get the same step budget; a baseline entry sets its method params and may set
    its own learning rate."""

    name: str = "tofu-demo"
    output_dir: Path = Path("runs/demo")
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig
    eval_data: DataConfig | None = Field(None, description="extra evaluation-only records (MMLU MCQ)")
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    target: TrainConfig
    unlearn: UnlearnStage = Field(default_factory=UnlearnStage)
    baselines: dict[str, BaselineConfig] = Field(default_factory=dict)
    run_baselines: list[str] = Field(default_factory=lambda: ["npo", "simnpo", "duet"])
    in_context_row: bool = Field(True, description="also evaluate the instructed target (no training)")
    evaluation: EvalConfig = Field(default_factory=EvalConfig)
    eval_records: SelectionConfig = Field(default_factory=SelectionConfig)
    heldout: dict[Role, float] = Field(
        default_factory=dict,
        description="per role, the fraction of each entity's questions kept for evaluation only "
                    "(never in unlearning records); evaluation of that role uses only them")
    heldout_seed: int = 0

    _data = field_validator("data", "eval_data", mode="before")(coerce_data_config)

    @field_validator("baselines", mode="before")
    @classmethod
    def _named_by_label(cls, v: Any) -> Any:
        # An entry without a method name runs the method its label names: `baselines.bild.lr=...`
        # must tune BiLD, not train plain SFT (MethodConfig's default name) under the label "bild".
        if isinstance(v, dict):
            return {label: {"name": label, **entry} if isinstance(entry, dict) and "name" not in entry else entry
                    for label, entry in v.items()}
        return v

    @field_validator("heldout")
    @classmethod
    def _fractions(cls, v: dict[str, float]) -> dict[str, float]:
        for role, f in v.items():
            if not 0 < f < 1:
                raise ValueError(f"heldout.{role} = {f}: a fraction strictly between 0 and 1")
        return v

    @model_validator(mode="after")
    def _known_methods(self) -> DemoConfig:
        check_methods(self, self.run_baselines)
        return self

    def method_config(self, label: str) -> BaselineConfig:
        """A baseline's method settings: its entry in ``baselines``, else the method of that name."""
        return self.baselines.get(label, BaselineConfig(name=label))


def check_methods(cfg: DemoConfig, baselines: list[str]) -> None:
    """Unknown methods, invalid params, and distillation methods that cannot take the prefilled
    unlearning records fail before any stage runs (not after the first methods have trained)."""
    from harmonia.methods.base import build_params, get_method
    from harmonia.methods.distill import DistillParams

    methods = {"unlearn.method": cfg.unlearn.method} | {f"baselines.{b}": cfg.method_config(b) for b in baselines}
    prefilled = any(n is None or n > 0 for n in cfg.unlearn.records.prefilled.values())
    for key, method in methods.items():
        params = build_params(get_method(method.name), method.params)  # ConfigError naming what is wrong
        if prefilled and isinstance(params, DistillParams) and "prefill" not in params.positions:
            raise ConfigError(f"{key}.params.positions is {params.positions}, but unlearn.records.prefilled "
                              "selects prefilled records; add 'prefill'")


def all_baselines(cfg: DemoConfig) -> list[str]:
    """What ``--baselines all`` runs: the configured baseline labels (``npo`` is NPO + retain in
    the demo), then every registered method that no label already runs, except the main method
    and plain SFT."""
    from harmonia.methods.base import list_methods

    covered = {cfg.unlearn.method.name, "sft", *cfg.baselines, *(c.name for c in cfg.baselines.values())}
    return list(cfg.baselines) + [m for m in list_methods() if m not in covered]


def demo_presets() -> list[str]:
    """Names of the shipped demo configs (``configs/<name>.yaml``; ``*_data.yaml`` are their data)."""
    return sorted(p.stem for p in resolve_path(PRESETS_DIR).glob("*.yaml") if not p.stem.endswith("_data"))


def demo_config_path(spec: str | None) -> Path:
    """A config file path, a ``pkg:`` path, or a preset name (``muse_books`` -> ``configs/muse_books.yaml``)."""
    spec = spec or DEFAULT_DEMO_CONFIG
    if "/" in spec or ":" in spec or spec.endswith((".yaml", ".yml")):
        return resolve_path(spec, None)
    if spec not in demo_presets():
        raise ConfigError(f"unknown demo preset '{spec}'; shipped presets: {', '.join(demo_presets())} "
                          "(or pass the path of a config file)")
    return resolve_path(f"{PRESETS_DIR}/{spec}.yaml")


