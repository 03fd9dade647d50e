"""Load a model and tokenizer from one spec string.

Specs, tried in this order:

- ``smollm2-135m-instruct`` (also ``embedded``, ``default``): the embedded default model;
- a harmonia run directory (holds ``model/``) or any local Hugging Face model directory;
- a LoRA adapter directory (``adapter_config.json``): base model plus adapter;
- a path to a ``.gguf`` file (dequantised; converted once into the cache);
- otherwise a Hugging Face hub id, which needs the network and is never the default.

Loading is safe by default: safetensors only, ``trust_remote_code`` only when asked.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harmonia.errors import HarmoniaError
from harmonia.io import harmonia_home
from harmonia.models.embedded import EMBEDDED_NAME, convert_gguf, ensure_embedded

EMBEDDED_MODEL = EMBEDDED_NAME
_EMBEDDED_ALIASES = {EMBEDDED_NAME, "embedded", "default"}
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


@dataclass
class LoadedModel:
    """A causal LM, its tokenizer, and where they came from."""

    model: Any
    tokenizer: Any
    spec: str
    path: str


def resolve_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    try:
        return _DTYPES[name]
    except KeyError:
        raise HarmoniaError(f"unknown dtype '{name}'; use one of {sorted(_DTYPES)}") from None


def resolve_model_path(spec: str) -> str:
    """Map a spec string to something ``from_pretrained`` accepts (a local folder or a hub id)."""
    if spec in _EMBEDDED_ALIASES:
        return str(ensure_embedded())
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise HarmoniaError(f"GGUF file not found: {path}")
        digest = hashlib.sha256(f"{path.resolve()}:{path.stat().st_size}:{path.stat().st_mtime_ns}"
                                .encode()).hexdigest()[:16]
        dest = harmonia_home() / "models" / f"gguf-{path.stem}-{digest}"
        if not (dest / "config.json").is_file():
            convert_gguf(path, dest)
        return str(dest)
    if path.is_dir():
        if (path / "model" / "config.json").is_file() or (path / "model" / "adapter_config.json").is_file():
            return str(path / "model")  # a harmonia run directory
        if (path / "config.json").is_file() or (path / "adapter_config.json").is_file():
            return str(path)
        raise HarmoniaError(f"{path} is a folder but holds no config.json or adapter_config.json")
    if path.exists() or spec.startswith((".", "/", "~")):
        raise HarmoniaError(f"model path not found or not a model: {spec}")
    from harmonia.models.presets import preset_hub_id

    return preset_hub_id(spec) or spec  # a hub id


def load_tokenizer(spec: str, *, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    path = resolve_model_path(spec)
    adapter_cfg = Path(path) / "adapter_config.json"
    if adapter_cfg.is_file() and not (Path(path) / "tokenizer_config.json").is_file():
        path = json.loads(adapter_cfg.read_text())["base_model_name_or_path"]
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    return prepare_tokenizer(tokenizer)


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Give the tokenizer a pad token; generation pads on the left, training on the right."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(spec: str = EMBEDDED_MODEL, *, dtype: str | torch.dtype = "float32", device: str = "cpu",
               trust_remote_code: bool = False) -> LoadedModel:
    """Load a causal LM and its tokenizer from a spec string (see module docstring)."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(spec)
    torch_dtype = resolve_dtype(dtype)
    try:
        if (Path(path) / "adapter_config.json").is_file():
            from peft import AutoPeftModelForCausalLM

            model = AutoPeftModelForCausalLM.from_pretrained(
                path, dtype=torch_dtype, use_safetensors=True, trust_remote_code=trust_remote_code)
        else:
            model = AutoModelForCausalLM.from_pretrained(
                path, dtype=torch_dtype, use_safetensors=True, trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise HarmoniaError(f"could not load model '{spec}' (resolved to '{path}'): {exc}") from exc
    model.to(device)
    model.eval()
    return LoadedModel(model=model, tokenizer=load_tokenizer(spec, trust_remote_code=trust_remote_code),
                       spec=spec, path=path)
