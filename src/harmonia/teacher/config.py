"""Settings of the context-instructed teacher (METHOD.md Part 2): one pydantic model, unknown keys are errors.

The teacher is the frozen starting model with an intent instruction in its system turn. These
settings say how it sees a record (instruction alone, with few-shot demonstrations, or amplified
against the plain model), which roles get the instructed teacher and which the plain model, how
its report is judged, and how a weak instruction follower is calibrated first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from harmonia.data.schema import ROLES, Role

TeacherMode = Literal["instruction", "fewshot", "amplified"]
Position = Literal["first", "response", "prefill", "prefix"]
ResponseSource = Literal["teacher", "gold", "refusal"]
RoleContext = Literal["instructed", "plain"]

DEFAULT_REFUSAL = "I'm sorry, I don't have information about that."


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScopeConfig(_Strict):
    """What the instruction names. Empty lists are filled from the training records' ``group``
    (forget records for ``forget``, neighbour records for ``neighbor``)."""

    forget: list[str] = Field(default_factory=list, description="names or topics to decline")
    neighbor: list[str] = Field(default_factory=list, description="names or topics named as allowed")
    entity_kind: str = Field("", description="words put before the joined names, e.g. 'the authors'")


class SeparationThresholds(_Strict):
    """When the teacher report counts as separating forget from neighbour questions.

    The defaults only stop teachers that plainly do not separate. Issue 4's success bar for a
    calibrated teacher is stricter: forget refusal >= 0.8, neighbour refusal <= 0.1 and a
    neighbour recall drop <= 0.05 (set ``max_neighbor_recall_drop`` and ``include_plain``).
    """

    min_forget_refusal: float = Field(0.5, ge=0, le=1)
    max_neighbor_refusal: float = Field(0.2, ge=0, le=1)
    max_forget_prefill_leak: float | None = Field(
        None, ge=0, le=1, description="max share of prefilled forget questions NOT declined"
    )
    max_neighbor_recall_drop: float | None = Field(
        None, ge=0, le=1, description="max drop of neighbour ROUGE-L recall vs the plain model"
    )


class ReportConfig(_Strict):
    """The teacher report computed before training on held-out questions."""

    require_separation: bool = Field(True, description="stop the run when the teacher does not separate")
    thresholds: SeparationThresholds = Field(default_factory=SeparationThresholds)
    include_plain: bool = Field(True, description="also report the plain model (for recall drops)")
    max_new_tokens: int = Field(48, gt=0)
    batch_size: int = Field(16, gt=0)


class CalibrationConfig(_Strict):
    """Teacher calibration (METHOD.md Part 2 (d)): short SFT on disjoint entities.

    The pool is the records marked ``metadata['calibration'] = True`` plus those whose group is
    listed in ``groups``; it must not contain any forget, neighbour or evaluation entity.
    """

    enabled: bool = False
    groups: list[str] = Field(default_factory=list, description="extra calibration entities by group")
    epochs: float = Field(2.0, gt=0)
    lr: float = Field(5e-5, gt=0)
    batch_size: int = Field(8, gt=0)
    max_length: int = Field(384, gt=8)
    names_per_turn: int = Field(1, ge=1, le=2, description="calibration entities declined per system turn")
    episodes_per_entity: int = Field(2, ge=1, description="system turns naming each entity")
    named_neighbors: int = Field(2, ge=0, description="other calibration entities named as allowed")
    questions_per_entity: int = Field(6, ge=1, description="refusal and answer examples per system turn")
    prefill_ks: list[int] = Field(default_factory=lambda: [2, 4, 8])
    prefill_per_k: int = Field(2, ge=0, description="prefilled questions per k and system turn, each side")
    contrastive: bool = Field(True, description="add neighbour questions (plain and prefilled) -> gold")
    replay: int = Field(60, ge=0, description="plain QA examples without the instruction")
    max_examples: int | None = Field(None, gt=0, description="cap on the calibration set (seeded sample)")
    save: Literal["merged", "none"] = "merged"
    seed: int = 0

    @field_validator("prefill_ks")
    @classmethod
    def _positive(cls, ks: list[int]) -> list[int]:
        if any(k < 1 for k in ks):
            raise ValueError("every k must be >= 1")
        return sorted(set(ks))


def _default_role_context() -> dict[Role, RoleContext]:
    # The instructed teacher's refusals on retain records leaked into the student in the second
    # probe of issue 4, so only forget records see the instruction by default.
    return {"forget": "instructed", "neighbor": "plain", "retain": "plain", "general": "plain"}


class TeacherConfig(_Strict):
    """How the teacher sees a record and what it is asked to do."""

    mode: TeacherMode = "instruction"
    alpha: float = Field(1.0, ge=0, description="amplification: z = z_instr + alpha (z_instr - z_plain)")
    plausibility: float = Field(
        0.0, ge=0, lt=1, description="amplify only tokens with p_instr >= plausibility x max p_instr (0: all)"
    )
    n_shots: int = Field(2, ge=0, description="few-shot anchor pairs (mode 'fewshot')")
    template: str = Field(
        "cot", min_length=1, description="instruction template: a name in resources/teacher or a YAML path"
    )
    scope: ScopeConfig = Field(default_factory=ScopeConfig)
    refusal: str = Field(DEFAULT_REFUSAL, min_length=1, description="the one decline sentence")
    prefill_refusal: str = Field(" - {refusal}", description="decline after a started answer")
    role_context: dict[Role, RoleContext] = Field(default_factory=_default_role_context)
    report: ReportConfig = Field(default_factory=ReportConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    cache_dir: Path | None = Field(None, description="teacher target cache; default $HARMONIA_HOME/teacher_cache")
    seed: int = 0

    @field_validator("role_context")
    @classmethod
    def _all_roles(cls, value: dict[Role, RoleContext]) -> dict[Role, RoleContext]:
        return {**_default_role_context(), **value}

    @model_validator(mode="after")
    def _prefill_refusal_names_refusal(self) -> TeacherConfig:
        if "{refusal}" not in self.prefill_refusal and not self.prefill_refusal.strip():
            raise ValueError("prefill_refusal must contain text or '{refusal}'")
        return self

    def context_of(self, role: str) -> RoleContext:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        return self.role_context[role]  # type: ignore[index]

    def prefill_refusal_text(self) -> str:
        return self.prefill_refusal.replace("{refusal}", self.refusal)

    def decline_text(self, prefilled: bool) -> str:
        """The decline the teacher is told to give: the refusal, or after a started answer the prefill
        refusal (" - I'm sorry, ...")."""
        return self.prefill_refusal_text() if prefilled else self.refusal
