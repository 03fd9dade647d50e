"""Chat formatting with explicit control of the system turn.

Everything goes through the tokenizer's chat template. ``system=None`` keeps the template's own
behaviour (SmolLM2 injects "You are a helpful AI assistant named SmolLM..." when no system turn is
given): that is what a user of the deployed model sends, so it is the student's input. The
teacher's instruction replaces the system turn. ``prefill`` is text already written at the start
of the assistant turn (a prefilling attack, or a prefill-augmented training example).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def render_prompt(tokenizer: Any, question: str, *, system: str | None = None, prefill: str = "",
                  history: list[tuple[str, str]] | None = None) -> str:
    """Render the text up to where the model continues: chat turns, assistant header, prefill.

    ``history`` holds earlier (question, answer) turns, used for few-shot demonstrations.
    """
    messages: list[dict[str, str]] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    for q, a in history or []:
        messages.append({"role": "user", "content": q})
        messages.append({"role": "assistant", "content": a})
    messages.append({"role": "user", "content": question})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text + prefill


@dataclass(frozen=True)
class EncodedExample:
    """Token ids of one prompt + completion; ``labels`` is -100 on the prompt."""

    input_ids: list[int]
    labels: list[int]

    @property
    def prompt_length(self) -> int:
        return next((i for i, lab in enumerate(self.labels) if lab != -100), len(self.labels))


def encode_example(tokenizer: Any, prompt: str, completion: str, *, max_length: int | None = None,
                   add_eos: bool = True) -> EncodedExample:
    """Tokenise prompt and completion separately so the boundary is exact, then concatenate.

    Only completion tokens (and the end-of-turn token) are targets. When ``max_length`` cuts the
    sequence, the completion is truncated from the right and the prompt is kept whole, because a
    prompt without its question or prefill would teach the wrong mapping.
    """
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] if completion else []
    if add_eos and tokenizer.eos_token_id is not None:
        completion_ids = [*completion_ids, tokenizer.eos_token_id]
    if max_length is not None and len(prompt_ids) + len(completion_ids) > max_length:
        keep = max(max_length - len(prompt_ids), 0)
        completion_ids = completion_ids[:keep]
    return EncodedExample(input_ids=prompt_ids + completion_ids,
                          labels=[-100] * len(prompt_ids) + list(completion_ids))
