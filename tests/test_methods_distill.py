"""The distillation methods (harmonia, duet, bild): targets, alignment, cache, loss values, engine runs.

Hand-computed losses use a table LM (logits depend only on the current token), so every
position's logits are chosen by hand. Runs through the engine use the tiny random Llama with
the real SmolLM2 tokenizer.
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from harmonia.config import TrainConfig
from harmonia.data.schema import ROLES, QARecord
from harmonia.errors import ConfigError
from harmonia.methods.base import MethodContext, build_params, get_method
from harmonia.methods.distill import Harmonia
from harmonia.methods.losses import TopK, gather_positions
from harmonia.models.tiny import build_tiny_model
from harmonia.teacher.decoding import Amplification
from harmonia.teacher.targets import distill_features, teacher_rows, weights_fingerprint
from harmonia.training.batching import collate
from harmonia.training.engine import Engine

# ---------------------------------------------------------------------------------------------
# Hand-built batch on a table LM
# ---------------------------------------------------------------------------------------------

JUNK_S = [9.0, -9.0, 9.0, -9.0]  # student logits at prompt and padding positions
JUNK_T = [-9.0, 9.0, -9.0, 9.0]  # teacher logits there: huge losses if they were not masked


class TableLM(torch.nn.Module):
    """Logits = ``table[token]``: each position's logits are set by its token."""

    def __init__(self, table: list[list[float]]) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(torch.tensor(table))

    def forward(self, input_ids, attention_mask=None, use_cache=False, **_):
        class Out:
            logits = self.table[input_ids]

        return Out()


def hand_batch() -> tuple[dict[str, torch.Tensor], TableLM, TableLM]:
    """Row 0 (forget): distilled positions A, B. Row 1 (retain): distilled position C, then padding.

    Token ids: 0 junk/pad, 1 = A, 2 = B, 3 = C. Student and teacher tables (K = 2):
      A: s = [4, 1, 0, 5], t = [4, 3, 0, 0]: teacher Top-2 {0, 1}, diffs 0 and -2 -> SmoothL1
         0 and 1.5, pull 0.75; student Top-2 {3, 0}, outside {3}: smooth_l1 push
         SmoothL1(5 - 0) / 2 = 4.5 / 2 = 2.25, hinge relu(5 - 3) / 2 = 1.0.
      B: s = t = [0, 0, 2, 1]: nothing.
      C: s = [3.5, 2, 1, 0], t = [3, 2, 1, 0]: pull (0.125 + 0) / 2 = 0.0625, no push.
    """
    student = TableLM([JUNK_S, [4, 1, 0, 5], [0, 0, 2, 1], [3.5, 2, 1, 0]])
    teacher = TableLM([JUNK_T, [4, 3, 0, 0], [0, 0, 2, 1], [3, 2, 1, 0]])
    batch = collate(
        [
            {
                "input_ids": [0, 0, 1, 2],
                "attention_mask": [1, 1, 1, 1],
                "distill_mask": [0, 0, 1, 1],
                "teacher_input_ids": [0, 0, 0, 1, 2],
                "teacher_attention_mask": [1] * 5,
                "teacher_distill_mask": [0, 0, 0, 1, 1],
                "role_id": ROLES.index("forget"),
            },
            {
                "input_ids": [0, 3],
                "attention_mask": [1, 1],
                "distill_mask": [0, 1],
                "teacher_input_ids": [0, 0, 3],
                "teacher_attention_mask": [1, 1, 1],
                "teacher_distill_mask": [0, 0, 1],
                "role_id": ROLES.index("retain"),
            },
        ]
    )
    return batch, student, teacher


def hand_method(teacher: torch.nn.Module, name: str = "harmonia", **params) -> Harmonia:
    cls = get_method(name)
    ctx = MethodContext(tokenizer=None, max_length=16, reference=lambda: contextlib.nullcontext(teacher))
    return cls(build_params(cls, {"k": 2, **params}), ctx)


def values(terms) -> dict[str, float]:
    return {name: pytest.approx(float(t.total.detach()), abs=1e-5) for name, t in terms.items()}


@pytest.mark.parametrize(("push", "push_forget"), [("smooth_l1", 2.25), ("hinge", 1.0)])
def test_harmonia_loss_hand_values_with_prompt_and_padding_masked(push, push_forget):
    batch, student, teacher = hand_batch()
    method = hand_method(teacher, push=push, push_weight=0.5, role_weights={"forget": 2.0, "retain": 0.5})
    terms = method.loss(student, batch)
    assert values(terms) == {"pull:forget": 0.75, "push:forget": push_forget, "pull:retain": 0.0625, "push:retain": 0.0}
    assert {n: (t.unit, t.weight) for n, t in terms.items()} == {
        "pull:forget": ("positions:forget", 2.0),
        "push:forget": ("positions:forget", 1.0),
        "pull:retain": ("positions:retain", 0.5),
        "push:retain": ("positions:retain", 0.25),
    }
    units = {k: float(v) for k, v in method.units(batch).items()}
    assert units["positions:forget"] == 2 and units["positions:retain"] == 1 and units["positions"] == 3
    # the engine's normalisation: per role, sum / that role's positions, times the weight
    total = float(Engine._normalised(terms, units).detach())
    assert total == pytest.approx(2.0 * 0.75 / 2 + 1.0 * push_forget / 2 + 0.5 * 0.0625 / 1, abs=1e-5)


