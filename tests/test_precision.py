"""Frozen linear weights held in bfloat16 while training: same numbers, originals restored."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from harmonia.config import TrainConfig
from harmonia.methods.base import Method, build_params, get_method
from harmonia.methods.encoding import encode_qa, with_role
from harmonia.models.tiny import build_tiny_model
from harmonia.training.engine import Engine
from harmonia.training.precision import frozen_linear_parameters, frozen_linears_in
from harmonia.training.trainable import apply_trainable
from test_engine import make_records


def _top_layer_model(tokenizer):
    return apply_trainable(build_tiny_model(tokenizer, seed=0), TrainConfig(steps=1, train_top_layers=1))


def _loss_and_grads(model, ids):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(input_ids=ids).logits
    loss = logits.float().logsumexp(-1).mean()
    loss.backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_only_frozen_linear_weights_not_shared_with_the_embedding_are_cast(tokenizer):
    model = _top_layer_model(tokenizer)
    names = {id(p): n for n, p in model.named_parameters()}
    chosen = sorted(names[id(p)] for p in frozen_linear_parameters(model))
    # layer 0 is frozen (its seven projections); layer 1 trains; the LM head is the embedding (tied)
    assert chosen == sorted(f"model.layers.0.{m}.weight" for m in
                            ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                             "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"))
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_autocast_numbers_are_unchanged_and_originals_come_back(tokenizer):
    model = _top_layer_model(tokenizer)
    ids = torch.tensor([[5, 9, 14, 2, 7, 33], [8, 1, 4, 4, 19, 3]])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    logits, grads = _loss_and_grads(model, ids)
    with frozen_linears_in([model], torch.bfloat16) as cast:
        assert len(cast) == 7
        assert model.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
        assert model.model.layers[1].mlp.up_proj.weight.dtype == torch.float32  # trains
        assert model.model.embed_tokens.weight.dtype == torch.float32
        cast_logits, cast_grads = _loss_and_grads(model, ids)
        with cast.originals():
            assert model.model.layers[0].mlp.up_proj.weight.dtype == torch.float32
        assert model.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    assert torch.equal(cast_logits, logits)
    assert grads.keys() == cast_grads.keys() and grads
    for name in grads:
        assert torch.equal(cast_grads[name], grads[name]), name
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32 and torch.equal(p.detach(), before[name]), name


def test_originals_come_back_when_the_block_raises(tokenizer):
    model = _top_layer_model(tokenizer)
    weight = model.model.layers[0].self_attn.q_proj.weight
    original = weight.detach().clone()
    with pytest.raises(RuntimeError, match="boom"), frozen_linears_in([model], torch.bfloat16):
        raise RuntimeError("boom")
    assert weight.dtype == torch.float32 and torch.equal(weight.detach(), original)
    with frozen_linears_in([model], None) as cast:  # no dtype: nothing is touched
        assert len(cast) == 0 and weight.dtype == torch.float32


def _train_sft(tokenizer, tmp_path, monkeypatch=None, **train):
    model = build_tiny_model(tokenizer, seed=0)
    cfg = TrainConfig(**{"steps": 3, "batch_size": 4, "micro_batch_size": 2, "lr": 1e-2, "progress": False,
                         "save": "none", "bf16": True, "train_top_layers": 1, **train})
    cls = get_method("sft")
    engine = Engine(cfg, cls, build_params(cls, {}), model, tokenizer, tmp_path)
    if monkeypatch is not None:
        monkeypatch.setattr(Engine, "_frozen_dtype", lambda self: None)
    engine.train(make_records(8))
    return model


def test_engine_trains_to_the_same_weights_with_the_cast(tokenizer, tmp_path, monkeypatch):
    with_cast = _train_sft(tokenizer, tmp_path / "cast")
    log = [json.loads(x) for x in (tmp_path / "cast" / "train_log.jsonl").read_text().splitlines()]
    assert {"event": "frozen_linears", "dtype": "bfloat16", "tensors": 7} in log
    without = _train_sft(tokenizer, tmp_path / "plain", monkeypatch)
    for (name, a), (_, b) in zip(with_cast.named_parameters(), without.named_parameters(), strict=True):
        assert a.dtype == torch.float32 and torch.equal(a, b), name
    untouched = build_tiny_model(tokenizer, seed=0).model.layers
    trained = with_cast.model.layers
    assert torch.equal(trained[0].mlp.down_proj.weight, untouched[0].mlp.down_proj.weight)  # frozen
    assert not torch.equal(trained[1].mlp.down_proj.weight, untouched[1].mlp.down_proj.weight)


def test_lora_base_weights_are_cast_and_the_adapters_train_the_same(tokenizer, tmp_path, monkeypatch):
    from harmonia.config import LoraConfig

    lora = {"lora": LoraConfig(r=2, alpha=4), "train_top_layers": None}
    runs = []
    for name, patch in (("cast", None), ("plain", monkeypatch)):
        model = _train_sft(tokenizer, tmp_path / name, patch, **lora)
        runs.append({n: p.detach().clone() for n, p in model.named_parameters()})
    log = [json.loads(x) for x in (tmp_path / "cast" / "train_log.jsonl").read_text().splitlines()]
    # the base weights of both layers' seven projections; the adapters and the tied head stay float32
    assert {"event": "frozen_linears", "dtype": "bfloat16", "tensors": 14} in log
    with_cast, without = runs
    assert with_cast.keys() == without.keys() and any("lora_A" in n for n in with_cast)
    for name in with_cast:
        assert with_cast[name].dtype == torch.float32 and torch.equal(with_cast[name], without[name]), name


def test_checkpoints_hold_the_float32_frozen_weights(tokenizer, tmp_path):
    model = _train_sft(tokenizer, tmp_path, checkpoint_every=1)
    saved = load_file(tmp_path / "checkpoints" / "step-2" / "model.safetensors")
    key = "model.layers.0.self_attn.q_proj.weight"
    assert saved[key].dtype == torch.float32
    assert torch.equal(saved[key], model.model.layers[0].self_attn.q_proj.weight.detach())


def test_a_failed_run_restores_attention_kernel_and_frozen_weights(tokenizer, tmp_path):
    class Failing(Method):
        name = "failing"

        def encode(self, record):
            return with_role(encode_qa(record, self.ctx), record)

        def loss(self, model, batch):
            assert model.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
            raise RuntimeError("loss failed")

    model = build_tiny_model(tokenizer, seed=0)
    assert model.config._attn_implementation == "sdpa"
    cfg = TrainConfig(steps=1, batch_size=2, micro_batch_size=2, progress=False, save="none", attention="eager",
                      bf16=True, train_top_layers=1)
    engine = Engine(cfg, Failing, build_params(Failing, {}), model, tokenizer, tmp_path)
    with pytest.raises(RuntimeError, match="loss failed"):
        engine.train(make_records(2))
    assert model.config._attn_implementation == "sdpa"
    assert model.model.layers[0].mlp.up_proj.weight.dtype == torch.float32


def test_engine_uses_the_fused_adamw_kernel_on_cpu(tokenizer, tmp_path, monkeypatch):
    seen: list[bool] = []
    adamw = torch.optim.AdamW

    def spy(params, **kwargs):
        seen.append(kwargs.get("fused"))
        return adamw(params, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", spy)
    _train_sft(tokenizer, tmp_path, steps=1)
    assert seen == [True]
