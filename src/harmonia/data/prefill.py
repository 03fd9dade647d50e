"""Prefill-augmented records: the assistant turn already begun (METHOD.md Part 3, prefill positions).

Two kinds, both copies of a parent record with ``metadata["parent_id"]``:

- ``gold_prefix``: the first k answer tokens are in ``prefill`` and ``answer`` holds the rest, so
  ``prefill + answer == parent.answer`` exactly (``metadata["k"]``). A prefill attack writes
  exactly this, and distilling the teacher's continuation here is what buys robustness to it.
- ``opener``: an affirmative opener ("Sure, here is the answer:") in ``prefill``, the parent's
  answer after it (with one separating space); the openers are listed in
  ``resources/data/prefill_openers.txt``.

Augmented records carry no anchor link of their own; their parent's link finds the neighbour.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harmonia.data.readers import read_text
from harmonia.data.schema import QARecord
from harmonia.data.tokens import decode_plain, encode_plain
from harmonia.errors import DataError


def load_openers(path: str | Path) -> list[str]:
    """One opener per non-blank line; lines starting with ``#`` are comments."""
    openers = [line.strip() for line in read_text(path).splitlines()]
    openers = [o for o in openers if o and not o.startswith("#")]
    if not openers:
        raise DataError(path, "no openers found")
    return openers


def split_answer(answer: str, tokenizer: Any, k: int) -> tuple[str, str] | None:
    """``(prefix, rest)`` with ``prefix`` = the decoded first ``k`` tokens and ``prefix + rest == answer``.

    Returns None when the answer has no more than ``k`` tokens (nothing would be left to
    continue). When decoding does not reproduce the text exactly (a tokenizer that drops a
    leading space, normalises unicode, ...), the character offsets of a fast tokenizer cut the
    original text instead; without offsets the mismatch is an error rather than a silently
    altered answer.
    """
    ids = encode_plain(tokenizer, answer)
    if len(ids) <= k:
        return None
    prefix = decode_plain(tokenizer, ids[:k])
    if prefix and answer.startswith(prefix):
        return prefix, answer[len(prefix) :]
    end = _offset_end(tokenizer, answer, k)
    if end is None:
        raise ValueError(
            f"decoding the first {k} tokens gives {prefix!r}, not a prefix of the answer, "
            "and the tokenizer has no offset mapping"
        )
    return answer[:end], answer[end:]


def _offset_end(tokenizer: Any, text: str, k: int) -> int | None:
    try:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except (TypeError, NotImplementedError, ValueError):
        return None
    offsets = encoded.get("offset_mapping") if hasattr(encoded, "get") else None
    if not offsets or len(offsets) <= k:
        return None
    return int(offsets[k - 1][1])


def gold_prefix_records(records: Sequence[QARecord], tokenizer: Any, ks: Sequence[int]) -> list[QARecord]:
    """For each record and each k, a copy whose first k answer tokens are prefilled (see module doc)."""
    out = []
    for record in records:
        for k in sorted(set(ks)):
            if k < 1:
                raise ValueError(f"prefill k must be >= 1, got {k}")
            try:
                split = split_answer(record.answer, tokenizer, k)
            except ValueError as exc:
                raise DataError(None, str(exc), record=record.id, field="answer") from None
            if split is None:
                continue
            prefix, rest = split
            out.append(
                record.model_copy(
                    deep=True,
                    update={
                        "id": f"{record.id}#prefix{k}",
                        "prefill": record.prefill + prefix,
                        "answer": rest,
                        "anchor_id": None,
                        "anchor_similarity": None,
                        "metadata": {
                            **_parent_metadata(record),
                            "kind": "gold_prefix",
                            "k": k,
                            "parent_id": record.id,
                        },
                    },
                )
            )
    return out


def opener_records(
    records: Sequence[QARecord], openers: Sequence[str], *, per_record: int = 1, seed: int = 0
) -> list[QARecord]:
    """For each record, ``per_record`` openers drawn without replacement by a seeded RNG."""
    if not openers:
        raise ValueError("no openers given")
    per_record = min(per_record, len(openers))
    rng = random.Random(seed)
    out = []
    for record in records:
        for j in sorted(rng.sample(range(len(openers)), per_record)):
            opener = openers[j]
            answer = record.answer if opener[-1:].isspace() or not record.answer else " " + record.answer
            out.append(
                record.model_copy(
                    deep=True,
                    update={
                        "id": f"{record.id}#opener{j}",
                        "prefill": record.prefill + opener,
                        "answer": answer,
                        "anchor_id": None,
                        "anchor_similarity": None,
                        "metadata": {
                            **_parent_metadata(record),
                            "kind": "opener",
                            "opener": j,
                            "parent_id": record.id,
                        },
                    },
                )
            )
    return out


def _parent_metadata(record: QARecord) -> dict:
    """The parent's metadata minus its anchor back-links, which belong to the parent only."""
    return {k: v for k, v in record.metadata.items() if k not in ("anchor_of", "anchor_method")}
