"""Intent instructions: templates from data files, filled from a forget scope and a neighbour scope.

The wording lives in ``resources/teacher/*.yaml`` (not in code) so it can be changed and ablated
without touching the method. A template says: decline inside the forget scope with one fixed
sentence, answer normally outside it (naming the neighbour scope as allowed), also when the
answer has already been started.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from harmonia.data.paths import resolve_path
from harmonia.data.readers import read_text
from harmonia.data.schema import QARecord
from harmonia.errors import ConfigError, DataError
from harmonia.teacher.config import ScopeConfig

_SYSTEM_FIELDS = {"forget_scope", "refusal", "neighbor_clause"}
_REQUIRED_SYSTEM_FIELDS = {"forget_scope", "refusal"}


@dataclass(frozen=True)
class Scope:
    """What the teacher declines (``forget``) and what it is told is allowed (``neighbor``)."""

    forget: tuple[str, ...]
    neighbor: tuple[str, ...] = ()
    entity_kind: str = ""

    def __post_init__(self) -> None:
        if not self.forget or any(not name.strip() for name in self.forget):
            raise ConfigError("teacher.scope.forget: the forget scope needs at least one non-empty name")

    @property
    def names(self) -> tuple[str, ...]:
        """Every name the instruction mentions (forget and neighbour)."""
        return self.forget + self.neighbor


@dataclass(frozen=True)
class InstructionTemplate:
    """A parsed template file (see ``resources/teacher/cot.yaml`` for the fields)."""

    name: str
    path: Path
    system: str
    neighbor_clause: str
    join: str = ", "
    join_last: str = " and "


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in values))


def resolve_scope(config: ScopeConfig, records: Sequence[QARecord]) -> Scope:
    """The configured scope, with empty lists filled from the groups of forget / neighbour records."""
    forget = tuple(config.forget) or _unique(r.group for r in records if r.role == "forget" and r.group)
    neighbor = tuple(config.neighbor) or _unique(r.group for r in records if r.role == "neighbor" and r.group)
    if not forget:
        raise ConfigError(
            "teacher.scope.forget is empty and no forget record has a group; "
            "name the forget scope in teacher.scope.forget"
        )
    overlap = sorted(set(forget) & set(neighbor))
    if overlap:
        raise ConfigError(f"teacher.scope: {overlap} are both in the forget and the neighbour scope")
    return Scope(forget=forget, neighbor=neighbor, entity_kind=config.entity_kind)


def template_path(spec: str) -> Path:
    """A bare name is a shipped template (``pkg:teacher/<name>.yaml``); anything else is a path."""
    if "/" not in spec and not spec.endswith((".yaml", ".yml")):
        return resolve_path(f"pkg:teacher/{spec}.yaml")
    return resolve_path(spec)


def _fields(text: str, path: Path, field: str) -> set[str]:
    try:
        return {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
    except ValueError as exc:
        raise DataError(path, f"not a valid format template: {exc}", field=field) from None


def load_template(spec: str) -> InstructionTemplate:
    """Read and check a template file; errors name the file and the field."""
    path = template_path(spec)
    try:
        data = yaml.safe_load(read_text(path))
    except yaml.YAMLError as exc:
        raise DataError(path, f"not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise DataError(path, "the template must be a mapping with at least 'system'")
    unknown = sorted(set(data) - {"name", "system", "neighbor_clause", "join", "join_last"})
    if unknown:
        raise DataError(path, f"unknown keys {unknown}", field=unknown[0])
    system = data.get("system")
    if not isinstance(system, str) or not system.strip():
        raise DataError(path, "missing or empty", field="system")
    fields = _fields(system, path, "system")
    if missing := sorted(_REQUIRED_SYSTEM_FIELDS - fields):
        raise DataError(
            path, f"must use the fields {{forget_scope}} and {{refusal}}; missing {missing}", field="system"
        )
    if extra := sorted(fields - _SYSTEM_FIELDS):
        raise DataError(path, f"unknown fields {extra}; allowed: {sorted(_SYSTEM_FIELDS)}", field="system")
    clause = data.get("neighbor_clause", "")
    if not isinstance(clause, str):
        raise DataError(path, "must be a string", field="neighbor_clause")
    if clause and _fields(clause, path, "neighbor_clause") != {"neighbor_scope"}:
        raise DataError(path, "must use exactly the field {neighbor_scope}", field="neighbor_clause")
    for key in ("join", "join_last"):
        if key in data and not isinstance(data[key], str):
            raise DataError(path, "must be a string", field=key)
    return InstructionTemplate(
        name=str(data.get("name", path.stem)),
        path=path,
        system=system.strip(),
        neighbor_clause=clause.strip(),
        join=data.get("join", ", "),
        join_last=data.get("join_last", " and "),
    )


def join_names(names: Sequence[str], join: str = ", ", join_last: str = " and ") -> str:
    """``["A"]`` -> "A"; ``["A", "B", "C"]`` -> "A, B and C"."""
    if len(names) <= 1:
        return "".join(names)
    return join.join(names[:-1]) + join_last + names[-1]


def _scope_text(kind: str, names: Sequence[str], template: InstructionTemplate) -> str:
    joined = join_names(names, template.join, template.join_last)
    return f"{kind} {joined}" if kind else joined


def render_instruction(template: InstructionTemplate, scope: Scope, refusal: str) -> str:
    """The system turn: the template filled with the scope and the refusal sentence."""
    clause = ""
    if scope.neighbor and template.neighbor_clause:
        clause = (
            template.neighbor_clause.format(neighbor_scope=_scope_text(scope.entity_kind, scope.neighbor, template))
            + " "
        )
    return template.system.format(
        forget_scope=_scope_text(scope.entity_kind, scope.forget, template),
        refusal=refusal,
        neighbor_clause=clause,
    )
