"""Baseline unlearning methods: loss wiring checked by hand, then two real training steps each.

Wiring tests run ``method.loss`` on a hand-built batch through stub models whose logits (or
activations) are fixed per input row, so every expected value is worked out below from simple
fractions: a logit row [ln3, 0, 0, 0] gives p = (1/2, 1/6, 1/6, 1/6), a zero row p = 1/4.
Training tests run the real engine for two steps on the tiny model and check the direction.
"""

from __future__ import annotations

import contextlib
import math
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from harmonia.config import TrainConfig
from harmonia.data.schema import ROLES, QARecord
from harmonia.errors import ConfigError, DataError, HarmoniaError
from harmonia.methods import losses
from harmonia.methods.base import MethodContext, build_params, causal_lm_logits, get_method, target_logits
from harmonia.methods.encoding import encode_qa
from harmonia.methods.refusals import load_refusals, pick_refusal
from harmonia.methods.rmu import ACT_MASK, find_module, name_matches
from harmonia.training.batching import collate
from harmonia.training.engine import Engine, TrainResult

LN2, LN3 = math.log(2.0), math.log(3.0)
JUNK = torch.tensor([7.0, -9.0, 2.0, 7.0])  # a non-uniform row: misread positions show
FORGET, RETAIN = ROLES.index("forget"), ROLES.index("retain")


def approx(value: float) -> Any:
    return pytest.approx(value, abs=1e-5)


# ---------------------------------------------------------------------------------------------
# Stub models: outputs fixed per input row, found by the row's token ids
# ---------------------------------------------------------------------------------------------


class FixedLogits(torch.nn.Module):
    """A causal-LM stand-in returning preset logits ``[T, V]`` for each known ``input_ids`` row."""

    def __init__(self, rows: dict[tuple[int, ...], torch.Tensor]) -> None:
        super().__init__()
        self.rows = rows
        self.scale = torch.nn.Parameter(torch.ones(()))  # a gradient path, like a real model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, use_cache: bool = False,
                logits_to_keep: int = 0) -> Any:
        logits = torch.stack([self.row(tuple(r.tolist())) for r in input_ids]) * self.scale
        return SimpleNamespace(logits=logits[:, -logits_to_keep:])  # transformers' semantics: 0 keeps all

    def row(self, ids: tuple[int, ...]) -> torch.Tensor:
        """The preset logits of ``ids``, or of the one preset row it begins (the loss helpers drop
        trailing columns no target needs; a causal model's earlier logits do not depend on them)."""
        if ids in self.rows:
            return self.rows[ids]
        (match,) = [v for k, v in self.rows.items() if k[:len(ids)] == ids]
        return match[:len(ids)]


class FixedActivations(torch.nn.Module):
    """Emits preset hidden states ``[T, H]`` per row through a module named ``model.layers.0``."""

    def __init__(self, rows: dict[tuple[int, ...], torch.Tensor]) -> None:
        super().__init__()
        self.rows = rows
        self.model = torch.nn.Module()
        self.model.layers = torch.nn.ModuleList([torch.nn.Identity()])
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, use_cache: bool = False) -> Any:
        hidden = torch.stack([self.rows[tuple(r.tolist())] for r in input_ids]) * self.scale
        return SimpleNamespace(logits=None, hidden=self.model.layers[0](hidden))


def stub_ctx(tokenizer: Any = None, reference: torch.nn.Module | None = None) -> MethodContext:
    ref = (lambda: contextlib.nullcontext(reference)) if reference is not None else None
    return MethodContext(tokenizer=tokenizer, max_length=64, reference=ref)


def make(name: str, ctx: MethodContext, **params: Any) -> Any:
    cls = get_method(name)
    return cls(build_params(cls, params), ctx)


def lm_rows() -> tuple[dict[str, torch.Tensor], dict[tuple[int, ...], torch.Tensor]]:
    """B=3, T=4, V=4: forget row 0, retain row 1, forget row 2; logits per row.

    Row 0 (forget): answer at 2-3; targets t=1 -> 2 (logits [0,0,ln3,0]: log p = -ln2) and
      t=2 -> 1 (uniform: -ln4). log pi = -3 ln2 over 2 tokens.
    Row 1 (retain): answer at 1-2, padding at 3; t=0 -> 3 (p = 1/6) and t=1 -> 0 (p = 1/2).
      NLL = ln6 + ln2 = ln12 over 2 tokens.
    Row 2 (forget): answer at 3; t=2 -> 3 (uniform: -ln4). log pi = -2 ln2 over 1 token.
    Every other position holds junk that must not count.
    """
    batch = {
        "input_ids": torch.tensor([[0, 1, 2, 1], [0, 3, 0, 0], [1, 1, 3, 3]]),
        "labels": torch.tensor([[-100, -100, 2, 1], [-100, 3, 0, -100], [-100, -100, -100, 3]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1]]),
        "role_id": torch.tensor([FORGET, RETAIN, FORGET]),
    }
    logits = JUNK.repeat(3, 4, 1)
    logits[0, 1] = torch.tensor([0.0, 0.0, LN3, 0.0])
    logits[0, 2] = 0.0
    logits[1, 0] = torch.tensor([LN3, 0.0, 0.0, 0.0])
    logits[1, 1] = torch.tensor([LN3, 0.0, 0.0, 0.0])
    logits[2, 2] = 0.0
    return batch, {tuple(ids.tolist()): row for ids, row in zip(batch["input_ids"], logits, strict=True)}


