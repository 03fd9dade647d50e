"""MUSE-Books (muse-bench/MUSE-Books, the muse_bench repo's ``data/hp`` layout).

The Harry Potter text is copyrighted and never shipped with harmonia: every function takes the
directory the user downloaded (the one holding ``knowmem/``, ``verbmem/``, ``privleak/``, ``raw/``).

- knowmem: QA (``question``, ``answer``); splits ``forget``, ``retain`` (file ``retain2_qa``) and
  their few-shot ``*_icl`` sets.
- verbmem: ``{prompt, gt}``; the question asks to continue the prompt, the answer is ``gt``, and
  ``metadata["prompt"]`` keeps the raw prompt for verbatim-memorisation metrics.
- raw and privleak: documents (strings) for text->QA conversion or membership-inference tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from harmonia.data.readers import get_str, make_record, read_json, read_text, require_object
from harmonia.data.schema import QARecord, Role
from harmonia.data.standardise import continuation_question
from harmonia.errors import DataError

SOURCE = "muse_books"
KNOWMEM_FILES = {
    "forget": "forget_qa",
    "retain": "retain2_qa",
    "forget_icl": "forget_qa_icl",
    "retain_icl": "retain2_qa_icl",
}
RAW_SPLITS = ("forget", "retain1", "retain2", "holdout")
PRIVLEAK_SPLITS = ("forget", "retain2", "holdout")


def _choose(split: str, allowed: tuple[str, ...] | dict, what: str, directory: Path) -> None:
    if split not in allowed:
        raise DataError(
            directory, f"unknown MUSE {what} split '{split}'; use one of {sorted(allowed)}", field="split"
        )


def load_muse_knowmem(directory: str | Path, *, role: Role, split: str = "forget") -> list[QARecord]:
    directory = Path(directory)
    _choose(split, KNOWMEM_FILES, "knowmem", directory)
    path = directory / "knowmem" / f"{KNOWMEM_FILES[split]}.json"
    rows = read_json(path)
    if not isinstance(rows, list):
        raise DataError(path, "expected a JSON list of {question, answer} objects")
    records = []
    for i, row in enumerate(rows):
        ref = f"index {i}"
        row = require_object(row, path, ref)
        records.append(
            make_record(
                path,
                ref,
                id=f"{SOURCE}/knowmem/{split}/{i}",
                question=get_str(row, "question", path, ref),
                answer=get_str(row, "answer", path, ref),
                role=role,
                source=SOURCE,
                group=f"knowmem_{split}",
                metadata={"subset": "knowmem", "split": split, "row": i},
            )
        )
    return records


def load_muse_verbmem(directory: str | Path, *, role: Role, split: str = "forget") -> list[QARecord]:
    path = Path(directory) / "verbmem" / f"{split}.json"
    rows = read_json(path)
    if not isinstance(rows, list):
        raise DataError(path, "expected a JSON list of {prompt, gt} objects")
    records = []
    for i, row in enumerate(rows):
        ref = f"index {i}"
        row = require_object(row, path, ref)
        prompt = get_str(row, "prompt", path, ref)
        records.append(
            make_record(
                path,
                ref,
                id=f"{SOURCE}/verbmem/{split}/{i}",
                question=continuation_question(prompt),
                answer=get_str(row, "gt", path, ref),
                role=role,
                source=SOURCE,
                group=f"verbmem_{split}",
                metadata={"subset": "verbmem", "split": split, "row": i, "prompt": prompt},
            )
        )
    return records


def _string_list(path: Path) -> list[str]:
    rows = read_json(path)
    if not isinstance(rows, list):
        raise DataError(path, "expected a JSON list of strings")
    for i, row in enumerate(rows):
        if not isinstance(row, str):
            raise DataError(path, f"expected a string, got {type(row).__name__}", record=f"index {i}")
    return rows


def load_muse_raw(
    directory: str | Path, *, split: str = "forget", fmt: Literal["auto", "json", "txt"] = "auto"
) -> list[str]:
    """Raw documents: ``raw/<split>.json`` (a list of documents) or ``raw/<split>.txt`` (one document).

    ``auto`` prefers the JSON form, whose document boundaries are meaningful, and falls back to
    the text file (the published snapshot lacks ``raw/forget.json``).
    """
    directory = Path(directory)
    _choose(split, RAW_SPLITS, "raw", directory)
    json_path, txt_path = directory / "raw" / f"{split}.json", directory / "raw" / f"{split}.txt"
    if fmt == "json" or (fmt == "auto" and json_path.is_file()):
        return _string_list(json_path)
    text = read_text(txt_path)
    if not text.strip():
        raise DataError(txt_path, "empty text file")
    return [text]


def load_muse_privleak(directory: str | Path, *, split: str = "forget") -> list[str]:
    directory = Path(directory)
    _choose(split, PRIVLEAK_SPLITS, "privleak", directory)
    return _string_list(directory / "privleak" / f"{split}.json")