def test_first_weight_scales_only_each_records_first_distilled_position():
    batch, student, teacher = hand_batch()
    # row 0 distils B (no loss) first, then A (pull 0.75, smooth_l1 push 2.25); row 1 only C
    batch["input_ids"][0] = torch.tensor([0, 0, 2, 1])
    batch["teacher_input_ids"][0] = torch.tensor([0, 0, 0, 2, 1])
    plain = values(hand_method(teacher).loss(student, batch))
    weighted = values(hand_method(teacher, first_weight=3.0).loss(student, batch))
    assert plain == {"pull:forget": 0.75, "push:forget": 2.25, "pull:retain": 0.0625, "push:retain": 0.0}
    # A is not first: unchanged; C is row 1's first position: 3 x 0.0625
    assert weighted == {"pull:forget": 0.75, "push:forget": 2.25, "pull:retain": 0.1875, "push:retain": 0.0}
    batch, student, teacher = hand_batch()  # A first again: its pull and push are tripled
    assert values(hand_method(teacher, first_weight=3.0).loss(student, batch)) == {
        "pull:forget": 2.25, "push:forget": 6.75, "pull:retain": 0.1875, "push:retain": 0.0}


@pytest.mark.parametrize(("push", "push_forget"), [("smooth_l1", 4.5), ("hinge", 1.0)])
def test_role_k_sets_each_roles_top_k_and_the_cache_holds_the_widest(push, push_forget):
    batch, student, teacher = hand_batch()
    # retain K = 1 at C: teacher Top-1 {0}, diff 0.5 -> SmoothL1 0.125 / 1; student Top-1 {0} inside
    assert values(hand_method(teacher, push=push, role_k={"retain": 1}).loss(student, batch)) == {
        "pull:forget": 0.75, "push:forget": {"smooth_l1": 2.25, "hinge": 1.0}[push],
        "pull:retain": 0.125, "push:retain": 0.0}
    # forget K = 1 at A: teacher Top-1 {0}, diff 0 -> pull 0; student Top-1 {3} outside: smooth_l1
    # SmoothL1(5 - 0) / 1 = 4.5, hinge relu(5 - 4) / 1 = 1 (the teacher's 1st logit is the threshold)
    assert values(hand_method(teacher, push=push, role_k={"forget": 1}).loss(student, batch)) == {
        "pull:forget": 0.0, "push:forget": push_forget, "pull:retain": 0.0625, "push:retain": 0.0}
    assert hand_method(teacher, role_k={"neighbor": 3}).topk_k == 3
    assert hand_method(teacher, role_k={"neighbor": 1}).topk_k == 2
    with pytest.raises(ConfigError, match="K must be >= 1"):
        hand_method(teacher, role_k={"neighbor": 0})


def test_unmasked_positions_would_change_the_loss():
    # Marking a prompt position as distilled brings the junk logits in: the masks do the work.
    batch, student, teacher = hand_batch()
    batch["distill_mask"][1, 0] = 1
    batch["teacher_distill_mask"][1, 1] = 1
    terms = hand_method(teacher).loss(student, batch)
    assert float(terms["pull:retain"].total.detach()) > 1.0


def test_duet_is_pull_only_and_bild_matches_its_loss():
    batch, student, teacher = hand_batch()
    duet = hand_method(teacher, "duet").loss(student, batch)
    assert values(duet) == {"pull:forget": 0.75, "pull:retain": 0.0625}
    bild = hand_method(teacher, "bild", k=3).loss(student, batch)  # k=2 has one pair: always 0
    from harmonia.methods.losses import bild_sum

    s = student.table[torch.tensor([1, 2])]
    t = teacher.table[torch.tensor([1, 2])]
    total = float(bild["bild:forget"].total.detach())
    assert total == pytest.approx(float(bild_sum(s, t, 3, 3.0).detach()), abs=1e-6)
    assert total > 0


def test_cached_hand_batch_gives_the_live_hinge_values():
    batch, student, teacher = hand_batch()
    live = hand_method(teacher, push="hinge").loss(student, batch)
    cached = hand_method(teacher, push="hinge", cache=True)
    # Top-2 of the teacher table at A, B (row 0) and C (row 1), padded to 2 rows like collate does
    top = torch.topk(teacher.table.detach(), 2, dim=-1)
    batch["topk_ids"] = torch.stack([top.indices[[1, 2]], torch.cat([top.indices[[3]], torch.zeros(1, 2).long()])])
    batch["topk_values"] = torch.stack([top.values[[1, 2]], torch.cat([top.values[[3]], torch.zeros(1, 2)])])
    assert values(cached.loss(student, batch)) == values(live)


