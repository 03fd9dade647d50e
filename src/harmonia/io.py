"""Atomic file output: nothing half-written is ever left at the destination."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harmonia.errors import HarmoniaError


@contextlib.contextmanager
def atomic_path(dest: str | Path, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; rename it onto ``dest`` only on success.

    The temporary lives in the same folder so the final ``os.replace`` is atomic on POSIX.
    For directories an existing destination is replaced as a whole.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        os.close(fd)
        tmp = Path(name)
        # mkstemp creates 0600; outputs are ordinary files, readable as the umask allows.
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)
    try:
        yield tmp
        if directory and dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException:
        if directory:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(dest: str | Path, text: str) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(dest)


def section_markers(name: str) -> tuple[str, str]:
    """The HTML comments that delimit a generated section ``name`` in a markdown file."""
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def check_section(dest: str | Path, name: str) -> None:
    """Raise unless :func:`write_section_atomic` can write section ``name`` into ``dest`` (call it
    before long work, so a missing marker is reported before the results it would hold exist)."""
    path = Path(dest)
    if path.exists():
        _split_section(path, path.read_text(encoding="utf-8"), name)


def _split_section(path: Path, current: str, name: str) -> tuple[str, str]:
    """``(before, after)`` the marked section ``name`` of ``current`` (the text of ``path``)."""
    begin, end = section_markers(name)
    if current.count(begin) != 1 or current.count(end) != 1 or current.index(begin) > current.index(end):
        raise HarmoniaError(f"{path}: expected one '{begin}' before one '{end}' around the section to replace; "
                            "add them, or write to a new file (nothing was changed)")
    head, rest = current.split(begin)
    return head, rest.split(end, 1)[1].removeprefix("\n")


def write_section_atomic(dest: str | Path, name: str, text: str) -> Path:
    """Put ``text`` between the markers of section ``name`` in ``dest``, keeping the rest of the file.

    A generated table lives inside hand-written prose (docs/ablations.md); rewriting the whole file
    would lose the prose. A new file gets the marked section alone; an existing file without
    exactly one pair of the markers is left as it is, and the error names the file and the markers.
    """
    begin, end = section_markers(name)
    block = f"{begin}\n{text.rstrip()}\n{end}\n"
    path = Path(dest)
    if not path.exists():
        return write_text_atomic(path, block)
    head, tail = _split_section(path, path.read_text(encoding="utf-8"), name)
    return write_text_atomic(path, head + block + tail)


def write_json_atomic(dest: str | Path, obj: Any) -> Path:
    return write_text_atomic(dest, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def write_jsonl_atomic(dest: str | Path, rows: list[dict[str, Any]]) -> Path:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return write_text_atomic(dest, text)


def harmonia_home() -> Path:
    """Cache root: ``$HARMONIA_HOME`` or ``~/.cache/harmonia``."""
    return Path(os.environ.get("HARMONIA_HOME", Path.home() / ".cache" / "harmonia")).expanduser()
