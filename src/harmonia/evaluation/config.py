"""The evaluation configuration (``EvalConfig``): which metrics and attacks, on how much data, how.

Every section forbids unknown keys, so a typo fails naming the key. Paths follow
:mod:`harmonia.data.paths` (``pkg:...`` = shipped resources; other relative paths are relative to
the config file). Example (YAML)::

    metrics: [qa, probability, truth_ratio, mcq]
    system: null                      # or an instruction: the in-context-unlearning row
    subsets: {max_qa: {forget: 40, neighbor: 40, retain: 40}, max_mcq: {general: 100}}
    generation: {max_new_tokens: 64, batch_size: 16, backend: hf}   # or vllm
    attacks:
      prefill: {ks: [1, 2, 5, 10]}
      jailbreak: {data_dir: /work/shared/data/attacks, sources: [dan, inthewild]}
      relearn: null                   # switch an attack off
    privacy: {forget_texts: muse/privleak/forget.json, holdout_texts: muse/privleak/holdout.json}

Metric groups (``metrics``), each skipped (with the reason in ``meta["skipped"]``) when the data
has nothing for it:

- ``qa``: greedy chat answers -> ROUGE-L recall/F1, refusal rate, over-refusal, n-gram entropy;
- ``probability``: answer probability and answer perplexity; ``truth_ratio``: TOFU truth ratio;
- ``knowmem`` / ``verbmem``: MUSE (records with ``metadata["subset"]`` = knowmem / verbmem);
- ``mcq``: option log-likelihood accuracy of records with ``choices`` (or lm-eval tasks);
- ``perplexity``: perplexity of ``privacy.retain_texts``; ``mia``: forget vs holdout texts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from harmonia.attacks.jailbreak import JailbreakParams
from harmonia.attacks.mcq_prefill import MCQPrefillParams
from harmonia.attacks.paraphrase import ParaphraseParams
from harmonia.attacks.prefill import PrefillParams
from harmonia.attacks.relearn import RelearnParams
from harmonia.config import load_config
from harmonia.data.paths import resolve_path
from harmonia.data.schema import Role
from harmonia.evaluation.metrics.mia import DEFAULT_MIN_K
from harmonia.evaluation.privacy import MIA_METRICS

MetricGroup = Literal["qa", "probability", "truth_ratio", "knowmem", "verbmem", "mcq", "perplexity", "mia"]
METRIC_GROUPS: tuple[str, ...] = (
    "qa",
    "probability",
    "truth_ratio",
    "knowmem",
    "verbmem",
    "mcq",
    "perplexity",
    "mia",
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _existing_file(value: Any, info: ValidationInfo) -> Path | None:
    if value is None:
        return None
    path = resolve_path(str(value), (info.context or {}).get("config_dir"))
    if not path.is_file():
        raise ValueError(f"file not found: {path}")
    return path


class SubsetSettings(_Section):
    """At most this many QA / MCQ records per role, a seeded sample kept in input order."""

    max_qa: dict[Role, int] = Field(default_factory=dict)
    max_mcq: dict[Role, int] = Field(default_factory=dict)
    seed: int = 0

    @field_validator("max_qa", "max_mcq")
    @classmethod
    def _positive(cls, value: dict[str, int]) -> dict[str, int]:
        bad = {k: v for k, v in value.items() if v < 1}
        if bad:
            raise ValueError(f"sizes must be >= 1, got {bad}")
        return value


class GenerationSettings(_Section):
    """Greedy generation. ``backend: vllm`` (``pip install 'harmonia[vllm]'``, one process) falls back
    to ``hf`` with a warning when vLLM is missing, or fails with ``require_backend: true``
    (see :mod:`harmonia.evaluation.backends`)."""

    max_new_tokens: int = Field(64, gt=0)
    batch_size: int = Field(16, gt=0)
    stop: list[str] = Field(default_factory=list)
    backend: Literal["hf", "vllm"] = "hf"
    require_backend: bool = Field(False, description="fail instead of falling back to hf when vllm is missing")
    vllm_gpu_memory_utilization: float = Field(
        0.4, gt=0, lt=1, description="GPU share of the vLLM engine (the HF model stays loaded for scoring)")


class KnowMemSettings(_Section):
    """MUSE KnowMem: few-shot shots from ``icl_file`` (a JSON list of {question, answer}, e.g.
    MUSE's ``knowmem/forget_qa_icl.json``); zero-shot without one."""

    icl_file: Path | None = None
    max_new_tokens: int = Field(32, gt=0)
    use_stemmer: bool = False

    _file = field_validator("icl_file", mode="before")(_existing_file)


class VerbMemSettings(_Section):
    max_new_tokens: int = Field(128, gt=0)
    use_stemmer: bool = False


class MCQSettings(_Section):
    """``backend: harmonia`` scores the MCQ records passed in; ``lm_eval`` runs lm-eval's own tasks."""

    backend: Literal["harmonia", "lm_eval"] = "harmonia"
    chance: float = Field(0.25, ge=0, lt=1)
    lm_eval_tasks: list[str] = Field(default_factory=lambda: ["wmdp_cyber", "mmlu"])
    lm_eval_limit: int | None = Field(None, ge=1)


class PrivacySettings(_Section):
    """Texts for membership inference and perplexity (JSON list of strings, or text paragraphs).

    PrivLeak needs the retrained model's AUC per attack: ``reference_auc`` by name
    (``mia_min_k: 0.52``), or ``reference_results``, a results.json of the retrained model.
    """

    forget_texts: Path | None = None
    holdout_texts: Path | None = None
    retain_texts: Path | None = None
    max_tokens: int = Field(512, gt=0)
    min_k: float = Field(DEFAULT_MIN_K, gt=0, le=1)
    reference_auc: dict[str, float] = Field(default_factory=dict)
    reference_results: Path | None = None

    _files = field_validator(
        "forget_texts", "holdout_texts", "retain_texts", "reference_results", mode="before"
    )(_existing_file)

    @field_validator("reference_auc")
    @classmethod
    def _known(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(MIA_METRICS))
        if unknown:
            raise ValueError(f"unknown MIA attack(s) {unknown}; use {list(MIA_METRICS)}")
        bad = {k: v for k, v in value.items() if not 0 <= v <= 1}
        if bad:
            raise ValueError(f"AUCs must lie in [0, 1], got {bad}")
        return value


class AttackConfigs(_Section):
    """One entry per registered attack; ``null`` switches it off. Prefill, paraphrase and MCQ prefill
    run by default; jailbreak (long prompts) and relearn (training) are opt-in."""

    prefill: PrefillParams | None = Field(default_factory=PrefillParams)
    jailbreak: JailbreakParams | None = None
    paraphrase: ParaphraseParams | None = Field(default_factory=ParaphraseParams)
    relearn: RelearnParams | None = None
    mcq_prefill: MCQPrefillParams | None = Field(default_factory=MCQPrefillParams)

    def enabled(self) -> dict[str, Any]:
        """Attack name -> params, for the attacks switched on, in declaration order."""
        return {
            name: getattr(self, name) for name in type(self).model_fields if getattr(self, name) is not None
        }


class ObjectiveSettings(_Section):
    """Which metric feeds each objective (``null`` = the documented default, see ``objectives``)
    and the target model's results that relative objectives divide by."""

    target_results: Path | None = None
    forget_metric: str | None = None
    neighbour_metric: str | None = None
    utility_metric: str | None = None
    attack: str = "prefill"

    _file = field_validator("target_results", mode="before")(_existing_file)


class EvalConfig(_Section):
    """Everything ``evaluate`` needs besides the model and the records (see the module docstring)."""

    metrics: list[MetricGroup] = Field(default_factory=lambda: list(METRIC_GROUPS),
                                       description="metric groups to run; each skips when the data has none")
    system: str | None = Field(None, description="system turn for every chat prompt (None = template default)")
    subsets: SubsetSettings = Field(default_factory=SubsetSettings)
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    scoring_batch_size: int = Field(8, gt=0, description="batch size of teacher-forced scoring passes")
    max_length: int | None = Field(None, gt=8, description="scored sequences longer than this lose context "
                                   "tokens from the left")
    success_threshold: float = Field(0.5, ge=0, le=1, description="ROUGE-L recall at which a probe leaked")
    use_stemmer: bool = Field(True, description="ROUGE stemming for QA metrics and attacks (TOFU: true)")
    knowmem: KnowMemSettings = Field(default_factory=KnowMemSettings)
    verbmem: VerbMemSettings = Field(default_factory=VerbMemSettings)
    mcq: MCQSettings = Field(default_factory=MCQSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    attacks: AttackConfigs = Field(default_factory=AttackConfigs)
    objectives: ObjectiveSettings = Field(default_factory=ObjectiveSettings)
    seed: int = 0
    progress: bool = True

    @model_validator(mode="after")
    def _mia_pair(self) -> EvalConfig:
        if (self.privacy.forget_texts is None) != (self.privacy.holdout_texts is None):
            raise ValueError("privacy: give both forget_texts and holdout_texts, or neither")
        return self


def load_eval_config(path: str | Path | None, overrides: list[str] | None = None) -> EvalConfig:
    """Read an evaluation config file (optional) with ``key.sub=value`` overrides; errors name the key."""
    return load_config(EvalConfig, path, overrides)