def test_decline_weight_adds_the_nll_of_the_teachers_top1_at_flagged_rows_of_declined_roles_only():
    batch, student, teacher = hand_batch()
    # the cached teacher as the lifted one: row 0 (forget) decides at A with top-1 token 0 and goes
    # on at B with top-1 token 2; row 1 (retain, plain teacher) has top-1 token 0 at C
    top = torch.topk(teacher.table.detach(), 2, dim=-1)
    batch["topk_ids"] = torch.stack([top.indices[[1, 2]], torch.cat([top.indices[[3]], torch.zeros(1, 2).long()])])
    batch["topk_values"] = torch.stack([top.values[[1, 2]], torch.cat([top.values[[3]], torch.zeros(1, 2)])])
    assert batch["topk_ids"][0, :, 0].tolist() == [0, 2] and batch["topk_ids"][1, 0, 0] == 0
    # A flagged; C flagged too, but the retain role is not declined: no term for it
    batch["decline_rows"] = torch.tensor([[True, False], [True, False]])
    params = {"push": "hinge", "cache": True, "response": "refusal", "decline_margin": 1.0}
    plain = values(hand_method(teacher, **params).loss(student, batch))
    terms = hand_method(teacher, decline_weight=4.0, role_weights={"forget": 0.5}, **params).loss(student, batch)
    # at A the student's logits are [4, 1, 0, 5]: -log softmax[0] = log(e^4 + e + 1 + e^5) - 4
    nll_a = torch.logsumexp(torch.tensor([4.0, 1.0, 0.0, 5.0]), 0).item() - 4.0
    assert nll_a == pytest.approx(1.331411, abs=1e-5)
    assert values(terms) == {**plain, "decline:forget": nll_a}
    assert (terms["decline:forget"].unit, terms["decline:forget"].weight) == ("positions:forget", 2.0)
    # A and B flagged (student = teacher at B: [0, 0, 2, 1], top-1 token 2)
    batch["decline_rows"] = torch.tensor([[True, True], [False, False]])
    nll_b = torch.logsumexp(torch.tensor([0.0, 0.0, 2.0, 1.0]), 0).item() - 2.0
    terms = hand_method(teacher, decline_weight=4.0, **params).loss(student, batch)
    assert values(terms)["decline:forget"] == pytest.approx(nll_a + nll_b, abs=1e-5)
    # the gradient reaches the student's logits at A and B only
    terms["decline:forget"].total.backward()
    assert student.table.grad[[1, 2]].abs().sum() > 0 and student.table.grad[[0, 3]].abs().sum() == 0
    batch["decline_rows"] = torch.zeros(2, 2, dtype=torch.bool)
    assert values(hand_method(teacher, decline_weight=4.0, **params).loss(student, batch))["decline:forget"] == 0.0
    with pytest.raises(ConfigError, match="set decline_margin"):
        build_params(get_method("harmonia"), {"decline_weight": 1.0})


def test_token_gaps_by_hand():
    from harmonia.teacher.targets import token_gaps

    top = TopK(torch.tensor([[5, 7, 9], [1, 2, 3], [4, 5, 6]]), torch.tensor([[4.0, 3.0, 1.5], [2.0, 0.5, -1.0],
                                                                             [9.0, 8.0, 7.0]]))
    assert token_gaps(top, 7) == [1.0]  # in the Top-K: best 4 minus its 3
    assert token_gaps(top, 5, rows=2) == [0.0, 3.0]  # top-1; then absent: best 2 minus the K-th -1
    assert token_gaps(top, 5, rows=5) == [0.0, 3.0, 1.0]  # at most the rows there are


def test_params_validation():
    cls = get_method("harmonia")
    with pytest.raises(ConfigError, match="positions"):
        build_params(cls, {"positions": ["prefill"]})
    with pytest.raises(ConfigError, match="unknown key"):
        build_params(cls, {"kk": 3})
    with pytest.raises(ConfigError, match="first answer token"):
        build_params(get_method("duet"), {"positions": ["response"]})
    with pytest.raises(ConfigError, match="cache"):
        build_params(get_method("bild"), {"cache": True})
    assert build_params(cls, {"role_weights": {"retain": 0.5}}).role_weights == {
        "forget": 1.0,
        "neighbor": 1.0,
        "retain": 0.5,
        "general": 1.0,
    }


# ---------------------------------------------------------------------------------------------
# Real records on the tiny model
# ---------------------------------------------------------------------------------------------


def records() -> list[QARecord]:
    out = []
    for i in range(3):
        out.append(
            QARecord(
                id=f"f{i}",
                question=f"Where was Alma Quist born ({i})?",
                answer=f"In Quistown {i}.",
                role="forget",
                source="t",
                group="Alma Quist",
                anchor_id=f"n{i}",
            )
        )
        out.append(
            QARecord(
                id=f"n{i}",
                question=f"Where was Bo Lind born ({i})?",
                answer=f"In Lindby {i}.",
                role="neighbor",
                source="t",
                group="Bo Lind",
            )
        )
        out.append(
            QARecord(id=f"r{i}", question=f"What is {i} plus one?", answer=f"It is {i + 1}.", role="retain", source="t")
        )
    out.append(
        QARecord(
            id="f0#prefix2",
            question="Where was Alma Quist born (0)?",
            prefill="In Qu",
            answer="istown 0.",
            role="forget",
            source="t",
            group="Alma Quist",
            metadata={"kind": "gold_prefix", "k": 2, "parent_id": "f0"},
        )
    )
    return out


def make_method(tokenizer, model, tmp_path: Path, name: str = "harmonia", max_length: int = 256, **params):
    cls = get_method(name)
    teacher = model

    @contextlib.contextmanager
    def reference():
        yield teacher

    ctx = MethodContext(tokenizer=tokenizer, max_length=max_length, reference=reference)
    base = {"response_tokens": 5, "teacher": {"cache_dir": str(tmp_path / "cache")}}
    merged = {**base, **params, "teacher": {**base["teacher"], **params.get("teacher", {})}}
    return cls(build_params(cls, merged), ctx)


