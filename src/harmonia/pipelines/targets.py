"""Target and reference preparation (TOFU protocol), with teacher calibration folded in.

The *target* is the model that knows what is to be forgotten: the base model fine-tuned on the QA
of every demo entity. The *reference* is trained the same way without the forget entities (the
model unlearning should imitate). For weak instruction followers a second, short stage teaches the
teacher calibration set (METHOD.md Part 2 (d), built from disjoint calibration entities only, with
replay of the QA); the calibrated weights are at once the target, the teacher, and the student's
starting point. Every stage is cached under ``$HARMONIA_HOME/targets`` by a hash of its starting
weights, records and settings, so the demo prepares each once.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harmonia.config import TrainConfig
from harmonia.data.schema import QARecord
from harmonia.io import write_json_atomic
from harmonia.methods.base import MethodParams
from harmonia.pipelines.fingerprint import cache_path, cached_model_run, finished_model, weights_settings
from harmonia.teacher.calibration import (
    InstructedSFT,
    build_calibration_records,
    calibration_pool,
    forbidden_entities,
    is_calibration_record,
)
from harmonia.teacher.config import TeacherConfig
from harmonia.teacher.instruction import Scope
from harmonia.training.engine import Engine

Kind = Literal["target", "reference"]
TRAINED_ROLES = ("forget", "neighbor", "retain")


@dataclass
class PreparedModel:
    kind: Kind
    model_dir: Path
    cached: bool
    n_records: int
    seconds: float


def plain_training_records(records: Sequence[QARecord], *, kind: Kind) -> list[QARecord]:
    """Plain QA of the trained entities; the reference never sees the forget records, and neither
    model sees sources marked ``in_target: false`` (calibration-only entities)."""
    return [r for r in records if r.role in TRAINED_ROLES and not r.prefill and not r.is_mcq
            and r.metadata.get("in_target", True) and (kind == "target" or r.role != "forget")]


def calibration_records(records: Sequence[QARecord], teacher: TeacherConfig, tokenizer: Any, *,
                        scope: Scope) -> list[QARecord]:
    """The calibration set (disjoint calibration entities only; empty when calibration is off)."""
    if not teacher.calibration.enabled:
        return []
    others = [r for r in records if r.role in ("forget", "neighbor")
              and not is_calibration_record(r, teacher.calibration)]
    return build_calibration_records(calibration_pool(records, teacher.calibration), teacher, tokenizer,
                                     forbidden=forbidden_entities(scope, others))


def _train_stage(stage: str, start: Path | str, train_records: list[QARecord], train: TrainConfig,
                 log: Any) -> tuple[Path, bool, float]:
    """One cached SFT stage from the model at ``start``; returns (model dir, cached, seconds)."""
    from harmonia.models import load_model

    train = train.model_copy(update={"output_dir": None, "save": "merged"})
    run_dir = cache_path(lambda key: cached_model_run(stage, key), start, stage, train_records,
                         weights_settings(train))
    if finished_model(run_dir):
        log(f"   {stage}: cached at {run_dir / 'model'}")
        return run_dir / "model", True, 0.0
    log(f"   {stage}: fine-tuning on {len(train_records)} records")
    loaded = load_model(str(start))
    engine = Engine(train, InstructedSFT, MethodParams(), loaded.model, loaded.tokenizer, run_dir)
    result = engine.train(train_records)
    write_json_atomic(run_dir / "prepared.json", {"stage": stage, "records": len(train_records),
                                                   "steps": result.steps, "seconds": result.seconds})
    assert result.model_dir is not None
    return result.model_dir, False, result.seconds


def prepare_model(kind: Kind, base_path: str, records: Sequence[QARecord], teacher: TeacherConfig,
                  train: TrainConfig, tokenizer: Any, *, scope: Scope, log: Any = print) -> PreparedModel:
    """Fine-tune (or reuse from the cache) the target or the reference; returns its model folder.

    Two stages: SFT on the plain QA (the knowledge), then, when calibration is on, a short SFT on
    the calibration set with replay of that QA (the instruction-following skill). Learning both at
    once was measured worse on both counts (docs/method.md).
    """
    plain = plain_training_records(records, kind=kind)
    model_dir, cached, seconds = _train_stage(f"{kind}-sft", base_path, plain, train, log)
    calibration = calibration_records(records, teacher, tokenizer, scope=scope)
    n = len(plain)
    if calibration:
        cal = teacher.calibration
        replay = random.Random(cal.seed).sample(plain, min(cal.replay, len(plain)))
        stage_train = train.model_copy(update={"epochs": cal.epochs, "steps": None, "lr": cal.lr,
                                               "batch_size": cal.batch_size,
                                               "micro_batch_size": min(cal.batch_size, train.micro_batch_size),
                                               "max_length": cal.max_length, "warmup_ratio": 0.0})
        model_dir, cal_cached, cal_seconds = _train_stage(f"{kind}-calibration", model_dir,
                                                          calibration + replay, stage_train, log)
        cached, seconds, n = cached and cal_cached, seconds + cal_seconds, n + len(calibration) + len(replay)
    return PreparedModel(kind, model_dir, cached, n, seconds)
