"""Content hashes that key cached artefacts (targets, teacher caches) on what produced them."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from harmonia.config import TrainConfig
from harmonia.data.schema import QARecord
from harmonia.io import harmonia_home

MODEL_FILES = (".safetensors", ".json", ".bin")


def model_dir_fingerprint(path: str | Path) -> str:
    """Identify a local model directory by the content of its weight and config files.

    Content, not file dates: a model converted or copied again (the embedded GGUF converted in a
    new ``$HARMONIA_HOME``, a cache restored by ``cp``) keys the same targets, evaluations and
    runs, which would otherwise be recomputed (an hour of CPU for the demo's targets). Each file is
    hashed once per process while its size and mtime stay the same (~0.3 s per 540 MB file here).
    """
    p = Path(path)
    if not p.is_dir():
        return str(path)  # a hub id: its name is the identity
    h = hashlib.sha256()
    for f in _model_files(p):
        stat = f.stat()
        h.update(f"{f.name}:{_file_digest(str(f.resolve()), stat.st_size, stat.st_mtime_ns)}\n".encode())
    return h.hexdigest()


def legacy_model_dir_fingerprint(path: str | Path) -> str:
    """The fingerprint before content hashing (names, sizes and mtimes): caches keyed on it are
    still found (:func:`model_keys`) and moved to their content key."""
    p = Path(path)
    if not p.is_dir():
        return str(path)
    parts = sorted(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in _model_files(p))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _model_files(p: Path) -> list[Path]:
    return sorted((f for f in p.iterdir() if f.suffix in MODEL_FILES and f.is_file()), key=lambda f: f.name)


@functools.lru_cache(maxsize=256)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    # size and mtime are part of the memo key only: a file rewritten in place is hashed again
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def model_keys(path: str | Path, *parts: Any) -> tuple[str, str]:
    """16-hex cache keys of what the model at ``path`` and ``parts`` produce: the content key, then
    the legacy key that caches written before it carry (see :func:`adopt_legacy`)."""
    return (fingerprint(model_dir_fingerprint(path), *parts)[:16],
            fingerprint(legacy_model_dir_fingerprint(path), *parts)[:16])


def adopt_legacy(current: Path, legacy: Path) -> None:
    """Move a cache entry found under its legacy key to ``current`` (when nothing is there yet).

    A rename keeps the files' mtimes, so the legacy keys of what was made from them still match.
    """
    if current.exists() or not legacy.exists() or legacy == current:
        return
    current.parent.mkdir(parents=True, exist_ok=True)
    os.replace(legacy, current)


def cache_path(locate: Callable[[str], Path], model: str | Path, *parts: Any) -> Path:
    """``locate(key)`` for the content key of what the model at ``model`` and ``parts`` produce, an
    entry found under the legacy key (:func:`model_keys`) moved there first."""
    key, legacy = model_keys(model, *parts)
    current = locate(key)
    adopt_legacy(current, locate(legacy))
    return current


def weights_settings(train: TrainConfig) -> TrainConfig:
    """The training settings that determine the weights: display, checkpointing and the output
    folder do not, so they are normalised away before hashing."""
    return train.model_copy(update={"output_dir": None, "progress": False, "log_every": 1,
                                    "checkpoint_every": 0, "keep_checkpoints": 1})


def cached_model_run(label: str, key: str) -> Path:
    """The run folder of a cached fine-tuning under ``$HARMONIA_HOME/targets``."""
    return harmonia_home() / "targets" / f"{label}-{key}"


def finished_model(run_dir: Path) -> bool:
    """Whether a run folder holds its final model (an interrupted run does not)."""
    return (run_dir / "model" / "config.json").is_file()


def fingerprint(*parts: Any) -> str:
    """Stable sha256 of records, pydantic configs and plain values."""
    h = hashlib.sha256()
    for part in parts:
        h.update(_canonical(part).encode())
        h.update(b"\x00")
    return h.hexdigest()


def _canonical(obj: Any) -> str:
    if isinstance(obj, QARecord):
        return obj.model_dump_json()
    if isinstance(obj, BaseModel):
        # Settings a section declares in ``keyed_when_set`` were added after caches keyed on it
        # existed: left out of the key while they hold their default, so that adding them did not
        # orphan every cached target (hours of CPU).
        fields = type(obj).model_fields
        keyed_when_set = getattr(type(obj), "keyed_when_set", ())
        unset = {name for name in keyed_when_set if getattr(obj, name) == fields[name].default}
        return obj.model_dump_json(exclude=unset or None)
    if isinstance(obj, (list, tuple)):
        return "[" + ",".join(_canonical(o) for o in obj) + "]"
    return json.dumps(obj, sort_keys=True, default=str)