@pytest.mark.parametrize("positions", [["first"], ["first", "prefill"], ["response", "prefill"]])
def test_student_and_teacher_positions_are_the_same_tokens(tokenizer, tiny_model, tmp_path, positions):
    recs = records() if "prefill" in positions else records()[:-1]
    method = make_method(tokenizer, tiny_model, tmp_path, positions=positions)
    method.prepare(recs)
    for rec in recs:
        ex = method.encode(rec)
        s_ids, s_mask = torch.tensor(ex["input_ids"]), torch.tensor(ex["distill_mask"]).bool()
        t_ids, t_mask = torch.tensor(ex["teacher_input_ids"]), torch.tensor(ex["teacher_distill_mask"]).bool()
        # the token at each distilled position, and the token it predicts (where it is in the sequence)
        s_tok = tokenizer.convert_ids_to_tokens(s_ids[s_mask].tolist())
        t_tok = tokenizer.convert_ids_to_tokens(t_ids[t_mask].tolist())
        assert s_tok == t_tok
        s_next = s_ids[1:][s_mask[:-1]].tolist()
        assert s_next == t_ids[1:][t_mask[:-1]].tolist()
        target = method.targets[rec.id]
        n = int(s_mask.sum())
        assert n == target.n_positions == (len(target.response) if "response" in positions else 1)
        assert s_next == list(target.response[: n - 1])
        student_text = tokenizer.decode(ex["input_ids"])
        teacher_text = tokenizer.decode(ex["teacher_input_ids"])
        # the last distilled position is where the assistant turn (after any prefill) continues
        prompt = tokenizer.decode(target.student_prompt)
        assert prompt.endswith("assistant\n" + rec.prefill)
        assert student_text.startswith(prompt)
        assert ("You have no knowledge of Alma Quist" in teacher_text) == (rec.role == "forget")
        assert "You have no knowledge" not in student_text
        if rec.role != "forget":  # the plain teacher for the other roles: same input as the student
            assert ex["teacher_input_ids"] == ex["input_ids"]


def test_response_positions_follow_the_teacher_greedy_response(tokenizer, tiny_model, tmp_path):
    from harmonia.teacher.decoding import greedy_ids

    method = make_method(tokenizer, tiny_model, tmp_path, positions=["response"])
    recs = records()[:-1]
    method.prepare(recs)
    assert method.context is not None
    forget = recs[0]
    expected = greedy_ids(
        tiny_model, tokenizer, [method.context.instructed_prompt(tokenizer, forget)], max_new_tokens=5
    )[0]
    assert list(method.targets[forget.id].response) == expected
    retain = recs[2]
    expected_plain = greedy_ids(
        tiny_model, tokenizer, [method.context.plain_prompt(tokenizer, retain)], max_new_tokens=5
    )[0]
    assert list(method.targets[retain.id].response) == expected_plain


def test_response_is_cut_to_max_length(tokenizer, tiny_model, tmp_path):
    scope = {"scope": {"forget": ["Alma Quist"]}}
    probe = make_method(tokenizer, tiny_model, tmp_path, positions=["response"], response="gold", teacher=scope)
    rec = QARecord(id="r", question="Q?", answer="one two three four five six seven eight", role="retain", source="t")
    probe.prepare([rec])
    prompt_len = len(probe.targets["r"].student_prompt)
    method = make_method(
        tokenizer,
        tiny_model,
        tmp_path,
        positions=["response"],
        response="gold",
        max_length=prompt_len + 2,
        teacher=scope,
    )
    method.prepare([rec])
    ex = method.encode(rec)
    assert len(ex["input_ids"]) == prompt_len + 2
    assert sum(ex["distill_mask"]) == 3  # predicts response tokens 0, 1, 2


def test_prefill_records_need_the_prefill_position(tokenizer, tiny_model, tmp_path):
    method = make_method(tokenizer, tiny_model, tmp_path, positions=["first"])
    with pytest.raises(ConfigError, match="prefill"):
        method.prepare(records())


def test_live_and_cached_teacher_give_the_same_pull_and_hinge(tokenizer, tiny_model, tmp_path):
    recs = records()
    settings = {"positions": ["response", "prefill"], "push": "hinge", "k": 4}
    live = make_method(tokenizer, tiny_model, tmp_path, **settings)
    live.prepare(recs)
    cached = make_method(tokenizer, tiny_model, tmp_path, cache=True, **settings)
    cached.prepare(recs)
    assert "teacher_input_ids" not in cached.encode(recs[0]) and "topk_ids" in cached.encode(recs[0])
    student = build_tiny_model(tokenizer, seed=1)  # differs from the teacher, so the terms are not 0
    a = live.loss(student, collate([live.encode(r) for r in recs]))
    b = cached.loss(student, collate([cached.encode(r) for r in recs]))
    assert set(a) == set(b) == {f"{t}:{r}" for t in ("pull", "push") for r in ("forget", "neighbor", "retain")}
    for name in a:
        assert float(a[name].total.detach()) > 0
        assert float(b[name].total.detach()) == pytest.approx(float(a[name].total.detach()), rel=1e-4), name


def test_cached_smooth_l1_push_becomes_hinge_with_a_warning(tokenizer, tiny_model, tmp_path):
    with pytest.warns(UserWarning, match="hinge"):
        method = make_method(tokenizer, tiny_model, tmp_path, cache=True)
    assert method.push == "hinge"


class CountingForward:
    """Counts forward calls of a module (the teacher must not run when the cache is reused)."""

    def __init__(self, model) -> None:
        self.calls = 0
        model.register_forward_pre_hook(self._hook)

    def _hook(self, *_):
        self.calls += 1


