"""Content hashes that key cached artefacts (targets, teacher caches) on what produced them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from harmonia.config import TrainConfig
from harmonia.data.schema import QARecord
from harmonia.io import harmonia_home


def model_dir_fingerprint(path: str | Path) -> str:
    """Identify a local model directory by its weight files' names, sizes and mtimes (cheap, no read)."""
    p = Path(path)
    if not p.is_dir():
        return str(path)  # a hub id: its name is the identity
    parts = sorted(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}"
                   for f in p.iterdir() if f.suffix in {".safetensors", ".json", ".bin"})
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


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


# Settings added to a section after caches keyed on it existed: left out of the key while they
# hold their default, so that adding them did not orphan every cached target (hours of CPU).
KEYED_WHEN_SET: dict[type[BaseModel], tuple[str, ...]] = {TrainConfig: ("attention",)}


def _canonical(obj: Any) -> str:
    if isinstance(obj, QARecord):
        return obj.model_dump_json()
    if isinstance(obj, BaseModel):
        fields = type(obj).model_fields
        unset = {name for name in KEYED_WHEN_SET.get(type(obj), ()) if getattr(obj, name) == fields[name].default}
        return obj.model_dump_json(exclude=unset or None)
    if isinstance(obj, (list, tuple)):
        return "[" + ",".join(_canonical(o) for o in obj) + "]"
    return json.dumps(obj, sort_keys=True, default=str)
