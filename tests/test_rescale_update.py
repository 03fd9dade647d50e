"""scripts/rescale_update.py: another kept fraction of a saved update, uniform or linear in depth."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from harmonia.errors import ConfigError


def test_schedules_parse_and_run_linearly_in_depth(script):
    Schedule = script("rescale_update").Schedule
    lines = Schedule.parse("0.4:1")
    assert lines == (0.4, 1.0) and str(lines) == "0.4:1"
    assert [lines.at(d) for d in (0, 0.5, 1)] == pytest.approx([0.4, 0.7, 1.0])
    uniform = Schedule.parse("0.85")
    assert uniform == (0.85, 0.85) and str(uniform) == "0.85"
    for bad in ("abc", "0:1", "1.5", "0.2:0.4:1", ""):
        with pytest.raises(ConfigError, match="--schedule"):
            Schedule.parse(bad)


def test_depth_places_layers_between_the_trained_ones_and_the_rest_outside(script):
    depth = script("rescale_update").depth
    assert depth("model.layers.15.mlp.up_proj.weight", 15, 29) == 0
    assert depth("model.layers.22.self_attn.q_proj.weight", 15, 29) == pytest.approx(0.5)
    assert depth("model.layers.29.input_layernorm.weight", 15, 29) == 1
    assert depth("model.norm.weight", 15, 29) == 1  # above every layer
    assert depth("model.embed_tokens.weight", 15, 29) == 0  # below every layer
    assert depth("model.layers.3.mlp.up_proj.weight", 3, 3) == 0  # one trained layer


def test_a_saved_fraction_is_rescaled_per_layer_by_hand(script):
    module = script("rescale_update")
    start = {"model.layers.0.w": torch.tensor([1.0, 2.0]), "model.layers.1.w": torch.tensor([0.0]),
             "model.layers.2.w": torch.tensor([4.0]), "model.norm.weight": torch.tensor([1.0])}
    # trained - start: layer 0 +2 / -2, layer 1 untouched, layer 2 +4, norm -1; saved keeping half of it
    saved = {"model.layers.0.w": torch.tensor([2.0, 1.0]), "model.layers.1.w": torch.tensor([0.0]),
             "model.layers.2.w": torch.tensor([6.0]), "model.norm.weight": torch.tensor([0.5])}
    out = module.rescaled(start, saved, 0.5, module.Schedule(0.25, 1.0))
    # the trained layers are 0 and 2: layer 0 keeps 0.25 of its update, layer 2 and the norm all of it
    assert torch.equal(out["model.layers.0.w"], torch.tensor([1.5, 1.5]))
    assert torch.equal(out["model.layers.2.w"], torch.tensor([8.0]))
    assert torch.equal(out["model.norm.weight"], torch.tensor([0.0]))
    assert out["model.layers.1.w"] is saved["model.layers.1.w"]  # unchanged weights are not touched
    uniform = module.rescaled(start, saved, 0.5, module.Schedule(0.5, 0.5))
    assert all(torch.equal(uniform[k], saved[k]) for k in saved)  # the kept fraction gives the run back


def test_a_run_from_another_start_or_a_bad_kept_fraction_is_refused(script):
    module = script("rescale_update")
    start = {"model.layers.0.w": torch.zeros(1)}
    with pytest.raises(ConfigError, match="no weights"):
        module.rescaled(start, {"model.layers.9.w": torch.ones(1)}, 0.7, module.Schedule(1, 1))
    with pytest.raises(ConfigError, match="--kept"):
        module.rescaled(start, start, 0, module.Schedule(1, 1))


def test_script_rebuilds_and_evaluates_a_tiny_run(script, tiny_demo, tmp_path):
    from safetensors.torch import load_file

    runs, out = tmp_path / "runs", tmp_path / "rescaled"
    script("sweep_seeds").main(["--seeds", "0", "--setting", "base", "--eval-limit", "2", "--output-dir", str(runs),
                                *tiny_demo, "unlearn.train.steps=2", "unlearn.train.update_scale=0.5"])
    module = script("rescale_update")
    text = module.main([str(runs / "base-seed0"), "--kept", "0.5", "--schedule", "0.5", "--schedule", "1", "--keep",
                        "--eval-limit", "2", "--output-dir", str(out), *tiny_demo, "unlearn.train.steps=2"])
    assert "| target |" in text and "| base-seed0@0.5 |" in text and "| base-seed0@1 |" in text
    saved = load_file(runs / "base-seed0" / "model" / "model.safetensors")
    same = load_file(out / "base-seed0@0.5" / "model" / "model.safetensors")
    whole = load_file(out / "base-seed0@1" / "model" / "model.safetensors")
    assert all(torch.equal(saved[k], same[k]) for k in saved)  # the kept fraction rebuilds the run itself
    assert any(not torch.equal(saved[k], whole[k]) for k in saved)
    # the same weights are evaluated once: the rebuilt run's row is the run's own
    run_row = (runs / "base-seed0" / "results.json").read_text()
    assert '"metrics"' in run_row
    metrics = {k: v["value"] for k, v in json.loads(run_row)["metrics"].items()}
    rebuilt_row = (out / "base-seed0@0.5" / "results.json").read_text()
    rebuilt = {k: v["value"] for k, v in json.loads(rebuilt_row)["metrics"].items()}
    assert rebuilt == metrics
    module.main([str(runs / "base-seed0"), "--kept", "0.5", "--schedule", "0.25:1", "--eval-limit", "2",
                 "--output-dir", str(out), *tiny_demo, "unlearn.train.steps=2"])
    assert (out / "base-seed0@0.25:1" / "results.json").is_file()
    assert not (out / "base-seed0@0.25:1" / "model").exists()  # deleted once evaluated, without --keep


def test_only_a_model_in_one_weights_file_is_rebuilt(script, tmp_path):
    module = script("rescale_update")
    single = tmp_path / "single"
    single.mkdir()
    save_file({"w": torch.zeros(1)}, single / "model.safetensors")
    assert module.single_weights_file(single) == single / "model.safetensors"
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    for i in (1, 2):
        save_file({f"w{i}": torch.zeros(1)}, sharded / f"model-0000{i}.safetensors")
    (sharded / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"w1": "model-00001.safetensors", "w2": "model-00002.safetensors"}}))
    with pytest.raises(ConfigError, match=r"one model\.safetensors expected"):
        module.single_weights_file(sharded)
    with pytest.raises(ConfigError, match=r"no model\.safetensors"):
        module.single_weights_file(tmp_path)
