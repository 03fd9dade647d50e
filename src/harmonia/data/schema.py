"""The one record schema every objective is expressed in (METHOD.md, Part 1).

Forget corpora, retain corpora, neighbour sets, general data, MCQ benchmarks and
prefill-augmented attack examples all become :class:`QARecord` rows, so every loss and
every metric reads the same representation.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Role = Literal["forget", "neighbor", "retain", "general"]
ROLES: tuple[Role, ...] = ("forget", "neighbor", "retain", "general")


class QARecord(BaseModel):
    """One question-answer example.

    ``prefill`` holds text already placed at the start of the assistant turn (a prefilling
    attack, or a prefill-augmented training example); ``answer`` is what follows it.
    ``anchor_id`` links a forget record to its contrastive neighbour (and back), with the
    pair's similarity in ``anchor_similarity``.
    """

    model_config = ConfigDict(extra="forbid", frozen=False)

    id: str = Field(min_length=1)
    question: str = Field(min_length=1)
    answer: str
    role: Role
    source: str = Field(min_length=1)
    group: str = ""
    choices: list[str] | None = None
    correct: int | None = None
    prefill: str = ""
    anchor_id: str | None = None
    anchor_similarity: float | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("question")
    @classmethod
    def _question_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty or whitespace")
        return v

    @model_validator(mode="after")
    def _mcq_consistent(self) -> QARecord:
        if (self.choices is None) != (self.correct is None):
            raise ValueError("'choices' and 'correct' must be given together")
        if self.choices is not None:
            if len(self.choices) < 2:
                raise ValueError("'choices' needs at least two options")
            if not 0 <= self.correct < len(self.choices):  # type: ignore[operator]
                raise ValueError(f"'correct' = {self.correct} is outside 0..{len(self.choices) - 1}")
        return self

    @property
    def is_mcq(self) -> bool:
        return self.choices is not None
