"""Refusal answers ("I don't know" variants) that refusal SFT and IdkDPO train forget questions on.

The list is TOFU's ``idontknow.jsonl`` (Maini et al. 2024, arXiv 2401.06121), shipped as a
package resource. Each record gets one refusal chosen by a hash of its id, so the target is the
same in every run, process and epoch, without a random generator to keep in step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from pydantic import Field

from harmonia.data.loaders.tofu import load_tofu_idk
from harmonia.data.paths import resolve_path
from harmonia.methods.forget_retain import RetainParams

DEFAULT_REFUSALS = "pkg:data/tofu/idontknow.jsonl"


class RefusalParams(RetainParams):
    refusals: str = Field(DEFAULT_REFUSALS, min_length=1,
                          description="refusal answers, one per line: 'pkg:...', absolute, or relative "
                                      "to the working directory")


def load_refusals(spec: str) -> list[str]:
    """The non-blank lines of the refusal file ``spec`` (raises DataError naming the file)."""
    return load_tofu_idk(resolve_path(spec))


def pick_refusal(record_id: str, refusals: Sequence[str]) -> str:
    """The refusal for ``record_id``: stable across runs (unlike ``hash()``, which is salted)."""
    if not refusals:
        raise ValueError("no refusal answers to pick from")
    digest = hashlib.sha256(record_id.encode("utf-8")).digest()
    return refusals[int.from_bytes(digest[:8], "big") % len(refusals)]