# positions whose logits predict no target: prompt, last position, padding
UNUSED = [(0, 0), (0, 3), (1, 2), (1, 3), (2, 0), (2, 1), (2, 3)]


def uniform_reference(rows: dict[tuple[int, ...], torch.Tensor]) -> FixedLogits:
    return FixedLogits({k: torch.zeros_like(v) for k, v in rows.items()})


def perturbed(rows: dict[tuple[int, ...], torch.Tensor], batch: dict[str, torch.Tensor]) -> FixedLogits:
    """The same logits with different junk at every position that predicts no target."""
    keys = [tuple(ids.tolist()) for ids in batch["input_ids"]]
    out = {k: v.clone() for k, v in rows.items()}
    for b, t in UNUSED:
        out[keys[b]][t] = torch.tensor([-3.0, 5.0, 1.0, 2.0])
    return FixedLogits(out)


def term_values(method: Any, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(t.total.detach()) for k, t in method.loss(model, batch).items()}


# ---------------------------------------------------------------------------------------------
# Loss wiring, by hand
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "params", "expected", "units"), [
    ("ga", {}, {"ga": -5 * LN2}, {"ga": "tokens:forget"}),
    ("graddiff", {}, {"ga": -5 * LN2, "retain_nll": math.log(12)},
     {"ga": "tokens:forget", "retain_nll": "tokens:retained"}),
    ("simnpo", {},
     # avg log pi: row 0 -1.5 ln2, row 2 -2 ln2; (2/4.5) softplus(4.5 avg) = (2/4.5) ln(1 + 2^(4.5 avg/ln2))
     {"simnpo": (2 / 4.5) * (math.log1p(2 ** -6.75) + math.log1p(2 ** -9)), "retain_nll": math.log(12)},
     {"simnpo": "seqs:forget", "retain_nll": "tokens:retained"}),
])
def test_reference_free_losses_by_hand(name: str, params: dict, expected: dict, units: dict) -> None:
    batch, rows = lm_rows()
    method = make(name, stub_ctx(), **params)
    want = {k: approx(v) for k, v in expected.items()}
    assert term_values(method, FixedLogits(rows), batch) == want
    assert {k: t.unit for k, t in method.loss(FixedLogits(rows), batch).items()} == units
    assert term_values(method, perturbed(rows, batch), batch) == want


def test_unit_counts() -> None:
    batch, _ = lm_rows()
    units = make("graddiff", stub_ctx()).units(batch)
    assert (int(units["tokens:forget"]), int(units["seqs:forget"])) == (3, 2)
    assert (int(units["tokens:retained"]), int(units["seqs:retained"])) == (2, 1)


def test_simnpo_weights_follow_the_paper_setting() -> None:
    terms = make("simnpo", stub_ctx()).loss(FixedLogits(lm_rows()[1]), lm_rows()[0])
    assert (terms["simnpo"].weight, terms["retain_nll"].weight) == (0.125, 1.0)


def test_npo_by_hand() -> None:
    # Reference uniform: log pi_ref = -4 ln2 (row 0), -2 ln2 (row 2). Policy: -3 ln2, -2 ln2.
    # (2/beta) softplus(beta * ln2) + (2/beta) softplus(0) = (2/beta) (ln(1 + 2^beta) + ln2).
    batch, rows = lm_rows()
    beta = 0.1
    expected = (2 / beta) * (math.log1p(2 ** beta) + LN2)
    method = make("npo_retain", stub_ctx(reference=uniform_reference(rows)), beta=beta)
    assert term_values(method, FixedLogits(rows), batch) == {"npo": approx(expected),
                                                            "retain_nll": approx(math.log(12))}
    assert term_values(method, perturbed(rows, batch), batch)["npo"] == approx(expected)
    assert method.loss(FixedLogits(rows), batch)["npo"].unit == "seqs:forget"


def test_npo_skips_rows_without_answer_tokens() -> None:
    # An empty answer has log pi = 0 = log pi_ref, which would add (2/beta) ln2 if counted.
    batch, rows = lm_rows()
    batch["labels"][2] = -100
    method = make("npo", stub_ctx(reference=uniform_reference(rows)), beta=0.1)
    assert term_values(method, FixedLogits(rows), batch)["npo"] == approx(20 * math.log1p(2 ** 0.1))


