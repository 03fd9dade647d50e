"""Weight-space interpolation of a trained model with its start (WiSE-FT, Wortsman et al., 2022).

``train.update_scale = s`` keeps the fraction ``s`` of what training changed: every trained
weight becomes ``start + s * (trained - start)``. WiSE-FT found the interpolated model more robust
to distribution shift than the fine-tuned one; in unlearning it gives back part
of the collateral damage on what should be kept while the forgetting, learned sharply, survives
(docs/demo.md, session 18). It costs no training: the demo's 30 steps stay 30.

For a LoRA adapter the interpolation of the merged weights ``W + B A`` is the adapter with ``B``
scaled by ``s`` and ``A`` as trained, which holds when ``B`` starts at zero (peft's default).

:func:`interpolate_folders` does the same to saved models (``harmonia interpolate``): another scale
without training again, or any scale for a run whose weights FSDP or DeepSpeed sharded.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from harmonia.errors import ConfigError
from harmonia.io import atomic_path

INDEX_FILE = "model.safetensors.index.json"


def interpolated(begin: Tensor, trained: Tensor, scale: float) -> Tensor:
    """``begin + scale * (trained - begin)``, in the tensors' dtype."""
    return begin + scale * (trained - begin)


def _is_lora(name: str, kind: str) -> bool:
    return f".lora_{kind}." in name or name.endswith(f".lora_{kind}")


def start_weights(model: Any) -> dict[str, Tensor]:
    """A copy of the weights :func:`interpolate_` will move: the trainable ones, except LoRA ``A``.

    Raises if a LoRA ``B`` does not start at zero, where scaling it is not an interpolation.
    """
    start = {}
    for name, param in model.named_parameters():
        if not param.requires_grad or _is_lora(name, "A"):
            continue
        if _is_lora(name, "B") and bool(param.detach().any()):
            raise ConfigError(f"train.update_scale: the LoRA weight {name} does not start at zero, so scaling "
                              "the adapter would not interpolate the merged weights; use update_scale 1")
        start[name] = param.detach().to("cpu", copy=True)  # off the accelerator: a copy of every trained weight
    return start


@torch.no_grad()
def interpolate_(model: Any, start: dict[str, Tensor], scale: float) -> int:
    """Set each weight named in ``start`` to ``start + scale * (weight - start)``; returns how many."""
    params = dict(model.named_parameters())
    missing = sorted(set(start) - set(params))
    if missing:
        raise ValueError(f"interpolation: the model has no parameters {missing[:3]}")
    for name, begin in start.items():
        param = params[name]
        param.copy_(interpolated(begin.to(param.device), param, scale))
    return len(start)


def weight_files(folder: Path) -> dict[str, Path]:
    """Which safetensors file of a saved model holds each weight (one file, or shards with an index)."""
    if (folder / "adapter_config.json").is_file():
        raise ConfigError(f"{folder}: an adapter folder; interpolate a merged model (train.save: merged)")
    index = folder / INDEX_FILE
    if index.is_file():
        return {name: folder / file for name, file in json.loads(index.read_text())["weight_map"].items()}
    single = folder / "model.safetensors"
    if not single.is_file():
        raise ConfigError(f"{folder}: no model.safetensors or {INDEX_FILE} (a saved transformers model folder)")
    with safe_open(str(single), framework="pt") as fh:
        return dict.fromkeys(fh.keys(), single)


def interpolate_folders(start: str | Path, trained: str | Path, out: str | Path, scale: float) -> int:
    """Write ``trained`` to ``out`` with every weight at ``start + scale * (trained - start)``.

    The other files (config, tokenizer, shard index) are copied from ``trained``. Every weight of
    ``trained`` must exist in ``start`` with the same shape. Returns how many weights moved.
    """
    if not 0 < scale <= 1:
        raise ConfigError(f"scale {scale}: keep a fraction of the update in (0, 1]")
    start, trained = Path(start), Path(trained)
    begin_at, trained_at = weight_files(start), weight_files(trained)
    if missing := sorted(set(trained_at) - set(begin_at)):
        raise ConfigError(f"{start}: no weights {missing[:3]} of {trained}; interpolate a model with its own start")
    moved = 0
    with contextlib.ExitStack() as stack, atomic_path(out, directory=True) as tmp:
        # each start shard opened once; its tensors are read one at a time (a 70B start is not loaded whole)
        begins = {file: stack.enter_context(safe_open(str(file), framework="pt")) for file in set(begin_at.values())}
        shutil.copytree(trained, tmp, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
        for file in sorted(set(trained_at.values())):
            weights = load_file(file)
            for name, weight in weights.items():
                begin = begins[begin_at[name]].get_tensor(name)
                if begin.shape != weight.shape or begin.dtype != weight.dtype:
                    raise ConfigError(f"{name}: {tuple(begin.shape)} {begin.dtype} in {start}, "
                                      f"{tuple(weight.shape)} {weight.dtype} in {trained}")
                if not torch.equal(begin, weight):
                    weights[name] = interpolated(begin, weight, scale)
                    moved += 1
            save_file(weights, tmp / file.name, metadata={"format": "pt"})
    return moved


__all__ = ["interpolate_", "interpolate_folders", "interpolated", "start_weights", "weight_files"]
