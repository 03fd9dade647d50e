"""The training engine: normalisation, masking, schedule, resume after a kill, NaN guard."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file

from harmonia.config import TrainConfig
from harmonia.data.schema import QARecord
from harmonia.errors import ConfigError, NonFiniteLossError
from harmonia.methods.base import Method, Term, build_params, get_method
from harmonia.methods.encoding import encode_qa, with_role
from harmonia.training.batching import BatchSchedule, collate, role_quota
from harmonia.training.engine import Engine


def make_records(n: int = 16, role: str = "retain") -> list[QARecord]:
    # Answers of different lengths, so padding differs between micro-batch splits.
    return [QARecord(id=f"{role}{i}", question=f"What is item {i}?",
                     answer="It is " + "very " * (i % 5) + f"thing {i}.", role=role, source="test")
            for i in range(n)]


def sft_engine(tokenizer, model, tmp_path, **train) -> Engine:
    cfg = TrainConfig(**{"steps": 1, "batch_size": 8, "micro_batch_size": 8, "lr": 1e-2, "progress": False,
                         "save": "none", "max_grad_norm": None, **train})
    cls = get_method("sft")
    return Engine(cfg, cls, build_params(cls, {}), model, tokenizer, tmp_path)


def test_sft_loss_is_mean_over_all_target_tokens_of_the_global_batch(tokenizer, tiny_model, tmp_path):
    records = make_records(8)
    reference = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    engine = sft_engine(tokenizer, tiny_model, tmp_path, micro_batch_size=2)
    result = engine.train(records)
    # Independent computation: concatenate every target token of the batch, one cross-entropy mean.
    from harmonia.models.tiny import build_tiny_model

    fresh = build_tiny_model(tokenizer, seed=0)
    fresh.load_state_dict(reference)
    losses, counted = [], 0
    batch_ids = BatchSchedule(records, {"retain": 1.0}, 8, seed=0).batches(1)[0]
    for i in batch_ids:
        ex = encode_qa(records[i], engine.method.ctx)
        ids = torch.tensor([ex["input_ids"]])
        labels = torch.tensor(ex["labels"])
        logits = fresh(input_ids=ids).logits[0]
        keep = labels[1:] != -100
        losses.append(F.cross_entropy(logits[:-1][keep], labels[1:][keep], reduction="sum"))
        counted += int(keep.sum())
    expected = float(torch.stack(losses).sum().detach() / counted)
    assert result.history[0]["loss/nll"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("micro", [1, 2, 4])
def test_update_does_not_depend_on_micro_batch_split(tokenizer, tmp_path, micro, monkeypatch):
    from harmonia.models.tiny import build_tiny_model

    # Plain SGD makes the update proportional to the gradient; Adam's first step is about
    # lr * sign(g), which turns float noise on near-zero gradients into large differences.
    monkeypatch.setattr(torch.optim, "AdamW", lambda params, lr, weight_decay, **_: torch.optim.SGD(params, lr=lr))

    records = make_records(8)
    whole = build_tiny_model(tokenizer, seed=0)
    sft_engine(tokenizer, whole, tmp_path / "a", micro_batch_size=8).train(records)
    split = build_tiny_model(tokenizer, seed=0)
    sft_engine(tokenizer, split, tmp_path / "b", micro_batch_size=micro).train(records)
    for (name, a), (_, b) in zip(whole.named_parameters(), split.named_parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


def test_role_quota_and_anchor_pairs_share_a_batch():
    assert role_quota({"forget": 1, "retain": 3}, 8) == {"forget": 2, "retain": 6}
    assert sum(role_quota({"a": 1, "b": 1, "c": 1}, 8).values()) == 8
    forget = [QARecord(id=f"f{i}", question="q?", answer="a", role="forget", source="t", anchor_id=f"n{i}")
              for i in range(6)]
    neigh = [QARecord(id=f"n{i}", question="q?", answer="a", role="neighbor", source="t", anchor_id=f"f{i}")
             for i in range(6)]
    records = forget + neigh + make_records(6)
    schedule = BatchSchedule(records, {"forget": 2, "neighbor": 2, "retain": 4}, 8, seed=3)
    batches = schedule.batches(10)
    assert batches == BatchSchedule(records, {"forget": 2, "neighbor": 2, "retain": 4}, 8, seed=3).batches(10)
    for batch in batches:
        ids = {records[i].id for i in batch}
        for rid in list(ids):
            if rid.startswith("f"):
                assert "n" + rid[1:] in ids, (rid, ids)


def test_mix_naming_a_role_without_records_is_an_error():
    with pytest.raises(ConfigError, match="neighbor"):
        BatchSchedule(make_records(4), {"retain": 1, "neighbor": 1}, 4, seed=0)


def test_collate_pads_labels_with_ignore_index_and_masks_with_zero():
    batch = collate([{"input_ids": [1, 2, 3], "labels": [-100, 2, 3], "attention_mask": [1, 1, 1], "role_id": 2},
                     {"input_ids": [4], "labels": [4], "attention_mask": [1], "role_id": 0}])
    assert batch["labels"].tolist() == [[-100, 2, 3], [4, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["role_id"].tolist() == [2, 0]


class ExplodingMethod(Method):
    """SFT whose loss becomes NaN from step 3 on (counted in calls to ``loss``)."""

    name = "exploding"

    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        self.calls = 0

    def encode(self, record):
        return with_role(encode_qa(record, self.ctx), record)

    def loss(self, model, batch):
        self.calls += 1
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        total = F.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(), reduction="sum")
        if self.calls >= 3:
            total = total * float("nan")
        return {"nll": Term(total, unit="tokens"), "aux": Term(total.detach() * 0, unit="tokens")}


def test_nan_loss_stops_naming_step_and_term_and_keeps_last_checkpoint(tokenizer, tiny_model, tmp_path):
    cfg = TrainConfig(steps=5, batch_size=4, micro_batch_size=4, progress=False, checkpoint_every=2, save="none")
    engine = Engine(cfg, ExplodingMethod, ExplodingMethod.Params(), tiny_model, tokenizer, tmp_path)
    with pytest.raises(NonFiniteLossError) as info:
        engine.train(make_records(8))
    assert info.value.step == 3 and info.value.term == "nll"
    assert "step 3" in str(info.value) and "'nll'" in str(info.value)
    assert (tmp_path / "checkpoints" / "step-2" / "state.json").is_file()
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["event"] == "non_finite" and log[-1]["term"] == "nll"


def test_train_config_errors_name_the_key():
    from harmonia.config import load_config

    with pytest.raises(ConfigError, match="exactly one of 'steps' and 'epochs'"):
        load_config(TrainConfig, None, [])
    with pytest.raises(ConfigError, match="key 'lr'"):
        load_config(TrainConfig, None, ["steps=1", "lr=fast"])
    with pytest.raises(ConfigError, match="key 'bogus': unknown key"):
        load_config(TrainConfig, None, ["steps=1", "bogus=1"])


def _write_run(tmp_path: Path, model_dir: Path, name: str, steps: int) -> Path:
    data = tmp_path / "data.jsonl"
    data.write_text("".join(r.model_dump_json() + "\n" for r in make_records(16)))
    cfg = {"name": name, "model": {"spec": str(model_dir)}, "data_file": str(data),
           "train": {"steps": steps, "batch_size": 4, "micro_batch_size": 2, "lr": 1e-3, "progress": False,
                     "checkpoint_every": 10, "output_dir": str(tmp_path / name), "save": "merged",
                     # a resumed run interpolates with the weights it started from, not its checkpoint's
                     "update_scale": 0.5}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _finetune(config: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harmonia", "finetune", str(config), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ})


def test_resume_after_kill_matches_uninterrupted_run(tmp_path, tiny_model_dir):
    steps = 60
    straight = _finetune(_write_run(tmp_path, tiny_model_dir, "straight", steps))
    config = _write_run(tmp_path, tiny_model_dir, "killed", steps)
    proc = _finetune(config)
    first_ckpt = tmp_path / "killed" / "checkpoints" / "step-10" / "state.json"
    deadline = time.time() + 300
    while not first_ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert first_ckpt.exists(), proc.communicate()[0].decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (tmp_path / "killed" / "model").exists()

    resumed = _finetune(config, "--resume")
    out = resumed.communicate()[0].decode()
    assert resumed.returncode == 0, out[-3000:]
    log = [json.loads(x) for x in (tmp_path / "killed" / "train_log.jsonl").read_text().splitlines()]
    starts = [e for e in log if e.get("event") == "start"]
    assert starts[-1]["start_step"] >= 10
    assert straight.wait() == 0, straight.communicate()[0].decode()[-3000:]
    a = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    b = load_file(tmp_path / "killed" / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)


def test_one_process_trains_in_bf16_then_in_fp32(tokenizer, tmp_path):
    # accelerate keeps one global precision per process; the engine starts each run afresh
    from harmonia.models.tiny import build_tiny_model

    for bf16 in (True, False):
        engine = sft_engine(tokenizer, build_tiny_model(tokenizer, seed=0), tmp_path / str(bf16), bf16=bf16,
                            steps=1, batch_size=2, micro_batch_size=2)
        assert engine.accelerator.mixed_precision == ("bf16" if bf16 else "no")
        assert engine.train(make_records(2)).steps == 1


def test_micro_batches_group_records_by_length():
    from harmonia.training.engine import padded_tokens, split_micro_batches

    lengths = [300, 20, 25, 310, 22, 30, 24]
    chunks = split_micro_batches(lengths, 2)
    # the two long records pad one micro-batch of their own: 5 x 30 + 2 x 310 = 770 padded
    # tokens, where the equal split [1, 4, 6, 2] / [5, 0, 3] pads 4 x 25 + 3 x 310 = 1030
    assert chunks == [[1, 4, 6, 2, 5], [0, 3]]
    assert padded_tokens(lengths, chunks) == 770
    assert sorted(i for c in chunks for i in c) == list(range(7))
    # equal lengths: nothing to gain, the equal split
    assert [len(c) for c in split_micro_batches([5] * 5, 3)] == [2, 2, 1]
    # fewer records than chunks: every process still gets its passes, some empty
    assert split_micro_batches([7, 3], 3) == [[1], [0], []]


def test_micro_batches_never_pad_more_than_the_equal_splits_largest():
    from harmonia.training.engine import padded_tokens, split_micro_batches

    # one long record alone, seven short ones together: 700 + 400 padded tokens instead of the
    # equal split's 4 x 100 + 4 x 400 = 2000
    lengths = [100] * 7 + [400]
    chunks = split_micro_batches(lengths, 2)
    assert [len(c) for c in chunks] == [7, 1]
    assert padded_tokens(lengths, chunks) == 1100
    # the equal split pads 6 x 40 + 6 x 50 = 540, its largest chunk 300 tokens. Ten short rows
    # together (400 + 100 = 500) would pad fewer but exceed that memory bound; 7 x 40 + 5 x 50
    # = 530 is the best split within it
    lengths = [40] * 10 + [50, 50]
    chunks = split_micro_batches(lengths, 2)
    assert [len(c) for c in chunks] == [7, 5]
    assert padded_tokens(lengths, chunks) == 530


def test_a_fresh_run_in_a_used_folder_starts_a_fresh_log(tokenizer, tiny_model, tmp_path):
    for _ in range(2):
        sft_engine(tokenizer, tiny_model, tmp_path, steps=2).train(make_records(8))
    log = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [e.get("event") for e in log] == ["start", None, None]
    assert [e["step"] for e in log[1:]] == [1, 2]


def test_attention_kernel_is_switched_for_training_only(tokenizer, tmp_path):
    from harmonia.models.tiny import build_tiny_model

    seen: list[str] = []

    class Spy(Method):
        name = "spy"

        def encode(self, record):
            return with_role(encode_qa(record, self.ctx), record)

        def loss(self, model, batch):
            seen.append(model.config._attn_implementation)
            return {"nll": Term(model(input_ids=batch["input_ids"]).logits.float().mean() * 0, "tokens")}

    model = build_tiny_model(tokenizer, seed=0)
    assert model.config._attn_implementation == "sdpa"
    cfg = TrainConfig(steps=1, batch_size=2, micro_batch_size=2, progress=False, save="none", attention="eager")
    Engine(cfg, Spy, build_params(Spy, {}), model, tokenizer, tmp_path).train(make_records(2))
    assert seen == ["eager"]
    assert model.config._attn_implementation == "sdpa"  # restored for whatever runs next


def test_unknown_attention_kernel_is_a_config_error(tokenizer, tiny_model, tmp_path):
    with pytest.raises(ConfigError, match=r"train\.attention: cannot use 'no_such_kernel'"):
        sft_engine(tokenizer, tiny_model, tmp_path, attention="no_such_kernel")


def test_attention_at_its_default_leaves_cache_keys_as_they_were():
    import hashlib

    from harmonia.pipelines.fingerprint import fingerprint

    cfg = TrainConfig(steps=3)
    # the key a config had before the field existed: its JSON dump without it
    # (update_scale came later, also keyed only when set: tests/test_interpolation.py)
    before = hashlib.sha256(cfg.model_dump_json(exclude={"attention", "update_scale"}).encode() + b"\x00").hexdigest()
    assert fingerprint(cfg) == before
    assert fingerprint(cfg.model_copy(update={"attention": "eager"})) != before
