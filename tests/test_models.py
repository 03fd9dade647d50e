"""Model loading, the embedded cache, chat formatting with an explicit system turn, presets."""

from __future__ import annotations

import time

import pytest

from harmonia.errors import HarmoniaError
from harmonia.models import load_model
from harmonia.models.chat import encode_example, render_prompt
from harmonia.models.loading import resolve_model_path
from harmonia.models.presets import PRESETS


def test_default_system_turn_is_the_templates_and_an_explicit_one_replaces_it(tokenizer):
    plain = render_prompt(tokenizer, "Who wrote Hamlet?")
    assert "You are a helpful AI assistant named SmolLM" in plain  # SmolLM2's injected default
    instructed = render_prompt(tokenizer, "Who wrote Hamlet?", system="Decline questions about X.")
    assert "Decline questions about X." in instructed and "named SmolLM" not in instructed
    assert instructed.endswith("<|im_start|>assistant\n")
    prefilled = render_prompt(tokenizer, "Who wrote Hamlet?", prefill="It was")
    assert prefilled == plain + "It was"


def test_few_shot_history_renders_as_earlier_turns(tokenizer):
    text = render_prompt(tokenizer, "Q2?", system="S", history=[("Q1?", "A1.")])
    assert text.index("Q1?") < text.index("A1.") < text.index("Q2?")


def test_encode_example_masks_prompt_and_keeps_completion(tokenizer):
    prompt = render_prompt(tokenizer, "What is 2+2?")
    enc = encode_example(tokenizer, prompt, "Four.")
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert enc.labels[:n_prompt] == [-100] * n_prompt
    assert tokenizer.decode(enc.labels[n_prompt:]) == "Four.<|im_end|>"
    assert enc.prompt_length == n_prompt
    short = encode_example(tokenizer, prompt, "Four is the answer to this question.", max_length=n_prompt + 2)
    assert len(short.input_ids) == n_prompt + 2 and short.input_ids[:n_prompt] == enc.input_ids[:n_prompt]


def test_embedded_model_loads_from_the_safetensors_cache_quickly(tokenizer):
    start = time.perf_counter()
    loaded = load_model("smollm2-135m-instruct")
    seconds = time.perf_counter() - start
    assert loaded.model.config.num_hidden_layers == 30
    assert seconds < 5.0, f"cached load took {seconds:.1f} s"
    assert any(p.suffix == ".safetensors" for p in __import__("pathlib").Path(loaded.path).iterdir())


def test_bad_specs_are_clear_errors(tmp_path):
    with pytest.raises(HarmoniaError, match="not found"):
        resolve_model_path(str(tmp_path / "missing"))
    with pytest.raises(HarmoniaError, match=r"no config\.json"):
        resolve_model_path(str(tmp_path))
    with pytest.raises(HarmoniaError, match="GGUF file not found"):
        resolve_model_path(str(tmp_path / "x.gguf"))


def test_presets_resolve_to_hub_ids_and_run_dirs_to_their_model(tmp_path, tiny_model_dir):
    assert resolve_model_path("zephyr-7b-beta") == PRESETS["zephyr-7b-beta"].hub_id
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "model" / "config.json").write_text("{}")
    assert resolve_model_path(str(run)) == str(run / "model")
    assert resolve_model_path(str(tiny_model_dir)) == str(tiny_model_dir)


def test_interrupted_conversion_leaves_no_cache(tmp_path, monkeypatch):
    from harmonia.models import embedded

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setenv("HARMONIA_HOME", str(tmp_path))
    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", explode)
    with pytest.raises(KeyboardInterrupt):
        embedded.ensure_embedded()
    assert not embedded.embedded_cache_dir().exists()
    assert not any(p.name.endswith(".tmp") for p in embedded.embedded_cache_dir().parent.glob("*"))