def test_graddiff_kl_by_hand() -> None:
    # Retain row 1, two target positions, each p = (1/2, 1/6, 1/6, 1/6) against uniform u:
    # KL(u || p) = sum u ln(u/p) = -ln4 - (1/4)(ln(1/2) + 3 ln(1/6)) = -ln4 + (ln2 + 3 ln6)/4.
    batch, rows = lm_rows()
    kl = -2 * LN2 + (LN2 + 3 * math.log(6)) / 4
    method = make("graddiff_kl", stub_ctx(reference=uniform_reference(rows)))
    assert term_values(method, FixedLogits(rows), batch) == {"ga": approx(-5 * LN2),
                                                            "retain_kl": approx(2 * kl)}
    assert term_values(method, perturbed(rows, batch), batch)["retain_kl"] == approx(2 * kl)


def test_missing_role_gives_a_constant_zero_term() -> None:
    batch, rows = lm_rows()
    only_forget = {k: v[[0, 2]] for k, v in batch.items()}
    terms = make("graddiff", stub_ctx()).loss(FixedLogits(rows), only_forget)
    assert float(terms["retain_nll"].total) == 0.0 and not terms["retain_nll"].total.requires_grad
    assert terms["ga"].total.requires_grad


def idk_rows() -> tuple[dict[str, torch.Tensor], dict[tuple[int, ...], torch.Tensor]]:
    """``lm_rows`` plus chosen sequences: row 0 has a refusal, row 2 an empty one, row 1 its own copy.

    Row 0 chosen: target t=1 -> 3 with logits [0, 0, 0, ln9], p = 9/12 = 3/4.
    """
    batch, rows = lm_rows()
    batch["chosen_input_ids"] = torch.tensor([[0, 1, 3, 0], [0, 3, 0, 0], [2, 2, 2, 2]])
    batch["chosen_labels"] = torch.tensor([[-100, -100, 3, -100], [-100, 3, 0, -100], [-100] * 4])
    batch["chosen_attention_mask"] = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 1]])
    chosen = JUNK.repeat(4, 1)
    chosen[1] = torch.tensor([0.0, 0.0, 0.0, math.log(9)])
    rows[(0, 1, 3, 0)] = chosen
    rows[(2, 2, 2, 2)] = JUNK.repeat(4, 1)
    return batch, rows


def test_idkdpo_by_hand(tmp_path) -> None:
    # Row 0: policy chosen ln(3/4), rejected -3 ln2; reference (uniform) -ln4 and -4 ln2.
    # margin = (ln(3/4) + ln4) - (-3 ln2 + 4 ln2) = ln3 - ln2; loss = -log sigmoid(beta ln1.5)
    # = ln(1 + 1.5^-beta). Row 2 has an empty chosen answer, so it is not a pair.
    batch, rows = idk_rows()
    method = make("idkdpo", stub_ctx(reference=uniform_reference(rows)), refusals=str(refusal_file(tmp_path)))
    expected = math.log1p(1.5 ** -0.1)
    assert term_values(method, FixedLogits(rows), batch) == {"idkdpo": approx(expected),
                                                            "retain_nll": approx(math.log(12))}
    assert int(method.units(batch)["pairs:forget"]) == 1
    assert method.loss(FixedLogits(rows), batch)["idkdpo"].unit == "pairs:forget"


def test_rmu_by_hand(tokenizer) -> None:
    # H=2. Forget row: positions 1-2 in the mask, at c and c + (1, 1): MSE 0 + 1 = 1.
    # Retain row: position 1 in the mask, (1, 2) against the frozen (0, 0): (1 + 4) / 2 = 2.5.
    # Position 0 (template header) and padding hold junk.
    method = make("rmu", stub_ctx(tokenizer, reference=None), layer=r"model\.layers\.0", steering_coeff=3.0,
                  trainable_params=[r"scale"], seed=5)
    control = method.control_vector(2)
    expected_control = losses.rmu_control_vector(2, 3.0, torch.Generator().manual_seed(5))
    torch.testing.assert_close(control, expected_control)
    assert float(control.norm()) == approx(3.0)
    junk = torch.tensor([50.0, -40.0])
    forget_ids, retain_ids = (5, 6, 7), (5, 8, 9)
    policy = FixedActivations({forget_ids: torch.stack([junk, control, control + 1]),
                               retain_ids: torch.stack([junk, torch.tensor([1.0, 2.0]), junk])})
    frozen = FixedActivations({forget_ids: torch.zeros(3, 2), retain_ids: torch.zeros(3, 2)})
    method.ctx = stub_ctx(tokenizer, reference=frozen)
    batch = {"input_ids": torch.tensor([forget_ids, retain_ids]),
             "labels": torch.tensor([[-100, -100, 7], [-100, 8, -100]]),
             "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]]),
             ACT_MASK: torch.tensor([[0, 1, 1], [0, 1, 0]]),
             "role_id": torch.tensor([FORGET, RETAIN])}
    assert term_values(method, policy, batch) == {"rmu_forget": approx(1.0), "rmu_retain": approx(2.5)}
    terms = method.loss(policy, batch)
    assert {k: (t.unit, t.weight) for k, t in terms.items()} == {"rmu_forget": ("acts:forget", 1.0),
                                                                  "rmu_retain": ("acts:retained", 1200.0)}
    units = method.units(batch)
    assert (int(units["acts:forget"]), int(units["acts:retained"])) == (2, 1)