def test_cache_key_changes_with_model_records_and_config_and_is_reused(tokenizer, tmp_path):
    recs = [*records()[:3], records()[-1]]
    model = build_tiny_model(tokenizer, seed=0)
    counter = CountingForward(model)

    def prepared(m, rs, **params):
        method = make_method(tokenizer, m, tmp_path, cache=True, push="hinge", **params)
        method.prepare(rs)
        return method

    first = prepared(model, recs)
    assert counter.calls > 0
    files = sorted((tmp_path / "cache").iterdir())
    assert [p.name.split("-")[0] for p in files] == ["responses", "topk"]
    counter.calls = 0
    again = prepared(model, recs)
    assert counter.calls == 0, "the cached teacher must not run again"
    assert again.cache_keys == first.cache_keys
    assert sorted((tmp_path / "cache").iterdir()) == files
    for r in recs:
        torch.testing.assert_close(again.topk[r.id].values, first.topk[r.id].values)

    changed_record = [*recs[:-1], recs[-1].model_copy(update={"question": "Where was Alma Quist raised (0)?"})]
    assert prepared(model, changed_record).cache_keys["responses"] != first.cache_keys["responses"]
    other_k = prepared(model, recs, k=3).cache_keys
    assert other_k["topk"] != first.cache_keys["topk"] and other_k["responses"] == first.cache_keys["responses"]
    new_refusal = prepared(model, recs, teacher={"refusal": "No idea."}).cache_keys
    assert new_refusal["responses"] != first.cache_keys["responses"]
    assert prepared(model, recs, teacher={"mode": "amplified"}).cache_keys["topk"] != first.cache_keys["topk"]
    with torch.no_grad():
        model.model.norm.weight[0] += 0.01
    assert prepared(model, recs).cache_keys["topk"] != first.cache_keys["topk"]


def test_fingerprint_ignores_peft_wrapping_and_lora_weights(tokenizer):
    from peft import LoraConfig, get_peft_model

    base = build_tiny_model(tokenizer, seed=0)
    plain = weights_fingerprint(base)
    wrapped = get_peft_model(
        build_tiny_model(tokenizer, seed=0), LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM")
    )
    assert weights_fingerprint(wrapped) == plain
    assert weights_fingerprint(build_tiny_model(tokenizer, seed=1)) != plain


def test_amplified_live_teacher_rows_by_hand(tokenizer, tiny_model, tmp_path):
    method = make_method(
        tokenizer, tiny_model, tmp_path, positions=["first"], teacher={"mode": "amplified", "alpha": 2.0}
    )
    recs = records()[:-1]
    method.prepare(recs)
    batch = collate([method.encode(r) for r in recs])
    rows = teacher_rows(tiny_model, batch, Amplification(2.0))
    with torch.no_grad():
        z_instr = gather_positions(
            tiny_model(input_ids=batch["teacher_input_ids"], attention_mask=batch["teacher_attention_mask"]).logits,
            batch["teacher_distill_mask"].bool(),
        )
        z_plain = gather_positions(
            tiny_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
            batch["distill_mask"].bool(),
        )
    torch.testing.assert_close(rows, 3.0 * z_instr - 2.0 * z_plain)
    forget_rows = batch["role_id"] == ROLES.index("forget")
    assert not torch.allclose(rows[forget_rows], z_plain[forget_rows])  # the instruction matters there
    torch.testing.assert_close(rows[~forget_rows], z_plain[~forget_rows], atol=1e-4, rtol=1e-4)


def test_cached_topk_equals_the_live_amplified_rows_in_input_order(tokenizer, tmp_path):
    """compute_topk batches by length and runs plain-teacher records once; each record still gets
    the Top-K of its own amplified rows, in the order of the targets given."""
    from harmonia.teacher.targets import compute_topk, plain_teacher, teacher_topk

    tiny_model = sharp_tiny_model(tokenizer)  # distinct logits: no near-ties to reorder the Top-K
    method = make_method(tokenizer, tiny_model, tmp_path, positions=["response", "prefill"], response="gold",
                         teacher={"mode": "amplified", "alpha": 2.0})
    recs = records()
    method.prepare(recs)
    targets = [method.targets[r.id] for r in reversed(recs)]  # not grouped by role nor by length
    assert {plain_teacher(t) for t in targets} == {True, False}
    tops = compute_topk(tiny_model, targets, 5, amplification=Amplification(2.0), batch_size=2)
    for target, top in zip(targets, tops, strict=True):
        one = collate([method.encode(next(r for r in recs if r.id == target.record_id))])
        expected = teacher_topk(teacher_rows(tiny_model, one, Amplification(2.0)).float(), 5)
        assert top.ids.shape == (target.n_positions, 5)
        torch.testing.assert_close(top.values, expected.values, atol=1e-4, rtol=1e-4)
        assert torch.equal(top.ids, expected.ids)


# ---------------------------------------------------------------------------------------------
# Through the engine
# ---------------------------------------------------------------------------------------------


def sharp_tiny_model(tokenizer, seed: int = 0):
    """The tiny model with its matrices scaled up, so its next-token distribution depends on the
    context (at the default init every prompt gives nearly the same, almost uniform, distribution)."""
    model = build_tiny_model(tokenizer, seed=seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.mul_(5.0)
    return model


def first_token_kl(student, teacher, batch) -> float:
    """Mean KL(teacher || student) of the distilled (first-answer-token) distributions."""
    with torch.no_grad():
        s = gather_positions(
            student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
            batch["distill_mask"].bool(),
        )
        t = teacher_rows(teacher, batch, None)
    return float(F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="batchmean"))


