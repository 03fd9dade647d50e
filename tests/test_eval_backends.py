"""Generation backends: choosing hf / vllm, the missing-vLLM message, and the vLLM adapter (on a fake vllm)."""

from __future__ import annotations

import logging
import sys
import types
from dataclasses import dataclass, field

import pytest

from harmonia.errors import ConfigError
from harmonia.evaluation import backends
from harmonia.evaluation.backends import VLLMGenerator, choose_backend, generate_texts, generating_with


@pytest.fixture()
def no_vllm(monkeypatch):
    monkeypatch.setattr(backends, "vllm_installed", lambda: False)


def test_hf_is_chosen_as_asked():
    assert choose_backend("hf", required=True, processes=4) == backends.BackendChoice("hf")


def test_missing_vllm_warns_naming_the_package_and_falls_back_to_hf(no_vllm, caplog):
    with caplog.at_level(logging.WARNING, logger="harmonia.evaluation.backends"):
        choice = choose_backend("vllm", required=False, processes=1)
    assert choice.name == "hf"
    assert "pip install 'harmonia[vllm]'" in choice.reason
    assert "'vllm' is not installed" in caplog.text and "HF backend" in caplog.text


def test_missing_vllm_is_an_error_when_required(no_vllm):
    with pytest.raises(ConfigError, match=r"'vllm' is not installed \(pip install 'harmonia\[vllm\]'\)"):
        choose_backend("vllm", required=True, processes=1)


def test_vllm_refuses_several_processes(monkeypatch):
    monkeypatch.setattr(backends, "vllm_installed", lambda: True)
    assert choose_backend("vllm", required=True, processes=1).name == "vllm"
    with pytest.raises(ConfigError, match="one process"):
        choose_backend("vllm", required=False, processes=2)


@dataclass
class FakeLLM:
    """Records what the adapter passes to vLLM and answers each prompt with its length."""

    kwargs: dict
    calls: list = field(default_factory=list)

    def generate(self, inputs, params, use_tqdm=True):
        self.calls.append((inputs, params, use_tqdm))
        out = types.SimpleNamespace
        return [out(outputs=[out(text=f"n={len(x['prompt_token_ids'])}")]) for x in inputs]


@pytest.fixture()
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM = lambda **kwargs: FakeLLM(kwargs)
    module.SamplingParams = lambda **kwargs: kwargs
    monkeypatch.setitem(sys.modules, "vllm", module)
    return module


def test_vllm_adapter_is_greedy_on_the_hf_token_ids(fake_vllm, tokenizer):
    gen = VLLMGenerator("/models/m", tokenizer, dtype="bfloat16", seed=3, gpu_memory_utilization=0.3)
    assert gen.llm.kwargs == {"model": "/models/m", "tokenizer": "/models/m", "dtype": "bfloat16", "seed": 3,
                              "gpu_memory_utilization": 0.3, "trust_remote_code": False}
    prompts = ["<|im_start|>user\nHi there<|im_end|>\n", "Question: 2+2?\nAnswer: "]
    texts = gen(prompts, max_new_tokens=7, stop=["\n\n", ""], progress=False)
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    assert texts == [f"n={len(x)}" for x in ids]
    inputs, params, use_tqdm = gen.llm.calls[0]
    assert [x["prompt_token_ids"] for x in inputs] == ids
    assert params == {"temperature": 0.0, "max_tokens": 7, "stop": ["\n\n"],
                      "stop_token_ids": [tokenizer.eos_token_id], "skip_special_tokens": True}
    assert use_tqdm is False
    assert gen([], max_new_tokens=7, stop=[], progress=False) == []
    assert len(gen.llm.calls) == 1


def test_generate_texts_routes_only_the_evaluated_model(tiny_model, tokenizer):
    calls = []

    def fake(prompts, *, max_new_tokens, stop, progress):
        calls.append(prompts)
        return ["vllm"] * len(prompts)

    other = object()
    with generating_with(other, fake):
        hf = generate_texts(tiny_model, tokenizer, ["Hello"], max_new_tokens=2, progress=False)
    with generating_with(tiny_model, fake):
        routed = generate_texts(tiny_model, tokenizer, ["Hello", "Bye"], max_new_tokens=2, progress=False)
    assert routed == ["vllm", "vllm"] and calls == [["Hello", "Bye"]]
    assert hf != ["vllm"] and len(hf) == 1


def test_evaluate_fails_before_loading_when_vllm_is_required_and_missing(no_vllm):
    from harmonia.evaluation.config import load_eval_config
    from harmonia.evaluation.harness import evaluate

    cfg = load_eval_config(None, ["generation.backend=vllm", "generation.require_backend=true"])
    with pytest.raises(ConfigError, match="not installed"):
        evaluate("/nonexistent/model", [], cfg, name="x")


def test_evaluate_records_the_backend_that_ran(no_vllm, tiny_model, tokenizer):
    from harmonia.evaluation.config import load_eval_config
    from harmonia.evaluation.harness import evaluate
    from harmonia.models import LoadedModel

    cfg = load_eval_config(None, ["generation.backend=vllm", "progress=false"])
    results = evaluate(LoadedModel(model=tiny_model, tokenizer=tokenizer, spec="t", path="t"), [], cfg, name="x")
    ran = results.meta["generation_backend"]
    assert ran["name"] == "hf" and ran["requested"] == "vllm" and "harmonia[vllm]" in ran["reason"]