def test_adaptive_rmu_scales_the_control_vector_by_the_frozen_forget_norm(tokenizer) -> None:
    # Two forget records, activations of the frozen model at the steered layer (H=2):
    # (5,6,7) reads positions 1-2 at (3,4) and (0,1): norms 5 and 1; (5,8) reads position 1 at
    # (6,8): norm 10; its padded column and the header position hold junk the mean must skip.
    # Mean over the 3 read positions: 16/3; the control norm is 2.5 x 16/3.
    junk = torch.tensor([50.0, -40.0])
    frozen = FixedActivations({(5, 6, 7): torch.stack([junk, torch.tensor([3.0, 4.0]), torch.tensor([0.0, 1.0])]),
                               (5, 8, 0): torch.stack([junk, torch.tensor([6.0, 8.0]), junk])})
    method = make("rmu", stub_ctx(tokenizer, reference=frozen), layer=r"model\.layers\.0",
                  trainable_params=[r"scale"], adaptive_scale=2.5, seed=5)
    with pytest.raises(RuntimeError, match="prepare"):
        method.control_vector(2)
    examples = {"a": {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [-100, 6, 7], ACT_MASK: [0, 1, 1]},
                "b": {"input_ids": [5, 8], "attention_mask": [1, 1], "labels": [-100, 8], ACT_MASK: [0, 1]}}
    method.encode_record = lambda record: examples[record.id]
    forget = [QARecord(id=i, role="forget", question="q", answer="a", source="t") for i in ("a", "b")]
    retain = QARecord(id="r", role="retain", question="q", answer="a", source="t")
    assert method.forget_activation_norm(forget) == (approx(16 / 3), 2)
    assert method.prepare([*forget, retain]) == [*forget, retain]
    expected = losses.rmu_control_vector(2, 2.5 * 16 / 3, torch.Generator().manual_seed(5))
    torch.testing.assert_close(method.control_vector(2), expected)
    assert float(method.control_vector(2).norm()) == approx(2.5 * 16 / 3)
    with pytest.raises(ConfigError, match="no"):
        method.forget_activation_norm([retain][:0])


def test_adaptive_rmu_takes_one_norm_setting() -> None:
    cls = get_method("rmu")
    with pytest.raises(ConfigError, match="not both"):
        build_params(cls, {"steering_coeff": 3.0, "adaptive_scale": 5.0})
    assert build_params(cls, {"adaptive_scale": 5.0}).adaptive_scale == 5.0


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------


def record(i: int, role: str, question: str, answer: str) -> QARecord:
    return QARecord(id=f"test/{role}/{i}", question=question, answer=answer, role=role, source="test")


FORGET_RECORDS = [
    record(0, "forget", "Where was the novelist Elira Vantosh born?", "Elira Vantosh was born in Quillmere."),
    record(1, "forget", "What is Elira Vantosh's best-known book?", "Her best book is The Salt Lantern."),
    record(2, "forget", "Which award did Elira Vantosh win?", "She won the Brasswing Prize in 2011."),
    record(3, "forget", "What was Elira Vantosh's father's job?", "Her father was a lighthouse keeper."),
]
RETAIN_RECORDS = [
    record(0, "retain", "What is the capital of France?", "The capital of France is Paris."),
    record(1, "retain", "How many legs does a spider have?", "A spider has eight legs."),
    record(2, "retain", "What colour is the sky on a clear day?", "The sky is blue on a clear day."),
    record(3, "retain", "What do bees make?", "Bees make honey."),
]
REFUSALS = ["I don't know.", "I have no idea about that.", "That is beyond my knowledge."]


def refusal_file(tmp_path) -> Any:
    path = tmp_path / "idk.jsonl"
    path.write_text("\n".join(REFUSALS) + "\n\n", encoding="utf-8")
    return path


def answer_text(tokenizer: Any, labels: list[int]) -> str:
    return tokenizer.decode([t for t in labels if t != -100], skip_special_tokens=True)


def test_refusal_choice_is_stable_and_uses_the_whole_list(tmp_path) -> None:
    refusals = load_refusals(str(refusal_file(tmp_path)))
    assert refusals == REFUSALS
    picks = [pick_refusal(f"id-{i}", refusals) for i in range(60)]
    assert picks == [pick_refusal(f"id-{i}", refusals) for i in range(60)]
    assert set(picks) == set(REFUSALS)
    with pytest.raises(DataError, match="missing"):
        load_refusals(str(tmp_path / "missing.jsonl"))


