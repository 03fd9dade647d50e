"""Content hashes that key cached artefacts (targets, teacher caches) on what produced them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from harmonia.data.schema import QARecord


def model_fingerprint(path: str | Path) -> str:
    """Identify a local model directory by its weight files' names, sizes and mtimes (cheap, no read)."""
    p = Path(path)
    if not p.is_dir():
        return str(path)  # a hub id: its name is the identity
    parts = sorted(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}"
                   for f in p.iterdir() if f.suffix in {".safetensors", ".json", ".bin"})
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


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
        return obj.model_dump_json()
    if isinstance(obj, (list, tuple)):
        return "[" + ",".join(_canonical(o) for o in obj) + "]"
    return json.dumps(obj, sort_keys=True, default=str)
