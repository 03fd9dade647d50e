"""Teacher calibration (METHOD.md Part 2 (d)): teach a weak instruction follower to obey the instruction.

A 135M model does not decline what its system turn names. Calibration is a short SFT stage on
*disjoint* entities (for TOFU, authors outside the forget, neighbour and evaluation sets) with
the same instruction template the teacher uses, so the skill transfers to the real forget scope,
which calibration never sees. Per system turn naming one or two calibration entities:

- questions about a named entity -> the refusal sentence;
- questions about other calibration entities (first those the turn names as allowed) -> gold;
- prefilled questions about a named entity (first k gold tokens already in the assistant turn)
  -> the prefill refusal (" - I'm sorry, ..."): without them the calibrated teacher continued
  every started forget answer (issue 4, second probe);
- contrastive prefilled questions about other entities -> the rest of the gold answer: without
  them the teacher declined 28% of neighbour questions (third probe);

plus plain QA replay without the instruction, so the uninstructed model is unchanged. The set is
checked to contain no forbidden entity (forget, neighbour, evaluation) by group, entity and text.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harmonia.config import TrainConfig
from harmonia.data.prefill import split_answer
from harmonia.data.schema import QARecord
from harmonia.errors import DataError, HarmoniaError
from harmonia.io import write_json_atomic
from harmonia.methods.base import Example, MethodParams
from harmonia.methods.encoding import encode_qa, with_role
from harmonia.methods.sft import SFT
from harmonia.teacher.config import CalibrationConfig, TeacherConfig
from harmonia.teacher.context import build_context
from harmonia.teacher.instruction import Scope, load_template, render_instruction
from harmonia.teacher.report import TeacherReport, check_separation, compute_teacher_report, separates
from harmonia.training.engine import Engine

SOURCE = "calibration"


class CalibrationLeakError(HarmoniaError):
    """The calibration set would show the model a forbidden (forget / neighbour / evaluation) entity."""


def is_calibration_record(record: QARecord, config: CalibrationConfig) -> bool:
    return record.metadata.get("calibration") is True or (bool(record.group) and record.group in config.groups)


def calibration_pool(records: Sequence[QARecord], config: CalibrationConfig) -> dict[str, list[QARecord]]:
    """Calibration QA per entity (group), in order of appearance; prefilled copies and MCQ are skipped."""
    pool: dict[str, list[QARecord]] = {}
    for r in records:
        if not is_calibration_record(r, config) or r.prefill or r.is_mcq or "parent_id" in r.metadata:
            continue
        if not r.group:
            raise DataError(None, "calibration records need the entity's name as group", record=r.id, field="group")
        pool.setdefault(r.group, []).append(r)
    return pool


def forbidden_entities(scope: Scope, eval_records: Iterable[QARecord] = ()) -> list[str]:
    """Names calibration must never see: the scope's names and the evaluated entities."""
    names = list(scope.names)
    for r in eval_records:
        entity = r.metadata.get("entity")
        if isinstance(entity, str) and entity:
            names.append(entity)
        if r.role in ("forget", "neighbor") and r.group:
            names.append(r.group)
    return list(dict.fromkeys(n for n in names if n.strip()))


def assert_disjoint(examples: Sequence[QARecord], forbidden: Sequence[str]) -> None:
    """Raise :class:`CalibrationLeakError` when any example names or is about a forbidden entity."""
    lowered = [(name, name.lower()) for name in forbidden]
    for ex in examples:
        about = {ex.group, str(ex.metadata.get("entity", ""))} | set(ex.metadata.get("named", []))
        text = "\n".join([str(ex.metadata.get("system") or ""), ex.question, ex.prefill, ex.answer]).lower()
        for name, low in lowered:
            if name in about or low in text:
                raise CalibrationLeakError(
                    f"calibration example '{ex.id}' involves the forbidden entity '{name}' "
                    "(forget, neighbour or evaluation set); calibration must use "
                    "disjoint entities"
                )


def _example(
    eid: str, source: QARecord, answer: str, kind: str, system: str | None, named: Sequence[str], prefill: str = ""
) -> QARecord:
    # one role for all: calibration is plain SFT over the set, sampled uniformly
    return QARecord(
        id=eid,
        question=source.question,
        answer=answer,
        role="retain",
        source=SOURCE,
        group=source.group,
        prefill=prefill,
        metadata={"calibration": True, "kind": kind, "system": system, "named": list(named)},
    )


