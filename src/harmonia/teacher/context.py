"""How the teacher sees a record: the instructed system turn, few-shot demonstrations, amplification.

The student always sees the plain chat input (the template's own system turn, the question and
any prefill). The teacher sees, per role (``teacher.role_context``), either that same input (the
plain model) or the instructed one: the intent instruction as the system turn and, in mode
``fewshot``, demonstrations from training anchor pairs as earlier turns. In mode ``amplified``
its logits are ``z_instr + alpha (z_instr - z_plain)`` (on the tokens the instructed model finds
plausible, :class:`~harmonia.teacher.decoding.Amplification`), which needs the plain forward as well.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from harmonia.data.schema import QARecord
from harmonia.errors import DataError
from harmonia.models.chat import render_prompt
from harmonia.teacher.config import TeacherConfig
from harmonia.teacher.decoding import Amplification, amplify
from harmonia.teacher.instruction import Scope, load_template, render_instruction, resolve_scope

__all__ = ["Amplification", "TeacherContext", "amplify", "build_context", "fewshot_demonstrations",
           "instructed_system_prompt"]


def instructed_system_prompt(config: TeacherConfig, scope: Scope) -> str:
    """The teacher's system turn; also the in-context-unlearning (ICU) baseline's system turn."""
    return render_instruction(load_template(config.template), scope, config.refusal)


def _is_plain_pair_member(record: QARecord) -> bool:
    # augmented copies (prefill records) carry their parent's id in metadata; demonstrations
    # use the original questions only
    return not record.prefill and "parent_id" not in record.metadata


def fewshot_demonstrations(
    records: Sequence[QARecord], n_pairs: int, *, seed: int = 0, exclude: Iterable[QARecord] = ()
) -> list[QARecord]:
    """``n_pairs`` anchor pairs from training records: each forget record then its neighbour.

    Shown as (forget question -> refusal) and (neighbour question -> its gold answer), so the
    teacher sees the boundary. Pairs are drawn with a seeded RNG; records in ``exclude`` (the
    evaluation items) never become demonstrations, by id or by question text.
    """
    if n_pairs == 0:
        return []
    banned_ids = set()
    banned_questions = set()
    for r in exclude:
        banned_ids.add(r.id)
        banned_questions.add(r.question.strip())
    by_id = {r.id: r for r in records}
    pairs = []
    for r in records:
        if r.role != "forget" or not r.anchor_id or not _is_plain_pair_member(r):
            continue
        anchor = by_id.get(r.anchor_id)
        if anchor is None or anchor.role != "neighbor" or not _is_plain_pair_member(anchor):
            continue
        if {r.id, anchor.id} & banned_ids or {r.question.strip(), anchor.question.strip()} & banned_questions:
            continue
        pairs.append((r, anchor))
    if len(pairs) < n_pairs:
        raise DataError(
            None,
            f"few-shot mode needs {n_pairs} forget/neighbour anchor pairs among the training "
            f"records (outside the evaluation items), found {len(pairs)}; mine anchors "
            "or lower teacher.n_shots",
            field="anchor_id",
        )
    chosen = random.Random(seed).sample(pairs, n_pairs)
    return [rec for pair in chosen for rec in pair]


@dataclass(frozen=True)
class TeacherContext:
    """The teacher's view of records. Build with :func:`build_context`."""

    config: TeacherConfig
    scope: Scope
    system: str
    demonstrations: tuple[QARecord, ...] = ()
    history: tuple[tuple[str, str], ...] = field(default=())

    @property
    def amplified(self) -> bool:
        return self.config.mode == "amplified"

    @property
    def amplification(self) -> Amplification | None:
        return Amplification.of(self.config)

    def instructed(self, role: str) -> bool:
        """True when records of ``role`` are distilled from the instructed teacher."""
        return self.config.context_of(role) == "instructed"

    def plain_prompt(self, tokenizer: Any, record: QARecord) -> str:
        """What the student (and the plain teacher) sees."""
        return render_prompt(tokenizer, record.question, prefill=record.prefill)

    def instructed_prompt(self, tokenizer: Any, record: QARecord) -> str:
        """The instructed teacher's input: system turn, demonstrations, question, prefill."""
        return render_prompt(
            tokenizer, record.question, system=self.system, prefill=record.prefill, history=list(self.history)
        )

    def teacher_prompt(self, tokenizer: Any, record: QARecord) -> str:
        """The teacher's input for ``record`` under the role's context."""
        if self.instructed(record.role):
            return self.instructed_prompt(tokenizer, record)
        return self.plain_prompt(tokenizer, record)

    def shows(self, record: QARecord) -> bool:
        """Whether ``record`` (or the question it is a prefilled copy of) is one of the demonstrations."""
        ids = {r.id for r in self.demonstrations}
        questions = {r.question.strip() for r in self.demonstrations}
        return record.id in ids or record.metadata.get("parent_id") in ids or record.question.strip() in questions

    def check_not_demonstrations(self, records: Iterable[QARecord]) -> None:
        """Raise when an evaluation record is one of the demonstrations (by id or question)."""
        for r in records:
            if self.shows(r):
                raise DataError(
                    None,
                    "this evaluation record is a few-shot demonstration of the teacher",
                    record=r.id,
                    field="question",
                )


def build_context(
    config: TeacherConfig,
    records: Sequence[QARecord],
    *,
    scope: Scope | None = None,
    exclude: Iterable[QARecord] = (),
) -> TeacherContext:
    """The teacher context for training ``records`` (the scope defaults to their groups).

    ``exclude`` lists evaluation records, which never become demonstrations.
    """
    scope = scope or resolve_scope(config.scope, records)
    system = instructed_system_prompt(config, scope)
    demos: list[QARecord] = []
    if config.mode == "fewshot":
        demos = fewshot_demonstrations(records, config.n_shots, seed=config.seed, exclude=exclude)
    history = tuple((r.question, config.refusal if r.role == "forget" else r.answer) for r in demos)
    return TeacherContext(config=config, scope=scope, system=system, demonstrations=tuple(demos), history=history)