@pytest.mark.parametrize("cache", [False, True])
def test_engine_run_moves_the_student_toward_the_teacher(tokenizer, tmp_path, cache):
    recs = records()[:-1]
    model = sharp_tiny_model(tokenizer)
    teacher = copy.deepcopy(model)  # the frozen starting weights
    cls = get_method("harmonia")
    params = build_params(
        cls,
        {
            "positions": ["first"],
            "k": 8,
            "cache": cache,
            "push": "hinge",
            "teacher": {"cache_dir": str(tmp_path / "cache")},
        },
    )
    cfg = TrainConfig(
        steps=2, batch_size=9, micro_batch_size=3, lr=3e-3, progress=False, save="none", max_grad_norm=None
    )
    engine = Engine(cfg, cls, params, model, tokenizer, tmp_path / "run")
    engine.method.prepare(recs)
    forget = [r for r in recs if r.role == "forget"]
    batch = collate([distill_features(engine.method.targets[r.id]) for r in forget])
    before = first_token_kl(model, teacher, batch)
    result = engine.train(recs)
    after = first_token_kl(engine.model, teacher, batch)
    assert before > 0.01
    assert after < 0.7 * before
    assert result.history[0]["loss/pull:forget"] > 0
    assert result.history[0]["loss/pull:retain"] == pytest.approx(0.0, abs=1e-6)  # plain teacher = student


def test_decline_weight_raises_the_decline_at_the_decision_positions_through_the_engine(tokenizer, tmp_path):
    recs = records()

    def trained(decline_weight: float) -> tuple[float, dict]:
        """Mean log-probability of the decline's first token at the forget records' decision positions."""
        model = sharp_tiny_model(tokenizer)
        cls = get_method("harmonia")
        params = build_params(cls, {
            "positions": ["response", "prefill"], "k": 8, "cache": True, "push": "hinge", "response": "refusal",
            "decline_margin": 1.0, "decline_weight": decline_weight, "teacher": {"cache_dir": str(tmp_path / "c")},
        })
        cfg = TrainConfig(steps=2, batch_size=10, micro_batch_size=5, lr=3e-3, progress=False, save="none",
                          max_grad_norm=None)
        engine = Engine(cfg, cls, params, model, tokenizer, tmp_path / f"run{decline_weight}")
        result = engine.train(recs)
        logprobs = []
        with torch.no_grad():
            for r in recs:
                if r.role != "forget":
                    continue
                target = engine.method.targets[r.id]
                ex = collate([distill_features(target)])
                logits = gather_positions(engine.model(input_ids=ex["input_ids"]).logits, ex["distill_mask"].bool())
                logprobs.append(float(F.log_softmax(logits[0], -1)[target.response[0]]))
        return sum(logprobs) / len(logprobs), result.history[0]

    without, history = trained(0.0)
    with_term, history_with = trained(5.0)
    assert "loss/decline:forget" not in history and history_with["loss/decline:forget"] > 0
    assert with_term > without + 0.5


def test_duet_runs_through_the_engine_with_lora(tokenizer, tmp_path):
    from harmonia.config import LoraConfig

    recs = records()[:-1]
    cls = get_method("duet")
    cfg = TrainConfig(
        steps=1, batch_size=9, micro_batch_size=9, lr=1e-3, progress=False, save="none", lora=LoraConfig(r=2, alpha=4)
    )
    engine = Engine(
        cfg,
        cls,
        build_params(cls, {"teacher": {"cache_dir": str(tmp_path / "c")}}),
        build_tiny_model(tokenizer, seed=0),
        tokenizer,
        tmp_path / "run",
    )
    result = engine.train(recs)
    assert {k for k in result.history[0] if k.startswith("loss/")} == {
        "loss/pull:forget",
        "loss/pull:neighbor",
        "loss/pull:retain",
    }
    assert result.history[0]["loss/pull:forget"] > 0


def test_run_saves_the_teacher_report_and_stops_when_it_does_not_separate(tokenizer, tmp_path):
    from harmonia.teacher.report import TeacherSeparationError

    recs = records()[:-1]
    evals = [
        QARecord(
            id="ef",
            question="What did Alma Quist write?",
            answer="Poems.",
            role="forget",
            source="t",
            group="Alma Quist",
        ),
        QARecord(
            id="en", question="What did Bo Lind write?", answer="Songs.", role="neighbor", source="t", group="Bo Lind"
        ),
    ]
    cls = get_method("harmonia")
    cfg = TrainConfig(steps=1, batch_size=9, micro_batch_size=9, progress=False, save="none")
    teacher = {"cache_dir": str(tmp_path / "c"), "report": {"max_new_tokens": 2}}
    params = {"positions": ["first"], "cache": True, "push": "hinge", "teacher": teacher}
    extras = {"teacher_eval_records": evals, "run_dir": tmp_path / "run"}
    engine = Engine(
        cfg,
        cls,
        build_params(cls, params),
        build_tiny_model(tokenizer, seed=0),
        tokenizer,
        tmp_path / "run",
        context_extras=extras,
    )
    with pytest.raises(TeacherSeparationError, match="does not separate"):
        engine.train(recs)
    assert (tmp_path / "run" / "teacher_report.json").is_file()
    params["teacher"] = {**teacher, "report": {"max_new_tokens": 2, "require_separation": False}}
    engine = Engine(
        cfg,
        cls,
        build_params(cls, params),
        build_tiny_model(tokenizer, seed=0),
        tokenizer,
        tmp_path / "run",
        context_extras=extras,
    )
    assert engine.train(recs).steps == 1
    assert (tmp_path / "run" / "teacher_cache.json").is_file()


