"""Paraphrased (or translated) forget questions, when the data provides them.

A model that only learnt to refuse the exact wording of a forget question may still answer a
rewording. The rewordings come from record metadata: TOFU's perturbed splits carry
``paraphrased_question`` (loaded by the TOFU loader); any loader may add more under the keys in
``keys`` (a string or a list of strings each; ``translated_question`` by convention for
translations). Each key is one setting; success is scored against the whole gold answer. With
no rewording in the data the attack is skipped, with the reason in ``details["skipped"]``.
"""

from __future__ import annotations

from collections.abc import Sequence
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
from harmonia.data.schema import QARecord
from harmonia.errors import DataError
from harmonia.evaluation.results import AttackEntry
from harmonia.models.chat import render_prompt


class ParaphraseParams(AttackParams):
    keys: list[str] = Field(default_factory=lambda: ["paraphrased_question", "translated_question"])


def rewordings(record: QARecord, key: str) -> list[str]:
    """The record's rewordings under ``metadata[key]`` (none when absent)."""
    value = record.metadata.get(key)
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(q, str) for q in items):
        raise DataError(
            None, "expected a string or a list of strings", record=record.id, field=f"metadata.{key}"
        )
    return [q for q in items if q.strip()]


@register_attack
class ParaphraseAttack(Attack):
    name = "paraphrase"
    Params = ParaphraseParams
    params: ParaphraseParams

    def run(
        self, model: Any, tokenizer: Any, records: Sequence[QARecord], settings: AttackSettings | None = None
    ) -> AttackEntry:
        settings = settings or AttackSettings()
        targets = self.targets(records)
        probes = [(key, r, q) for key in self.params.keys for r in targets for q in rewordings(r, key)]
        if not probes:
            return skipped_entry(
                f"no record with roles {self.params.roles} has a rewording under metadata "
                f"keys {self.params.keys}",
                targets,
            )
        prompts = [
            render_prompt(tokenizer, q, system=settings.system, prefill=r.prefill) for _, r, q in probes
        ]
        gens = self.generate(model, tokenizer, prompts, settings)
        builder = EntryBuilder(targets, self.threshold(settings), settings.use_stemmer)
        questions: dict[str, list[str]] = {}
        for key in dict.fromkeys(k for k, _, _ in probes):
            idx = [i for i, p in enumerate(probes) if p[0] == key]
            leaks = builder.add(
                key,
                SettingOutcome(
                    ids=[probes[i][1].id for i in idx],
                    generations=[gens[i] for i in idx],
                    golds=[probes[i][1].answer for i in idx],
                ),
            )
            # Aligned with details["example_ids"][key], like every per-setting list.
            questions[key] = [probes[i][2] for i, leak in zip(idx, leaks, strict=True) if leak is not None]
        return builder.build(questions=questions)