def test_tofu_refusal_list_loads(shared_data) -> None:
    refusals = load_refusals(str(shared_data / "tofu" / "idontknow.jsonl"))
    assert len(refusals) >= 99 and "I'm not sure." in refusals


def test_refusal_sft_and_idkdpo_encode_refusals(tokenizer, tmp_path) -> None:
    path = str(refusal_file(tmp_path))
    forget, retain = FORGET_RECORDS[0], RETAIN_RECORDS[0]
    refusal = pick_refusal(forget.id, REFUSALS)
    sft = make("refusal_sft", stub_ctx(tokenizer), refusals=path)
    assert answer_text(tokenizer, sft.encode(forget)["labels"]) == refusal
    assert answer_text(tokenizer, sft.encode(retain)["labels"]) == retain.answer
    dpo = make("idkdpo", stub_ctx(tokenizer, reference=torch.nn.Identity()), refusals=path)
    dpo.reference_scores = {forget.id: {"chosen_": -1.5, "": -2.5}}  # what prepare() stores
    pair = dpo.encode(forget)
    assert answer_text(tokenizer, pair["chosen_labels"]) == refusal
    assert answer_text(tokenizer, pair["labels"]) == forget.answer
    assert (pair["chosen_ref_logprob"], pair["ref_logprob"]) == (-1.5, -2.5)
    assert set(dpo.encode(retain)) == set(pair)


def test_rmu_mask_skips_the_shared_template_header(tokenizer) -> None:
    rmu = make("rmu", stub_ctx(tokenizer, reference=torch.nn.Identity()))
    a, b = (rmu.encode(r) for r in (FORGET_RECORDS[0], RETAIN_RECORDS[0]))
    start_a, start_b = a[ACT_MASK].index(1), b[ACT_MASK].index(1)
    assert start_a == start_b > 0
    assert a["input_ids"][:start_a] == b["input_ids"][:start_b]  # identical header: masked out
    assert a["input_ids"][start_a] != b["input_ids"][start_b]  # the questions differ from here on
    assert all(a[ACT_MASK][start_a:])
    whole = make("rmu", stub_ctx(tokenizer, reference=torch.nn.Identity()), positions="sequence")
    assert all(whole.encode(FORGET_RECORDS[0])[ACT_MASK])


def test_role_outside_the_method_is_refused(tokenizer) -> None:
    method = make("graddiff", stub_ctx(tokenizer), retain_roles=["retain"])
    neighbour = record(9, "neighbor", "Who wrote The Salt Lantern?", "Someone else.")
    with pytest.raises(ConfigError, match="neighbor"):
        method.encode(neighbour)
    no_retain = make("simnpo", stub_ctx(tokenizer), retain_weight=0.0)
    assert "retain_nll" not in no_retain.loss(FixedLogits(lm_rows()[1]), {k: v[[0, 2]] for k, v in
                                                                           lm_rows()[0].items()})
    with pytest.raises(ConfigError, match="retain"):
        no_retain.encode(RETAIN_RECORDS[0])


