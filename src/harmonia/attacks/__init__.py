"""Probing attacks: does forgotten knowledge come back under prefilling, jailbreaks, rewording or relearning?

Each attack is a small class (``harmonia.attacks.base.Attack``) registered by name, with
pydantic parameters and ``run(model, tokenizer, records, settings) -> AttackEntry``:

- ``prefill``: the first k gold-answer tokens, or an affirmative opener, in the assistant turn;
- ``jailbreak``: DAN-style and in-the-wild templates wrapped around the question;
- ``paraphrase``: reworded (or translated) questions from record metadata;
- ``relearn``: brief fine-tuning on part of the forget set, then probing the rest;
- ``mcq_prefill``: an answer opener before the option letter of multiple-choice questions.
"""

from harmonia.attacks import jailbreak, mcq_prefill, paraphrase, prefill, relearn  # noqa: F401  (registers)
from harmonia.attacks.base import (
    Attack,
    AttackParams,
    AttackSettings,
    get_attack,
    list_attacks,
    register_attack,
)

__all__ = ["Attack", "AttackParams", "AttackSettings", "get_attack", "list_attacks", "register_attack"]
