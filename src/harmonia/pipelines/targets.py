"""Target and reference preparation (TOFU protocol), with teacher calibration folded in.

The *target* is the model that knows what is to be forgotten: the base model fine-tuned on the QA
of every demo entity. The *reference* is trained the same way without the forget entities (the
model unlearning should imitate). For weak instruction followers the teacher calibration set
(METHOD.md Part 2 (d), built from disjoint calibration entities only) is mixed into the same SFT
run instead of a second stage: one pass over the data instead of two, and the calibrated weights
are at once the target, the teacher, and the student's starting point. Both models are cached
under ``$HARMONIA_HOME/targets`` by a hash of base weights, records and settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harmonia.config import TrainConfig
from harmonia.data.schema import QARecord
from harmonia.io import harmonia_home, write_json_atomic
from harmonia.methods.base import MethodParams
from harmonia.pipelines.fingerprint import fingerprint, model_fingerprint
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


def target_training_records(records: Sequence[QARecord], teacher: TeacherConfig, tokenizer: Any, *,
                            scope: Scope, kind: Kind) -> list[QARecord]:
    """Plain QA of the trained entities (without forget ones for the reference) + calibration set."""
    plain = [r for r in records if r.role in TRAINED_ROLES and not r.prefill and not r.is_mcq
             and (kind == "target" or r.role != "forget")]
    if not teacher.calibration.enabled:
        return plain
    others = [r for r in records if r.role in ("forget", "neighbor")
              and not is_calibration_record(r, teacher.calibration)]
    calibration = build_calibration_records(calibration_pool(records, teacher.calibration), teacher, tokenizer,
                                            forbidden=forbidden_entities(scope, others))
    return plain + calibration


def prepare_model(kind: Kind, base: Any, records: Sequence[QARecord], teacher: TeacherConfig,
                  train: TrainConfig, *, scope: Scope, base_path: str, log: Any = print) -> PreparedModel:
    """Fine-tune (or reuse from the cache) the target or the reference; returns its model folder."""
    train_records = target_training_records(records, teacher, base.tokenizer, scope=scope, kind=kind)
    train = train.model_copy(update={"output_dir": None, "save": "merged"})
    key = fingerprint(model_fingerprint(base_path), kind, train_records, train)[:16]
    run_dir = harmonia_home() / "targets" / f"{kind}-{key}"
    if (run_dir / "model" / "config.json").is_file():
        log(f"{kind}: cached at {run_dir / 'model'}")
        return PreparedModel(kind, run_dir / "model", True, len(train_records), 0.0)
    log(f"{kind}: fine-tuning on {len(train_records)} records "
        f"({sum(r.source == 'calibration' for r in train_records)} calibration examples)")
    engine = Engine(train, InstructedSFT, MethodParams(), base.model, base.tokenizer, run_dir)
    result = engine.train(train_records)
    write_json_atomic(run_dir / "prepared.json", {"kind": kind, "records": len(train_records),
                                                   "steps": result.steps, "seconds": result.seconds})
    assert result.model_dir is not None
    return PreparedModel(kind, result.model_dir, False, len(train_records), result.seconds)
