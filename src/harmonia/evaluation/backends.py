"""Where evaluation's greedy generations come from: Hugging Face ``generate`` or vLLM.

Every generation of the evaluation (QA answers, KnowMem, VerbMem, attack probes) goes through
:func:`generate_texts`, which shards the prompts over the evaluating processes
(:mod:`harmonia.evaluation.sharding`) and runs them on the selected backend:

- ``hf`` (default): :func:`harmonia.evaluation.generation.generate`, batched and left-padded;
- ``vllm`` (``pip install 'harmonia[vllm]'``): a vLLM engine on the evaluated model's folder,
  greedy (temperature 0), fed the same token ids (no special tokens added, as the HF path) and
  cut at the same stop strings, ending at the end-of-turn token. Faster on long generations.

Choice when ``generation.backend: vllm`` is set but vLLM is not installed: with
``generation.require_backend: true`` it is an error before any model time is spent; otherwise
a warning names the missing package, the HF backend runs, and ``results.json`` records the
backend that ran (``meta.generation_backend``) and why.

vLLM runs in one process (it manages its own GPUs), and only on the evaluated model: a model
derived during evaluation (the relearning attack's fine-tuned copy) is generated with HF,
since the vLLM engine holds the original weights.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from harmonia.errors import ConfigError
from harmonia.evaluation.generation import generate
from harmonia.evaluation.sharding import map_sharded

log = logging.getLogger(__name__)

Backend = Literal["hf", "vllm"]
VLLM_INSTALL = "pip install 'harmonia[vllm]'"


class TextGenerator(Protocol):
    def __call__(self, prompts: list[str], *, max_new_tokens: int, stop: Sequence[str], progress: bool) -> list[str]:
        ...


@dataclass(frozen=True)
class BackendChoice:
    """The backend that will run and, when it is not the one asked for, why."""

    name: Backend
    reason: str | None = None


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def choose_backend(requested: Backend, *, required: bool, processes: int) -> BackendChoice:
    """Resolve ``generation.backend`` against what is installed and how many processes run."""
    if requested == "hf":
        return BackendChoice("hf")
    if processes > 1:
        # vLLM would start its own workers beside accelerate's process group, one engine per rank.
        raise ConfigError(f"generation.backend vllm runs in one process (vLLM manages its GPUs itself); "
                          f"got {processes} processes: launch without accelerate, or use backend hf")
    if vllm_installed():
        return BackendChoice("vllm")
    message = f"generation.backend is vllm but the package 'vllm' is not installed ({VLLM_INSTALL})"
    if required:
        raise ConfigError(f"{message}; set generation.require_backend=false to fall back to the HF backend")
    log.warning("%s: generating with the HF backend instead", message)
    return BackendChoice("hf", reason=f"{message}: the HF backend ran instead")


class VLLMGenerator:
    """Greedy vLLM generation on a model folder, matching the HF path's inputs and stop handling."""

    def __init__(self, path: str, tokenizer: Any, *, dtype: str, seed: int, gpu_memory_utilization: float) -> None:
        import vllm

        self._vllm = vllm
        self.tokenizer = tokenizer
        self.llm = vllm.LLM(model=path, tokenizer=path, dtype=dtype, seed=seed,
                            gpu_memory_utilization=gpu_memory_utilization, trust_remote_code=False)

    def __call__(self, prompts: list[str], *, max_new_tokens: int, stop: Sequence[str], progress: bool) -> list[str]:
        if not prompts:
            return []
        eos = self.tokenizer.eos_token_id
        params = self._vllm.SamplingParams(
            temperature=0.0, max_tokens=max_new_tokens, stop=[s for s in stop if s] or None,
            # HF generation ends at the tokenizer's end-of-turn token and drops special tokens
            stop_token_ids=[eos] if eos is not None else None, skip_special_tokens=True,
        )
        # Token ids, not text: vLLM would add a BOS to text, the HF path adds no special tokens
        # (the chat template already wrote them).
        inputs = [{"prompt_token_ids": self.tokenizer(p, add_special_tokens=False)["input_ids"]} for p in prompts]
        outputs = self.llm.generate(inputs, params, use_tqdm=progress)
        if len(outputs) != len(prompts):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(prompts)} prompts")
        return [out.outputs[0].text for out in outputs]


@dataclass(frozen=True)
class _Active:
    model: Any
    generator: TextGenerator


_ACTIVE: contextvars.ContextVar[_Active | None] = contextvars.ContextVar("harmonia_eval_generator", default=None)


@contextlib.contextmanager
def generating_with(model: Any, generator: TextGenerator) -> Iterator[None]:
    """Route :func:`generate_texts` calls on ``model`` (that very object) to ``generator``."""
    token = _ACTIVE.set(_Active(model, generator))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def generate_texts(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 16,
    stop: Sequence[str] = (),
    progress: bool = True,
    description: str = "generating",
    share_prefix: bool = False,
) -> list[str]:
    """Greedy continuations of rendered prompts in input order, sharded and on the active backend.

    ``share_prefix``: see :func:`harmonia.evaluation.generation.generate` (vLLM caches shared
    prefixes by itself)."""
    active = _ACTIVE.get()

    def run(part: list[str]) -> list[str]:
        if active is not None and active.model is model:
            return active.generator(part, max_new_tokens=max_new_tokens, stop=stop, progress=progress)
        return generate(model, tokenizer, part, max_new_tokens=max_new_tokens, batch_size=batch_size, stop=stop,
                        progress=progress, description=description, share_prefix=share_prefix)

    return map_sharded(run, prompts)
