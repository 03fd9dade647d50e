"""Generator backends for LLM-assisted text -> QA, behind one protocol.

:class:`QAGenerator` is anything with ``generate(prompts) -> replies``. Two backends:

- :class:`OpenAICompatibleGenerator` posts each prompt as one user message to
  ``<base_url>/v1/chat/completions`` (OpenAI, vLLM, llama.cpp, or ``harmonia serve``), with the
  standard library only;
- :class:`LocalModelGenerator` runs a harmonia model in-process: the tokenizer's chat template
  renders each prompt, greedy batched generation answers it.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, runtime_checkable

from harmonia.errors import HarmoniaError


@runtime_checkable
class QAGenerator(Protocol):
    """Turns plain prompts (no chat template applied yet) into replies, one per prompt, in order."""

    def generate(self, prompts: list[str]) -> list[str]: ...


def chat_completions_url(base_url: str) -> str:
    """``http://host:port``, ``.../v1`` or ``.../v1/`` -> ``http://host:port/v1/chat/completions``."""
    base = base_url.rstrip("/")
    return (base if base.endswith("/v1") else base + "/v1") + "/chat/completions"


class OpenAICompatibleGenerator:
    """Chat completions over HTTP. Requests run ``max_workers`` at a time; 429/5xx are retried."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 120.0,
        *,
        max_tokens: int = 512,
        temperature: float = 0.0,
        system: str | None = None,
        max_workers: int = 4,
        retries: int = 2,
    ) -> None:
        self.url = chat_completions_url(base_url)
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.system = system
        self.max_workers = max(1, max_workers)
        self.retries = max(0, retries)

    def generate(self, prompts: list[str]) -> list[str]:
        if not prompts:
            return []
        with ThreadPoolExecutor(max_workers=min(self.max_workers, len(prompts))) as pool:
            return list(pool.map(self._complete, prompts))

    def _complete(self, prompt: str) -> str:
        messages = [{"role": "system", "content": self.system}] if self.system is not None else []
        messages.append({"role": "user", "content": prompt})
        body = json.dumps(
            {
                "model": self.model,
                "messages": messages,
                "max_tokens": self.max_tokens,
                "temperature": self.temperature,
            }
        ).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = response.read()
                break
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:500].decode("utf-8", errors="replace")
                if (exc.code == 429 or exc.code >= 500) and attempt < self.retries:
                    time.sleep(0.5 * 2**attempt)
                    continue
                raise HarmoniaError(f"{self.url} answered HTTP {exc.code}: {detail}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if attempt < self.retries:
                    time.sleep(0.5 * 2**attempt)
                    continue
                reason = getattr(exc, "reason", exc)
                raise HarmoniaError(f"cannot reach {self.url}: {reason}") from None
        try:
            return json.loads(payload)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise HarmoniaError(f"{self.url} returned no chat completion: {payload[:300]!r}") from None


class LocalModelGenerator:
    """Generation with a harmonia model in this process, loaded on first use.

    ``model`` is a spec string for :func:`harmonia.models.load_model` or an already loaded
    :class:`~harmonia.models.LoadedModel`.
    """

    def __init__(
        self, model: Any, *, max_new_tokens: int = 512, batch_size: int = 8, system: str | None = None
    ) -> None:
        self._spec = model if isinstance(model, str) else None
        self._loaded = None if isinstance(model, str) else model
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.system = system

    @property
    def loaded(self) -> Any:
        if self._loaded is None:
            from harmonia.models import load_model

            self._loaded = load_model(self._spec)
        return self._loaded

    def generate(self, prompts: list[str]) -> list[str]:
        if not prompts:
            return []
        from harmonia.evaluation.generation import generate
        from harmonia.models.chat import render_prompt

        loaded = self.loaded
        rendered = [render_prompt(loaded.tokenizer, p, system=self.system) for p in prompts]
        return generate(
            loaded.model,
            loaded.tokenizer,
            rendered,
            max_new_tokens=self.max_new_tokens,
            batch_size=self.batch_size,
            description="text->QA",
        )
