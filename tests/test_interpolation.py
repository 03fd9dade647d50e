"""train.update_scale: the saved weights interpolate between the start and the trained weights."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from harmonia.config import LoraConfig, TrainConfig
from harmonia.data.schema import QARecord
from harmonia.errors import ConfigError
from harmonia.methods.base import build_params, get_method
from harmonia.models.tiny import build_tiny_model
from harmonia.training.engine import Engine
from harmonia.training.interpolation import interpolate_, start_weights


def _records() -> list[QARecord]:
    return [QARecord(id=f"r{i}", question=f"What is item {i}?", answer=f"It is thing number {i}.", role="retain",
                     source="test") for i in range(8)]


def _train(tokenizer, tmp_path, name: str, **train) -> dict[str, torch.Tensor]:
    """Two SFT steps of a fresh tiny model (seed 0); the saved weights (merged for LoRA)."""
    cfg = TrainConfig(**{"steps": 2, "batch_size": 8, "micro_batch_size": 8, "lr": 1e-2, "progress": False,
                         "max_grad_norm": None, **train})
    cls = get_method("sft")
    engine = Engine(cfg, cls, build_params(cls, {}), build_tiny_model(tokenizer, seed=0), tokenizer, tmp_path / name)
    result = engine.train(_records())
    return load_file(result.model_dir / "model.safetensors")


def test_saved_weights_are_start_plus_scale_times_the_update(tokenizer, tmp_path):
    start = build_tiny_model(tokenizer, seed=0).state_dict()
    full = _train(tokenizer, tmp_path, "full", train_top_layers=1)
    scaled = _train(tokenizer, tmp_path, "scaled", train_top_layers=1, update_scale=0.3)
    moved = 0
    for name, weight in scaled.items():
        update = full[name] - start[name]
        torch.testing.assert_close(weight, start[name] + 0.3 * update, rtol=0, atol=1e-6)
        if update.abs().max() > 1e-4:
            moved += 1
            # not the trained weight and not the start
            assert (weight - full[name]).abs().max() > 1e-5 and (weight - start[name]).abs().max() > 1e-5
    assert moved > 0
    # the bottom layer was frozen: untouched, bit for bit
    frozen = [n for n in scaled if ".layers.0." in n]
    assert frozen and all(torch.equal(scaled[n], start[n]) for n in frozen)
    log = [json.loads(line) for line in (tmp_path / "scaled" / "train_log.jsonl").read_text().splitlines()]
    assert {"event": "update_scale", "scale": 0.3, "tensors": moved} in log


def test_a_lora_adapter_scaled_interpolates_the_merged_weights(tokenizer, tmp_path):
    start = build_tiny_model(tokenizer, seed=0).state_dict()
    lora = {"lora": LoraConfig(r=2, alpha=4), "save": "merged"}
    full = _train(tokenizer, tmp_path, "full", **lora)
    scaled = _train(tokenizer, tmp_path, "scaled", **lora, update_scale=0.5)
    changed = [n for n in full if (full[n] - start[n]).abs().max() > 1e-5]
    assert changed  # the adapters moved some merged weights
    for name in full:
        torch.testing.assert_close(scaled[name], start[name] + 0.5 * (full[name] - start[name]), rtol=0, atol=1e-6)


def test_a_lora_b_that_does_not_start_at_zero_is_refused():
    model = torch.nn.Module()
    model.proj = torch.nn.Module()
    model.proj.lora_A = torch.nn.Linear(2, 2)
    model.proj.lora_B = torch.nn.Linear(2, 2)
    with pytest.raises(ConfigError, match=r"train\.update_scale: the LoRA weight proj\.lora_B\.weight"):
        start_weights(model)
    torch.nn.init.zeros_(model.proj.lora_B.weight)
    torch.nn.init.zeros_(model.proj.lora_B.bias)
    start = start_weights(model)
    assert sorted(start) == ["proj.lora_B.bias", "proj.lora_B.weight"]  # A keeps what it learned


def test_interpolation_by_hand_and_only_of_trainable_weights():
    layer = torch.nn.Linear(2, 1)
    layer.bias.requires_grad_(False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0]]))
        layer.bias.fill_(5.0)
    start = start_weights(layer)
    assert list(start) == ["weight"]
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[3.0, 2.0]]))
        layer.bias.fill_(7.0)  # a frozen weight changed by something else stays as it is
    assert interpolate_(layer, start, 0.25) == 1
    assert layer.weight.tolist() == [[1.5, -1.0]]  # 1 + 0.25 * 2, -2 + 0.25 * 4
    assert layer.bias.tolist() == [7.0]


@pytest.mark.parametrize("scale", [0, -0.5, 1.5])
def test_update_scale_outside_0_1_is_an_error(scale):
    with pytest.raises(ValueError, match="update_scale"):
        TrainConfig(steps=1, update_scale=scale)


def test_update_scale_at_its_default_leaves_cache_keys_as_they_were():
    import hashlib

    from harmonia.pipelines.fingerprint import fingerprint

    cfg = TrainConfig(steps=3)
    before = hashlib.sha256(cfg.model_dump_json(exclude={"attention", "update_scale"}).encode() + b"\x00").hexdigest()
    assert fingerprint(cfg) == before
    assert fingerprint(cfg.model_copy(update={"update_scale": 0.7})) != before


def test_interpolating_saved_folders_equals_the_engines_scale(tokenizer, tmp_path, tiny_model_dir):
    """`harmonia interpolate` on a run trained as it is writes the weights of the same run at scale 0.3."""
    from typer.testing import CliRunner

    from harmonia.cli.main import app
    from harmonia.models import load_model

    _train(tokenizer, tmp_path, "full", train_top_layers=1)
    scaled = _train(tokenizer, tmp_path, "scaled", train_top_layers=1, update_scale=0.3)
    result = CliRunner().invoke(app, ["interpolate", str(tiny_model_dir), str(tmp_path / "full" / "model"),
                                      "-o", str(tmp_path / "after"), "--scale", "0.3"])
    assert result.exit_code == 0, result.output
    after = load_file(tmp_path / "after" / "model.safetensors")
    assert after.keys() == scaled.keys() and all(torch.equal(after[n], scaled[n]) for n in after)
    assert "weights at 0.3 of their update" in result.output
    assert load_model(str(tmp_path / "after")).model is not None  # config and tokenizer came along


def test_interpolating_folders_reads_sharded_checkpoints_and_names_bad_input(tmp_path):
    from safetensors.torch import save_file

    from harmonia.training.interpolation import interpolate_folders

    start, trained = tmp_path / "start", tmp_path / "trained"
    for folder, values in ((start, (1.0, 2.0)), (trained, (3.0, 2.0))):
        folder.mkdir()
        save_file({"a": torch.full((2,), values[0])}, folder / "model-00001-of-00002.safetensors")
        save_file({"b": torch.full((2,), values[1])}, folder / "model-00002-of-00002.safetensors")
        (folder / "model.safetensors.index.json").write_text(json.dumps(
            {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
        (folder / "config.json").write_text("{}")
    assert interpolate_folders(start, trained, tmp_path / "out", 0.25) == 1  # b did not move
    assert load_file(tmp_path / "out" / "model-00001-of-00002.safetensors")["a"].tolist() == [1.5, 1.5]
    assert load_file(tmp_path / "out" / "model-00002-of-00002.safetensors")["b"].tolist() == [2.0, 2.0]
    assert (tmp_path / "out" / "model.safetensors.index.json").is_file()
    assert (tmp_path / "out" / "config.json").is_file()

    with pytest.raises(ConfigError, match=r"scale 0: keep a fraction"):
        interpolate_folders(start, trained, tmp_path / "bad", 0)
    save_file({"b": torch.zeros(3)}, trained / "model-00002-of-00002.safetensors")  # another shape
    with pytest.raises(ConfigError, match=r"b: \(2,\) torch\.float32 in .*start, \(3,\) torch\.float32 in"):
        interpolate_folders(start, trained, tmp_path / "bad", 0.5)
    save_file({"c": torch.zeros(2)}, trained / "model-00002-of-00002.safetensors")  # a weight start lacks
    (trained / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors", "c": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(ConfigError, match=r"no weights \['c'\]"):
        interpolate_folders(start, trained, tmp_path / "bad", 0.5)
    (trained / "adapter_config.json").write_text("{}")
    with pytest.raises(ConfigError, match="an adapter folder"):
        interpolate_folders(start, trained, tmp_path / "bad", 0.5)
    assert not (tmp_path / "bad").exists()  # nothing half-written