def test_refusal_response_distils_forget_records_along_the_decline(tokenizer, tiny_model, tmp_path):
    from harmonia.teacher.decoding import greedy_ids

    method = make_method(tokenizer, tiny_model, tmp_path, positions=["response", "prefill"], response="refusal")
    recs = records()
    method.prepare(recs)
    refusal = method.p.teacher.refusal
    plain_forget = method.targets["f1"]
    assert tokenizer.decode(list(plain_forget.response), skip_special_tokens=True) == refusal
    prefilled = method.targets["f0#prefix2"]
    assert tokenizer.decode(list(prefilled.response), skip_special_tokens=True) == " - " + refusal
    # other roles keep the plain teacher's own greedy response
    assert method.context is not None
    expected = greedy_ids(tiny_model, tokenizer, [method.context.plain_prompt(tokenizer, recs[2])],
                          max_new_tokens=5)[0]
    assert list(method.targets[recs[2].id].response) == expected


def test_lift_token_by_hand():
    from harmonia.methods.losses import TopK
    from harmonia.teacher.targets import lift_token

    top = TopK(torch.tensor([[5, 7, 9], [1, 2, 3]]), torch.tensor([[4.0, 3.0, 1.0], [2.0, 1.0, 0.0]]))
    # in the Top-K: raised to best + margin and moved first; the second position is untouched
    lifted = lift_token(top, 9, 2.0)
    assert lifted.ids.tolist() == [[9, 5, 7], [1, 2, 3]]
    assert lifted.values.tolist() == [[6.0, 4.0, 3.0], [2.0, 1.0, 0.0]]
    # outside it: replaces the K-th entry
    lifted = lift_token(top, 42, 0.5)
    assert lifted.ids.tolist()[0] == [42, 5, 7] and lifted.values.tolist()[0] == [4.5, 4.0, 3.0]
    assert top.ids.tolist()[0] == [5, 7, 9]  # the input is not modified
    # the first two rows, each against its own best
    lifted = lift_token(top, 2, 1.0, rows=2)
    assert lifted.ids.tolist() == [[2, 5, 7], [2, 1, 3]]
    assert lifted.values.tolist() == [[5.0, 4.0, 3.0], [3.0, 2.0, 0.0]]


def test_decline_margin_puts_the_decline_first_on_declined_records_only(tokenizer, tiny_model, tmp_path):
    kwargs = {"positions": ["response", "prefill"], "response": "refusal", "cache": True, "push": "hinge"}
    plain = make_method(tokenizer, tiny_model, tmp_path, **kwargs)
    lifted = make_method(tokenizer, tiny_model, tmp_path, decline_margin=1.5, **kwargs)
    recs = records()
    plain.prepare(recs)
    lifted.prepare(recs)
    for r in recs:
        before, after = plain.topk[r.id], lifted.topk[r.id]
        if r.role == "forget":  # the instructed role: its response is the decline
            assert int(after.ids[0, 0]) == lifted.targets[r.id].response[0]
            assert float(after.values[0, 0]) == pytest.approx(float(before.values[0].max()) + 1.5)
            assert torch.equal(after.ids[1:], before.ids[1:])
        else:
            assert torch.equal(after.ids, before.ids) and torch.equal(after.values, before.values)
    with pytest.raises(ConfigError, match="decline_margin edits the cached Top-K"):
        make_method(tokenizer, tiny_model, tmp_path, decline_margin=1.0, response="refusal")  # no cache


# ---------------------------------------------------------------------------------------------
# Positions inside the prefill ('prefix')
# ---------------------------------------------------------------------------------------------


def prefilled_records() -> list[QARecord]:
    """records() plus a longer prefilled forget copy and a prefilled neighbour copy."""
    extra = [
        QARecord(id="f1#prefix4", question="Where was Alma Quist born (1)?", prefill="In Quistown 1",
                 answer=".", role="forget", source="t", group="Alma Quist",
                 metadata={"kind": "gold_prefix", "k": 4, "parent_id": "f1"}),
        QARecord(id="n0#prefix2", question="Where was Bo Lind born (0)?", prefill="In Lind", answer="by 0.",
                 role="neighbor", source="t", group="Bo Lind",
                 metadata={"kind": "gold_prefix", "k": 2, "parent_id": "n0"}),
    ]
    return records() + extra


def test_prefix_positions_predict_the_prefill_tokens_of_instructed_prefilled_records(tokenizer, tiny_model, tmp_path):
    from harmonia.data.tokens import encode_plain

    kwargs = {"response": "refusal", "cache": True, "push": "hinge"}
    method = make_method(tokenizer, tiny_model, tmp_path, positions=["response", "prefill", "prefix"], **kwargs)
    recs = prefilled_records()
    method.prepare(recs)
    for rec in recs:
        target, ex = method.targets[rec.id], method.encode(rec)
        prefill_ids = encode_plain(tokenizer, rec.prefill) if rec.prefill else []
        expected_prefix = len(prefill_ids) - 1 if rec.prefill and rec.role == "forget" else 0
        assert target.n_prefix == ex["n_prefix"] == expected_prefix
        s_ids, s_mask = torch.tensor(ex["input_ids"]), torch.tensor(ex["distill_mask"]).bool()
        assert int(s_mask.sum()) == target.n_prefix + target.n_positions == len(method.topk[rec.id].ids)
        # the distilled positions predict the prefill's tokens after its first, then the decline
        s_next = s_ids[1:][s_mask[:-1]].tolist()
        assert s_next == prefill_ids[1 : 1 + target.n_prefix] + list(target.response[: target.n_positions - 1])
    assert method.targets["f1#prefix4"].n_prefix >= 2  # the test covers a prefill of several tokens
    # without 'prefix' the same records distil after the prefill only, from the same cached teacher rows
    after_only = make_method(tokenizer, tiny_model, tmp_path, positions=["response", "prefill"], **kwargs)
    after_only.prepare(recs)
    for rec in recs:
        n = method.targets[rec.id].n_prefix
        assert torch.allclose(method.topk[rec.id].values[n:], after_only.topk[rec.id].values, atol=1e-5)
    with pytest.raises(ConfigError, match="needs 'prefill'"):
        make_method(tokenizer, tiny_model, tmp_path, positions=["response", "prefix"])


