"""Shared encoders from QA records to token features, used by every method."""

from __future__ import annotations

from harmonia.data.schema import ROLES, QARecord
from harmonia.methods.base import Example, MethodContext
from harmonia.models.chat import encode_example, render_prompt


def encode_qa(record: QARecord, ctx: MethodContext, *, answer: str | None = None,
              system: str | None = None, prefix: str = "") -> Example:
    """Chat-format ``record`` (question, prefill) with ``answer`` (default: the gold answer) as target.

    ``prefix`` namespaces the keys, e.g. ``"rejected_"`` for the second sequence of a DPO pair.
    """
    prompt = render_prompt(ctx.tokenizer, record.question, system=system, prefill=record.prefill)
    enc = encode_example(ctx.tokenizer, prompt, record.answer if answer is None else answer,
                         max_length=ctx.max_length)
    return {f"{prefix}input_ids": enc.input_ids, f"{prefix}labels": enc.labels,
            f"{prefix}attention_mask": [1] * len(enc.input_ids)}


def with_role(example: Example, record: QARecord) -> Example:
    example["role_id"] = ROLES.index(record.role)
    return example
