"""Token counting and splitting through any tokenizer with ``encode``/``decode``.

Data code never adds special tokens (BOS/EOS): lengths and prefixes are about the text itself, and
the chat template adds the specials when a prompt is rendered. Any Hugging Face tokenizer works;
:class:`WhitespaceTokenizer` is an explicit word-level stand-in for configs that count words.
"""

from __future__ import annotations

import re
from typing import Any, Protocol


class TextTokenizer(Protocol):
    """What the data layer needs from a tokenizer (a Hugging Face tokenizer satisfies it)."""

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, ids: list[int], skip_special_tokens: bool = ...) -> str: ...


def encode_plain(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` without BOS/EOS."""
    return list(tokenizer.encode(text, add_special_tokens=False))


def decode_plain(tokenizer: Any, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True)


def count_tokens(tokenizer: Any, text: str) -> int:
    return len(encode_plain(tokenizer, text)) if text else 0


class WhitespaceTokenizer:
    """Words as tokens: ids index a vocabulary grown on the fly; decode joins with single spaces.

    Used when a config counts prefill lengths in words (``prefill.tokenizer: whitespace``) and in
    tests. Decoding is exact only for text whose words are separated by single spaces, which the
    prefill splitter checks.
    """

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._words: list[str] = []

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        out = []
        for word in re.findall(r"\S+", text):
            if word not in self._ids:
                self._ids[word] = len(self._words)
                self._words.append(word)
            out.append(self._ids[word])
        return out

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return " ".join(self._words[i] for i in ids)