def test_decline_margin_lifts_the_decline_at_every_prefix_position(tokenizer, tiny_model, tmp_path):
    kwargs = {"positions": ["response", "prefill", "prefix"], "response": "refusal", "cache": True, "push": "hinge"}
    plain = make_method(tokenizer, tiny_model, tmp_path, **kwargs)
    lifted = make_method(tokenizer, tiny_model, tmp_path, decline_margin=1.5, **kwargs)
    recs = prefilled_records()
    plain.prepare(recs)
    lifted.prepare(recs)
    target = lifted.targets["f1#prefix4"]
    before, after = plain.topk["f1#prefix4"], lifted.topk["f1#prefix4"]
    decisions = target.n_prefix + 1
    assert after.ids[:decisions, 0].tolist() == [target.response[0]] * decisions
    assert after.values[:decisions, 0].tolist() == pytest.approx((before.values[:decisions].amax(dim=1) + 1.5).tolist())
    assert torch.equal(after.ids[decisions:], before.ids[decisions:])


@pytest.mark.parametrize("threshold", ["zero", "median"])
def test_decline_rows_flag_the_decision_rows_where_the_teacher_was_that_far_from_declining(
    tokenizer, tiny_model, tmp_path, threshold
):
    from statistics import median

    from harmonia.teacher.targets import token_gaps

    kwargs = {"positions": ["response", "prefill", "prefix"], "response": "refusal", "cache": True, "push": "hinge"}
    plain = make_method(tokenizer, tiny_model, tmp_path, **kwargs)
    recs = prefilled_records()
    plain.prepare(recs)
    gaps = {r.id: token_gaps(plain.topk[r.id], plain.targets[r.id].response[0], rows=plain.targets[r.id].n_prefix + 1)
            for r in recs if r.role == "forget"}
    every = [g for row in gaps.values() for g in row]
    gap = 0.0 if threshold == "zero" else median(every)
    method = make_method(tokenizer, tiny_model, tmp_path, decline_margin=1.0, decline_weight=2.0, decline_gap=gap,
                         **kwargs)
    method.prepare(recs)
    flagged = 0
    for rec in recs:
        flags = method.encode(rec)["decline_rows"]
        assert len(flags) == len(method.topk[rec.id].ids)  # one flag per distilled row
        if rec.role == "forget":
            assert flags == [g >= gap for g in gaps[rec.id]] + [False] * (len(flags) - len(gaps[rec.id]))
            flagged += sum(flags)
        else:
            assert not any(flags)
    # every decision row at 0; at the median some rows and not others (the gaps differ on this model)
    assert flagged == len(every) if threshold == "zero" else 0 < flagged < len(every)
    assert "decline_rows" not in plain.encode(recs[0])


def test_first_weight_covers_the_prefix_positions():
    batch, student, teacher = hand_batch()
    # row 0 distils B (no loss), then A (pull 0.75, smooth_l1 push 2.25): with one prefix position
    # both are decision positions, so A's terms are tripled too; row 1 (C) has none
    batch["input_ids"][0] = torch.tensor([0, 0, 2, 1])
    batch["teacher_input_ids"][0] = torch.tensor([0, 0, 0, 2, 1])
    batch["n_prefix"] = torch.tensor([1, 0])
    assert values(hand_method(teacher, first_weight=3.0).loss(student, batch)) == {
        "pull:forget": 2.25, "push:forget": 6.75, "pull:retain": 0.1875, "push:retain": 0.0}
    batch["n_prefix"] = torch.tensor([0, 0])  # as without 'prefix': A is not first
    assert values(hand_method(teacher, first_weight=3.0).loss(student, batch)) == {
        "pull:forget": 0.75, "push:forget": 2.25, "pull:retain": 0.1875, "push:retain": 0.0}


def test_topk_key_without_prefix_positions_is_the_one_written_before_they_existed():
    from dataclasses import replace

    from harmonia.teacher.targets import DistillTarget, topk_key

    target = DistillTarget("r1", "forget", (1, 2, 3), (4, 5, 1, 2, 3), (7, 8), 2)
    # computed by the code before 'prefix' (session 22): caches written then stay valid
    assert topk_key("fp", [target], 10, None) == "5afdd819718e92ac87ae60070cf388af"
    assert topk_key("fp", [target], 10, Amplification(alpha=1.0)) == "a6441f97203dd972d270b9aba09e7d4f"
    assert topk_key("fp", [replace(target, n_prefix=1)], 10, None) != topk_key("fp", [target], 10, None)
