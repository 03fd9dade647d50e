"""Relearning attack: fine-tune the unlearned model briefly on part of the forget set, probe the rest.

Unlearning that only hides knowledge lets a few steps of fine-tuning on *some* forget answers
bring back *other* ones (Deeb & Roger 2024; Łucki et al. 2024). The forget records are split
by a seeded shuffle into a training part (``train_fraction`` or ``n_train`` records) and a
disjoint evaluation part. A copy of the model (LoRA adapters merged first) is fine-tuned with
the ``sft`` method through the training engine, and the evaluation part is asked before
(``steps=0``) and after (``steps=N``) relearning. With ``cross`` a second copy is fine-tuned on
the evaluation part and asked the training part, so every forget question is probed once and the
rate does not hang on which half the split drew (docs/demo.md, session 22: on the demo one
split's mean recall after relearning differed from the other's by 0.15). The recovery is the
rise in success rate and in ``details["mean_recall"]``; it is knowledge kept as far as it exceeds
what the same steps teach a model that never learned the forget set (``scripts/relearn_curve.py``).
The evaluated model itself is never modified.

Defaults are CPU-friendly (10 steps of 4 records, full fine-tuning at lr 1e-5); ``lora`` trains
an adapter instead, as a cheap attacker would.
"""

from __future__ import annotations

import contextlib
import copy
import random
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from harmonia.attacks.base import (
    Attack,
    AttackParams,
    AttackSettings,
    EntryBuilder,
    SettingOutcome,
    register_attack,
    skipped_entry,
)
from harmonia.config import LoraConfig, TrainConfig
from harmonia.data.schema import QARecord
from harmonia.errors import ConfigError
from harmonia.evaluation.results import AttackEntry
from harmonia.evaluation.scoring import generate_answers
from harmonia.evaluation.sharding import active_processes


class RelearnParams(AttackParams):
    steps: int = Field(10, gt=0)
    lr: float = Field(1e-5, gt=0)
    batch_size: int = Field(4, gt=0)
    train_fraction: float = Field(0.5, gt=0, lt=1)
    n_train: int | None = Field(None, ge=1)
    max_length: int = Field(256, gt=8)
    lora: LoraConfig | None = None
    seed: int = 0
    cross: bool = False
    work_dir: Path | None = None


def split_forget(
    records: Sequence[QARecord], *, n_train: int, seed: int
) -> tuple[list[QARecord], list[QARecord]]:
    """A seeded split into (train, held out), each kept in input order."""
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    chosen = set(order[:n_train])
    return (
        [r for i, r in enumerate(records) if i in chosen],
        [r for i, r in enumerate(records) if i not in chosen],
    )


def attacker_copy(model: Any) -> Any:
    """A trainable copy of ``model``; a PEFT model is merged first, so the attacker tunes real weights."""
    clone = copy.deepcopy(model)
    if callable(getattr(clone, "merge_and_unload", None)):
        clone = clone.merge_and_unload()
    return clone


@contextlib.contextmanager
def _run_dir(work_dir: Path | None) -> Iterator[Path]:
    # The engine writes a training log and TensorBoard events; without a work_dir they are
    # thrown away with a temporary folder.
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
        yield work_dir
        return
    with tempfile.TemporaryDirectory(prefix="harmonia-relearn-") as tmp:
        yield Path(tmp)


@register_attack
class RelearnAttack(Attack):
    name = "relearn"
    Params = RelearnParams
    params: RelearnParams

    def n_train(self, n_records: int) -> int:
        n = (
            self.params.n_train
            if self.params.n_train is not None
            else round(self.params.train_fraction * n_records)
        )
        return min(max(n, 1), n_records - 1)

    def relearn(
        self, model: Any, tokenizer: Any, train: list[QARecord], settings: AttackSettings, run_dir: Path
    ) -> tuple[Any, list[dict[str, float]]]:
        """The fine-tuned copy and its training history."""
        from harmonia.methods.base import build_params, get_method
        from harmonia.training.engine import Engine

        # Under a multi-process evaluation the engine trains data-parallel over the same processes
        # (one micro-batch each); its loss does not depend on the split, so neither does the attack.
        processes = active_processes().world
        if self.params.batch_size % processes:
            raise ConfigError(f"attacks.relearn.batch_size {self.params.batch_size} must be a multiple of the "
                              f"{processes} evaluating processes")
        cfg = TrainConfig(
            steps=self.params.steps,
            batch_size=self.params.batch_size,
            micro_batch_size=self.params.batch_size // processes,
            lr=self.params.lr,
            scheduler="constant",
            max_length=self.params.max_length,
            lora=self.params.lora,
            seed=self.params.seed,
            save="none",
            progress=settings.progress,
        )
        method = get_method("sft")
        engine = Engine(cfg, method, build_params(method, {}), attacker_copy(model), tokenizer, run_dir)
        result = engine.train(train)
        relearned = engine.accelerator.unwrap_model(engine.model)
        relearned.eval()
        return relearned, result.history

    def run(
        self, model: Any, tokenizer: Any, records: Sequence[QARecord], settings: AttackSettings | None = None
    ) -> AttackEntry:
        settings = settings or AttackSettings()
        targets = self.targets(records)
        if len(targets) < 2:
            return skipped_entry(
                f"relearning needs at least 2 QA records with roles {self.params.roles} "
                f"(one to train on, one to probe), got {len(targets)}",
                targets,
            )
        train, held = split_forget(targets, n_train=self.n_train(len(targets)), seed=self.params.seed)
        # each fold: (records relearned, records probed after)
        folds = [(train, held), (held, train)] if self.params.cross else [(train, held)]
        probed = [r for _, probe in folds for r in probe]
        answer_kw = {
            "system": settings.system,
            "max_new_tokens": self.max_new_tokens(settings),
            "batch_size": settings.batch_size,
            "stop": settings.stop,
            "progress": settings.progress,
        }
        before = generate_answers(model, tokenizer, probed, description="relearn: before", **answer_kw)
        after: list[str] = []
        fold_details: list[dict[str, Any]] = []
        for i, (fit, probe) in enumerate(folds):
            work_dir = self.params.work_dir
            if work_dir is not None and len(folds) > 1:
                work_dir = work_dir / f"fold{i}"
            with _run_dir(work_dir) as run_dir:
                relearned, history = self.relearn(model, tokenizer, fit, settings, run_dir)
                after += generate_answers(relearned, tokenizer, probe, description="relearn: after", **answer_kw)
            del relearned
            fold_details.append({"train_ids": [r.id for r in fit],
                                 "final_loss": history[-1]["loss"] if history else None})
        builder = EntryBuilder(probed, self.threshold(settings), settings.use_stemmer)
        golds = [r.answer for r in probed]
        ids = [r.id for r in probed]
        builder.add("steps=0", SettingOutcome(ids=ids, generations=before, golds=golds))
        builder.add(f"steps={self.params.steps}", SettingOutcome(ids=ids, generations=after, golds=golds))
        losses = [f["final_loss"] for f in fold_details]
        extra = {"folds": fold_details} if len(folds) > 1 else {}
        return builder.build(
            train_ids=fold_details[0]["train_ids"],
            steps=self.params.steps,
            lr=self.params.lr,
            lora=self.params.lora is not None,
            # the folds' mean: each fold trains a fresh copy for the same steps
            final_loss=None if None in losses else sum(losses) / len(losses),
            **extra,
        )