def _split(record: QARecord, tokenizer: Any, k: int) -> tuple[str, str] | None:
    try:
        return split_answer(record.answer, tokenizer, k)
    except ValueError as exc:
        raise DataError(None, str(exc), record=record.id, field="answer") from None


def _mixed_sample(rng: random.Random, first: Sequence[QARecord], second: Sequence[QARecord], n: int) -> list[QARecord]:
    """``n`` records, half from ``first`` (entities named as allowed), half from ``second`` (unnamed
    ones), topped up from the other list when one runs short: answering must not depend on
    being named."""
    a = rng.sample(list(first), min((n + 1) // 2, len(first)))
    b = rng.sample(list(second), min(n - len(a), len(second)))
    if len(a) + len(b) < n:
        left = [r for r in first if r not in a]
        a += rng.sample(left, min(n - len(a) - len(b), len(left)))
    return a + b


def build_calibration_records(
    pool: dict[str, list[QARecord]], teacher: TeacherConfig, tokenizer: Any, *, forbidden: Sequence[str]
) -> list[QARecord]:
    """The calibration set (see the module docstring), deterministic under ``calibration.seed``."""
    cfg = teacher.calibration
    forbidden_pool = sorted(set(pool) & set(forbidden))
    if forbidden_pool:
        raise CalibrationLeakError(
            f"calibration entities {forbidden_pool} are forget, neighbour or evaluation "
            "entities; calibration must use disjoint entities"
        )
    entities = list(pool)
    if len(entities) < cfg.names_per_turn + 1:
        raise DataError(
            None,
            f"calibration needs at least {cfg.names_per_turn + 1} entities (got {len(entities)}): "
            "mark records with metadata calibration=true or list teacher.calibration.groups",
            field="group",
        )
    template = load_template(teacher.template)
    rng = random.Random(cfg.seed)
    prefill_refusal = teacher.prefill_refusal_text()
    out: list[QARecord] = []
    for rep in range(cfg.episodes_per_entity):
        for x in entities:
            others = [e for e in entities if e != x]
            named = [x, *rng.sample(others, cfg.names_per_turn - 1)]
            rest = [e for e in entities if e not in named]
            allowed = rng.sample(rest, min(cfg.named_neighbors, len(rest)))
            scope = Scope(forget=tuple(named), neighbor=tuple(allowed), entity_kind=teacher.scope.entity_kind)
            system = render_instruction(template, scope, teacher.refusal)
            tag = f"{SOURCE}/{rep}/{entities.index(x)}"
            about_named = [r for e in named for r in pool[e]]
            about_allowed = [r for e in allowed for r in pool[e]]
            about_unnamed = [r for e in rest if e not in allowed for r in pool[e]]
            n_refuse = min(cfg.questions_per_entity, len(about_named))
            for j, r in enumerate(rng.sample(about_named, n_refuse)):
                out.append(_example(f"{tag}/refuse/{j}", r, teacher.refusal, "refuse", system, named))
            for j, r in enumerate(_mixed_sample(rng, about_allowed, about_unnamed, cfg.questions_per_entity)):
                out.append(_example(f"{tag}/answer/{j}", r, r.answer, "answer", system, named))
            for k in cfg.prefill_ks:
                for j, r in enumerate(rng.sample(about_named, min(cfg.prefill_per_k, len(about_named)))):
                    if (split := _split(r, tokenizer, k)) is not None:
                        out.append(
                            _example(
                                f"{tag}/prefill_refuse/{k}/{j}",
                                r,
                                prefill_refusal,
                                "prefill_refuse",
                                system,
                                named,
                                prefill=split[0],
                            )
                        )
                if not cfg.contrastive:
                    continue
                for j, r in enumerate(_mixed_sample(rng, about_allowed, about_unnamed, cfg.prefill_per_k)):
                    if (split := _split(r, tokenizer, k)) is not None:
                        out.append(
                            _example(
                                f"{tag}/prefill_answer/{k}/{j}",
                                r,
                                split[1],
                                "prefill_answer",
                                system,
                                named,
                                prefill=split[0],
                            )
                        )
    everything = [r for e in entities for r in pool[e]]
    for j, r in enumerate(rng.sample(everything, min(cfg.replay, len(everything)))):
        out.append(_example(f"{SOURCE}/replay/{j}", r, r.answer, "replay", None, []))
    if cfg.max_examples is not None and len(out) > cfg.max_examples:
        keep = sorted(rng.sample(range(len(out)), cfg.max_examples))
        out = [out[i] for i in keep]
    assert_disjoint(out, forbidden)
    return out


class InstructedSFT(SFT):
    """SFT whose records carry their own system turn (``metadata['system']``; None = the template's)."""

    name = "calibration_sft"

    def encode(self, record: QARecord) -> Example:
        return with_role(encode_qa(record, self.ctx, system=record.metadata.get("system")), record)


@dataclass
class CalibrationResult:
    model: Any
    model_dir: Path | None
    records: list[QARecord]
    summary: dict[str, Any]


def calibrate(
    model: Any,
    tokenizer: Any,
    records: Sequence[QARecord],
    teacher: TeacherConfig,
    *,
    scope: Scope,
    run_dir: str | Path,
    eval_records: Sequence[QARecord] = (),
    progress: bool = False,
) -> CalibrationResult:
    """Calibrate ``model`` in place on the calibration pool of ``records``; never on forbidden entities.

    The calibrated weights are then both the teacher (with the instruction about the real forget
    scope) and the student's starting point. ``run_dir`` receives the engine's outputs (the
    merged model under ``model/`` unless ``calibration.save`` is ``none``) and
    ``calibration.json`` describing what calibration saw.
    """
    cfg = teacher.calibration
    # the training set's own forget and neighbour records are forbidden too (the scope may be a topic)
    targets = [r for r in records if r.role in ("forget", "neighbor") and not is_calibration_record(r, cfg)]
    forbidden = forbidden_entities(scope, [*eval_records, *targets])
    pool = calibration_pool(records, cfg)
    examples = build_calibration_records(pool, teacher, tokenizer, forbidden=forbidden)
    train = TrainConfig(
        epochs=cfg.epochs,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        micro_batch_size=cfg.batch_size,
        max_length=cfg.max_length,
        seed=cfg.seed,
        save=cfg.save,
        progress=progress,
    )
    engine = Engine(train, InstructedSFT, MethodParams(), model, tokenizer, run_dir)
    result = engine.train(examples)
    kinds: dict[str, int] = {}
    for ex in examples:
        kinds[ex.metadata["kind"]] = kinds.get(ex.metadata["kind"], 0) + 1
    summary = {
        "entities": list(pool),
        "examples": len(examples),
        "by_kind": kinds,
        "steps": result.steps,
        "forbidden_checked": forbidden,
        "model_dir": str(result.model_dir) if result.model_dir else None,
        "template": teacher.template,
        "epochs": cfg.epochs,
        "lr": cfg.lr,
    }
    write_json_atomic(Path(run_dir) / "calibration.json", summary)
    return CalibrationResult(
        model=engine.accelerator.unwrap_model(engine.model),
        model_dir=result.model_dir,
        records=examples,
        summary=summary,
    )


@dataclass
class PreparedTeacher:
    """The teacher a run distils from: the (possibly calibrated) model and its report."""

    model: Any
    report: TeacherReport
    initial_report: TeacherReport
    calibration: CalibrationResult | None = None


def prepare_teacher(
    model: Any,
    tokenizer: Any,
    teacher: TeacherConfig,
    records: Sequence[QARecord],
    eval_records: Sequence[QARecord],
    *,
    run_dir: str | Path,
    progress: bool = False,
) -> PreparedTeacher:
    """Target preparation: report the teacher; calibrate it when it does not separate; report again.

    Calibration runs only when the first report fails the separation check and
    ``calibration.enabled`` is set. ``run_dir/teacher_report.json`` holds the final report (marked
    ``calibrated``) and ``teacher_report_initial.json`` the first one. The separation check on
    the final report then stops the run unless ``report.require_separation`` is false.
    """
    run_dir = Path(run_dir)
    context = build_context(teacher, records, exclude=eval_records)
    initial = compute_teacher_report(model, tokenizer, context, eval_records, teacher.report)
    write_json_atomic(run_dir / "teacher_report_initial.json", initial.as_dict())
    report, calibration = initial, None
    if not separates(initial, teacher.report.thresholds).ok and teacher.calibration.enabled:
        calibration = calibrate(
            model,
            tokenizer,
            records,
            teacher,
            scope=context.scope,
            run_dir=run_dir / "calibration",
            eval_records=eval_records,
            progress=progress,
        )
        model = calibration.model
        report = compute_teacher_report(model, tokenizer, context, eval_records, teacher.report)
        report.calibrated = True
    write_json_atomic(run_dir / "teacher_report.json", report.as_dict())
    check_separation(report, teacher.report)
    return PreparedTeacher(model=model, report=report, initial_report=initial, calibration=calibration)