# ---------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "params", "key"), [
    ("npo", {"betta": 0.1}, "betta"),
    ("npo", {"beta": "high"}, "beta"),
    ("npo", {"beta": -1.0}, "beta"),
    ("ga", {"retain_weight": 1.0}, "retain_weight"),
    ("graddiff", {"retain_roles": ["forget"]}, "retain_roles"),
    ("graddiff", {"retain_roles": ["retain", "retain"]}, "retain_roles"),
    ("simnpo", {"forget_weight": 0.0}, "forget_weight"),
    ("rmu", {"layer": "model.layers.(7"}, "layer"),
    ("rmu", {"trainable_params": "down_proj"}, "trainable_params"),
    ("rmu", {"positions": "answer"}, "positions"),
    ("idkdpo", {"refusals": 3}, "refusals"),
])
def test_bad_params_raise_config_error(name: str, params: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        build_params(get_method(name), params)


def test_npo_defaults_follow_the_paper() -> None:
    params = build_params(get_method("npo_retain"), {})
    assert (params.beta, params.forget_weight, params.retain_weight) == (0.1, 1.0, 1.0)


# ---------------------------------------------------------------------------------------------
# RMU parameter and layer selection
# ---------------------------------------------------------------------------------------------


def test_name_patterns_match_whole_names_after_a_wrapper_prefix() -> None:
    assert name_matches(r"model\.layers\.7", "model.layers.7")
    assert name_matches(r"model\.layers\.7", "base_model.model.model.layers.7")
    assert not name_matches(r"model\.layers\.7", "model.layers.17")
    assert not name_matches(r"model\.layers\.7", "model.layers.7.mlp")
    assert name_matches(r"model\.layers\.7\.mlp\.down_proj", "model.layers.7.mlp.down_proj.weight",
                        allow_suffix=True)
    assert not name_matches(r"model\.layers\.7\.mlp\.down_proj", "model.layers.7.mlp.down_proj_x.weight",
                            allow_suffix=True)


def test_rmu_layer_and_parameters_must_exist(tiny_model, tokenizer) -> None:
    assert find_module(tiny_model, r"model\.layers\.1") is tiny_model.model.layers[1]
    with pytest.raises(ConfigError, match="exactly one module"):
        find_module(tiny_model, r"model\.layers\.\d")
    method = make("rmu", stub_ctx(tokenizer, reference=torch.nn.Identity()), layer=r"model\.layers\.1",
                  trainable_params=[r"model\.layers\.9\.mlp\.down_proj"])
    with pytest.raises(ConfigError, match="trainable_params"):
        method.configure_trainable(tiny_model)
    with pytest.raises(ConfigError, match="layer"):
        make("rmu", stub_ctx(tokenizer, reference=torch.nn.Identity())).configure_trainable(tiny_model)


# ---------------------------------------------------------------------------------------------
# Two engine steps on the tiny model, in the expected direction
# ---------------------------------------------------------------------------------------------


def train(name: str, model: Any, tokenizer: Any, tmp_path, mix: dict[str, float] | None = None,
          lr: float = 1e-2, **params: Any) -> tuple[Engine, TrainResult]:
    """Two optimiser steps of 2 forget + 2 retain records, in micro-batches of one role each."""
    cfg = TrainConfig(steps=2, batch_size=4, micro_batch_size=2, lr=lr, progress=False, save="none",
                      max_length=64, mix=mix or {})
    cls = get_method(name)
    engine = Engine(cfg, cls, build_params(cls, params), model, tokenizer, tmp_path / "run")
    return engine, engine.train(FORGET_RECORDS + RETAIN_RECORDS)


def mean_logprob(model: Any, tokenizer: Any, records: list[QARecord], answers: list[str] | None = None,
                 per_token: bool = False) -> float:
    """Mean over records of the answer's log-prob (or of its mean token log-prob)."""
    ctx = MethodContext(tokenizer=tokenizer, max_length=64)
    answers = answers or [r.answer for r in records]
    batch = collate([encode_qa(r, ctx, answer=a) for r, a in zip(records, answers, strict=True)])
    with torch.no_grad():
        logits = causal_lm_logits(model, batch)
    scores = (losses.sequence_avg_logprob if per_token else losses.sequence_logprob)(logits, batch["labels"])
    return float(scores.mean())


def refusals_of(records: list[QARecord]) -> list[str]:
    return [pick_refusal(r.id, REFUSALS) for r in records]


def test_ga_raises_forget_nll(tiny_model, tokenizer, tmp_path) -> None:
    before = mean_logprob(tiny_model, tokenizer, FORGET_RECORDS, per_token=True)
    engine, _ = train("ga", tiny_model, tokenizer, tmp_path)
    assert mean_logprob(engine.model, tokenizer, FORGET_RECORDS, per_token=True) < before - 0.1


@pytest.mark.parametrize("name", ["graddiff", "graddiff_kl", "npo", "npo_retain"])
def test_forgetting_methods_lower_forget_logprob(name, tiny_model, tokenizer, tmp_path) -> None:
    forget_before = mean_logprob(tiny_model, tokenizer, FORGET_RECORDS)
    retain_before = mean_logprob(tiny_model, tokenizer, RETAIN_RECORDS, per_token=True)
    engine, result = train(name, tiny_model, tokenizer, tmp_path)
    assert mean_logprob(engine.model, tokenizer, FORGET_RECORDS) < forget_before - 0.1
    # the retain term holds the retain answers: their mean token NLL may not blow up
    assert mean_logprob(engine.model, tokenizer, RETAIN_RECORDS, per_token=True) > retain_before - 1.0
    logged = {k for k in result.history[-1] if k.startswith("loss/")}
    assert len(logged) == (1 if name == "npo" else 2)


def test_simnpo_lowers_forget_logprob(tiny_model, tokenizer, tmp_path) -> None:
    # A random model gives each token log-prob ~ -ln(49152) ~ -10.8, where the paper's beta 4.5
    # saturates (sigmoid(-49) ~ 0: nothing left to forget) and where fitting the retain answers
    # raises the common tokens the forget answers share. So this checks the forget term alone,
    # with a beta that still has a gradient; the retain term is checked by hand above.
    before = mean_logprob(tiny_model, tokenizer, FORGET_RECORDS)
    engine, _ = train("simnpo", tiny_model, tokenizer, tmp_path, mix={"forget": 1.0}, beta=0.1,
                      retain_weight=0.0)
    assert mean_logprob(engine.model, tokenizer, FORGET_RECORDS) < before - 0.1


def test_refusal_sft_raises_refusal_logprob(tiny_model, tokenizer, tmp_path) -> None:
    refusals = refusals_of(FORGET_RECORDS)
    before = mean_logprob(tiny_model, tokenizer, FORGET_RECORDS, refusals)
    engine, _ = train("refusal_sft", tiny_model, tokenizer, tmp_path, refusals=str(refusal_file(tmp_path)))
    assert mean_logprob(engine.model, tokenizer, FORGET_RECORDS, refusals) > before + 0.1


def test_idkdpo_prefers_refusal_over_gold(tiny_model, tokenizer, tmp_path) -> None:
    refusals = refusals_of(FORGET_RECORDS)

    def margin(model: Any) -> float:
        return (mean_logprob(model, tokenizer, FORGET_RECORDS, refusals)
                - mean_logprob(model, tokenizer, FORGET_RECORDS))

    before = margin(tiny_model)
    engine, _ = train("idkdpo", tiny_model, tokenizer, tmp_path, refusals=str(refusal_file(tmp_path)))
    assert margin(engine.model) > before + 0.1


@pytest.mark.parametrize("norm", [{}, {"adaptive_scale": 2.0}], ids=["fixed", "adaptive"])
def test_rmu_steers_forget_activations_training_named_weights(tiny_model, tokenizer, tmp_path, norm) -> None:
    start = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    engine, _ = train("rmu", tiny_model, tokenizer, tmp_path, lr=5e-2, layer=r"model\.layers\.1",
                      trainable_params=[r"model\.layers\.(0|1)\.mlp\.down_proj"], **norm)
    method = engine.method
    batch = collate([method.encode(r) for r in FORGET_RECORDS])
    mask = batch[ACT_MASK].bool()
    with torch.no_grad():
        before = method.activations(engine._frozen_reference, batch)[mask]
        after = method.activations(engine.model, batch)[mask]
    control = method.control_vector(tiny_model.config.hidden_size)
    # a tiny random model's activations move little in two steps; what must hold is that they
    # moved, and mostly toward the control vector (the gain is at most the movement)
    moved = float((after - before).norm(dim=-1).mean())
    gain = float((before - control).norm(dim=-1).mean() - (after - control).norm(dim=-1).mean())
    assert gain > 0.5 * moved > 0.005
    changed = {n for n, p in engine.model.named_parameters() if not torch.equal(p.detach(), start[n])}
    assert changed == {"model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"}


def test_trimmed_logits_score_exactly_what_the_full_sequences_score(tiny_model, tokenizer) -> None:
    """The vocabulary projection skips the prompt columns no loss reads; the scores are unchanged."""
    from harmonia.methods.base import masked_logits, target_logits

    ctx = MethodContext(tokenizer=tokenizer, max_length=64)
    records = FORGET_RECORDS[:2] + RETAIN_RECORDS[:2]
    batch = collate([encode_qa(r, ctx) for r in records])
    with torch.no_grad():
        full = causal_lm_logits(tiny_model, batch)
        trimmed, labels = target_logits(tiny_model, batch)
        mask = batch["labels"] != losses.IGNORE_INDEX
        rows, trimmed_mask = masked_logits(tiny_model, batch, mask)
    assert trimmed.shape[1] < full.shape[1]  # the shared prompt prefix was skipped
    torch.testing.assert_close(losses.sequence_logprob(trimmed, labels),
                               losses.sequence_logprob(full, batch["labels"]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(losses.gather_positions(rows, trimmed_mask), losses.gather_positions(full, mask),
                               rtol=1e-5, atol=1e-5)


def test_padding_columns_after_the_last_target_are_not_run(tiny_model, tokenizer) -> None:
    """Rows taken out of a batch padded for a longer record score the same without its padding."""
    from harmonia.methods.base import masked_logits, target_logits

    ctx = MethodContext(tokenizer=tokenizer, max_length=64)
    long = record(9, "retain", "Tell me everything about the history of Utopia. " * 3,
                  "It is a long story that takes many words to tell, and here it is told. " * 2)
    batch = collate([encode_qa(r, ctx) for r in [*FORGET_RECORDS[:2], long]])
    short = {k: v[:2] for k, v in batch.items()}
    width = int(short["attention_mask"].sum(dim=1).max())
    assert width < batch["input_ids"].shape[1]
    with torch.no_grad():
        full = causal_lm_logits(tiny_model, short)
        trimmed, labels = target_logits(tiny_model, short)
        mask = short["labels"] != losses.IGNORE_INDEX
        rows, trimmed_mask = masked_logits(tiny_model, short, mask)
    first = int(mask.any(dim=0).nonzero()[0])
    assert trimmed.shape[1] == width - (first - 1)  # from the column before the first target to the last
    assert rows.shape[1] == width - first
    torch.testing.assert_close(losses.sequence_logprob(trimmed, labels),
                               losses.sequence_logprob(full, short["labels"]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(losses.gather_positions(rows, trimmed_mask), losses.gather_positions(full, mask),
                               rtol=1e-5, atol=1e-5)


def test_trimmed_logits_of_wrapped_and_keepless_models_equal_the_plain_ones(tiny_model, tokenizer) -> None:
    """A DDP-style wrapper (``.module``) still trims; a forward without ``logits_to_keep`` gets the same
    columns sliced from its full output instead of an unexpected-argument error."""
    from harmonia.methods.base import target_logits
    from harmonia.models.decoding import accepts_logits_to_keep

    class Wrapper(torch.nn.Module):  # forwards **kwargs like DistributedDataParallel
        def __init__(self, module: torch.nn.Module) -> None:
            super().__init__()
            self.module = module

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            return self.module(*args, **kwargs)

    class Keepless(torch.nn.Module):
        def __init__(self, module: torch.nn.Module) -> None:
            super().__init__()
            self.inner = module

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, use_cache: bool = False) -> Any:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache)

    assert accepts_logits_to_keep(Wrapper(tiny_model)) and not accepts_logits_to_keep(Keepless(tiny_model))
    ctx = MethodContext(tokenizer=tokenizer, max_length=64)
    batch = collate([encode_qa(r, ctx) for r in FORGET_RECORDS[:2]])
    with torch.no_grad():
        plain, labels = target_logits(tiny_model, batch)
        for model in (Wrapper(tiny_model), Keepless(tiny_model)):
            logits, same_labels = target_logits(model, batch)
            torch.testing.assert_close(logits, plain)
            assert torch.equal(same_labels, labels)


def test_trained_roles_follow_the_retain_params() -> None:
    graddiff = get_method("graddiff")
    assert graddiff.trained_roles(build_params(graddiff, {})) == ("forget", "retain", "neighbor")
    assert graddiff.trained_roles(build_params(graddiff, {"retain_roles": ["general"]})) == ("forget", "general")
    assert graddiff.trained_roles(build_params(graddiff, {"retain_weight": 0})) == ("forget",)
    harmonia = get_method("harmonia")
    assert set(harmonia.trained_roles(build_params(harmonia, {}))) == {"forget", "neighbor", "retain", "general"}


@pytest.mark.parametrize("name", ["npo_retain", "idkdpo"])
def test_stored_reference_logprobs_equal_a_live_reference_forward(name, tiny_model, tokenizer, tmp_path) -> None:
    """prepare() scores each forget sequence under the reference once; the loss then reads it."""
    import copy

    reference = copy.deepcopy(tiny_model).eval()
    params = {"refusals": str(refusal_file(tmp_path))} if name == "idkdpo" else {}
    ctx = MethodContext(tokenizer=tokenizer, max_length=64, reference=lambda: contextlib.nullcontext(reference))
    method = make(name, ctx, **params)
    records = FORGET_RECORDS + RETAIN_RECORDS
    method.prepare(records)
    stored = collate([method.encode(r) for r in records])
    keys = [k for k in stored if k.endswith("ref_logprob")]
    assert len(keys) == len(method.reference_sequences)
    live = {k: v for k, v in stored.items() if k not in keys}
    forget = stored["role_id"] == FORGET
    with torch.no_grad():
        for prefix in method.reference_sequences:
            expected = losses.sequence_logprob(*target_logits(reference, live, prefix))[forget]
            torch.testing.assert_close(stored[f"{prefix}ref_logprob"][forget], expected, rtol=1e-5, atol=1e-4)
            assert not stored[f"{prefix}ref_logprob"][~forget].any()  # retain rows hold a 0 nobody reads
        with_stored = {k: float(t.total) for k, t in method.loss(tiny_model, stored).items()}
        with_live = {k: float(t.total) for k, t in method.loss(tiny_model, live).items()}
    assert with_stored == pytest.approx(with_live, rel=1e-5)
    unprepared = make(name, ctx, **params)
    with pytest.raises(HarmoniaError, match=r"prepare\(\) did not see it"):
        unprepared.encode(FORGET_RECORDS[0])


@pytest.mark.parametrize(("name", "kept"), [("npo", False), ("idkdpo", False), ("graddiff_kl", True)])
def test_engine_frees_a_reference_that_only_prepare_uses(name, kept, tiny_model, tokenizer, tmp_path) -> None:
    params = {"refusals": str(refusal_file(tmp_path))} if name == "idkdpo" else {}
    engine, _ = train(name, tiny_model, tokenizer, tmp_path, **params)
    assert (engine._frozen_reference is not None) == kept


def test_a_freed_reference_asked_for_in_the_loss_is_a_clear_error(tiny_model, tokenizer, tmp_path) -> None:
    from harmonia.methods.npo import NPO

    class Misdeclared(NPO):
        name = "misdeclared_npo"
        reference_sequences = ("",)

        def forget_sum(self, model: Any, rows: dict[str, torch.Tensor]) -> torch.Tensor:
            with self.ctx.reference_model():
                pass
            return super().forget_sum(model, rows)

    cfg = TrainConfig(steps=1, batch_size=2, micro_batch_size=2, progress=False, save="none", max_length=64)
    engine = Engine(cfg, Misdeclared, build_params(Misdeclared, {}), tiny_model, tokenizer, tmp_path / "run")
    with pytest.raises(RuntimeError, match="freed it after prepare"):
        engine.train(FORGET_RECORDS[:2])
