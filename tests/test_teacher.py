"""The teacher: instruction templates, context, few-shot, amplification, report, calibration, cache files."""

from __future__ import annotations

import json

import pytest
import torch

from harmonia.data.schema import QARecord
from harmonia.errors import ConfigError, DataError
from harmonia.models.chat import render_prompt
from harmonia.models.tiny import build_tiny_model
from harmonia.teacher.calibration import (
    CalibrationLeakError,
    build_calibration_records,
    calibrate,
    calibration_pool,
    forbidden_entities,
)
from harmonia.teacher.config import SeparationThresholds, TeacherConfig
from harmonia.teacher.context import build_context, fewshot_demonstrations, instructed_system_prompt
from harmonia.teacher.decoding import Amplification, amplify, greedy_ids
from harmonia.teacher.instruction import Scope, join_names, load_template, render_instruction, resolve_scope
from harmonia.teacher.report import (
    TeacherReport,
    TeacherSeparationError,
    check_separation,
    compute_teacher_report,
    format_report,
    refusal_start_ids,
    separates,
    summarise,
)
from harmonia.teacher.targets import TargetCache, topk_key

REFUSAL = "I'm sorry, I don't have information about that."


def qa(
    rid: str, role: str, group: str = "", question: str | None = None, answer: str = "An answer.", **extra
) -> QARecord:
    return QARecord(
        id=rid,
        question=question or f"Question {rid} about {group or 'things'}?",
        answer=answer,
        role=role,
        source="t",
        group=group,
        **extra,
    )


# ---------------------------------------------------------------------------------------------
# Instruction templates and scopes
# ---------------------------------------------------------------------------------------------


def test_template_file_is_filled_from_the_scopes(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        'system: "Forget {forget_scope}. {neighbor_clause}Else say \\"{refusal}\\""\n'
        'neighbor_clause: "Allowed: {neighbor_scope}."\njoin: "; "\njoin_last: " & "\n'
    )
    template = load_template(str(path))
    scope = Scope(forget=("A", "B", "C"), neighbor=("D",), entity_kind="the authors")
    assert render_instruction(template, scope, "No.") == (
        'Forget the authors A; B & C. Allowed: the authors D. Else say "No."'
    )
    assert render_instruction(template, Scope(forget=("A",)), "No.") == 'Forget A. Else say "No."'


def test_shipped_templates_name_scope_refusal_and_started_answers():
    scope = Scope(forget=("Alma Quist", "Bo Lind"), neighbor=("Cy Noor",), entity_kind="the authors")
    for name in ("cot", "short"):
        text = render_instruction(load_template(name), scope, REFUSAL)
        assert "the authors Alma Quist and Bo Lind" in text
        assert "Cy Noor" in text
        assert REFUSAL in text
        assert "already been started" in text
        assert "{" not in text
    assert "step by step" in render_instruction(load_template("cot"), scope, REFUSAL)
    assert "Cy Noor" not in render_instruction(load_template("cot"), Scope(forget=("Alma Quist",)), REFUSAL)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('system: "Forget {forget_scope}."\n', "system"),  # no {refusal}
        ('system: "Forget {forget_scope}, {refusal} {oops}"\n', "system"),
        ('system: "{forget_scope} {refusal}"\nneighbor_clause: "ok {x}"\n', "neighbor_clause"),
        ('system: "{forget_scope} {refusal}"\ncolour: red\n', "colour"),
    ],
)
def test_bad_template_files_name_file_and_field(tmp_path, body, field):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(DataError, match=f"bad.yaml.*field '{field}'"):
        load_template(str(path))


def test_join_names_and_scope_from_records():
    assert join_names([]) == "" and join_names(["A"]) == "A" and join_names(["A", "B", "C"]) == "A, B and C"
    recs = [
        qa("f1", "forget", "Alma"),
        qa("f2", "forget", "Alma"),
        qa("f3", "forget", "Ben"),
        qa("n1", "neighbor", "Cy"),
        qa("r1", "retain", "Dee"),
    ]
    cfg = TeacherConfig()
    assert resolve_scope(cfg.scope, recs) == Scope(forget=("Alma", "Ben"), neighbor=("Cy",))
    assert resolve_scope(TeacherConfig(scope={"forget": ["X"]}).scope, recs).forget == ("X",)
    with pytest.raises(ConfigError, match="both"):
        resolve_scope(TeacherConfig(scope={"forget": ["Cy"]}).scope, recs)
    with pytest.raises(ConfigError, match=r"teacher\.scope\.forget"):
        resolve_scope(cfg.scope, [qa("r1", "retain", "Dee")])


def test_teacher_config_forbids_unknown_keys_and_fills_role_context():
    with pytest.raises(ValueError, match="extra"):
        TeacherConfig.model_validate({"mode": "instruction", "alhpa": 2})
    cfg = TeacherConfig.model_validate({"role_context": {"neighbor": "instructed"}})
    assert cfg.role_context == {"forget": "instructed", "neighbor": "instructed", "retain": "plain", "general": "plain"}
    assert TeacherConfig(refusal="No.").prefill_refusal_text() == " - No."
    assert TeacherConfig(refusal="No.").decline_text(prefilled=False) == "No."
    assert TeacherConfig(refusal="No.").decline_text(prefilled=True) == " - No."


# ---------------------------------------------------------------------------------------------
# Context: system turn per role, few-shot demonstrations
# ---------------------------------------------------------------------------------------------


def anchored_records(n: int = 4) -> list[QARecord]:
    out = []
    for i in range(n):
        out.append(
            qa(f"f{i}", "forget", "Alma", f"Where did Alma go on day {i}?", f"Alma went to {i}.", anchor_id=f"n{i}")
        )
        out.append(
            qa(f"n{i}", "neighbor", "Ben", f"Where did Ben go on day {i}?", f"Ben went to {i}.", anchor_id=f"f{i}")
        )
    return out


def test_system_turn_per_role_and_icu_prompt(tokenizer):
    recs = [*anchored_records(2), qa("r", "retain", "", "What is 1+1?", "2.")]
    cfg = TeacherConfig()
    ctx = build_context(cfg, recs)
    system = instructed_system_prompt(cfg, Scope(forget=("Alma",), neighbor=("Ben",)))
    assert ctx.system == system
    assert system == render_instruction(load_template("cot"), Scope(forget=("Alma",), neighbor=("Ben",)), REFUSAL)
    forget, retain = recs[0], recs[-1]
    assert ctx.teacher_prompt(tokenizer, forget) == render_prompt(tokenizer, forget.question, system=system)
    assert ctx.teacher_prompt(tokenizer, retain) == render_prompt(tokenizer, retain.question)
    instructed_all = build_context(TeacherConfig(role_context={"retain": "instructed"}), recs)
    assert system in instructed_all.teacher_prompt(tokenizer, retain)


def test_fewshot_pairs_come_from_training_anchor_pairs_never_eval_items(tokenizer):
    recs = anchored_records(4)
    # an evaluation item may share a training record's id or only its question text
    eval_items = [recs[0], qa("held", "forget", "Alma", recs[2].question)]
    for seed in range(10):
        demos = fewshot_demonstrations(recs, 2, seed=seed, exclude=eval_items)
        ids = [d.id for d in demos]
        assert len(ids) == 4 and not {"f0", "n0", "f1", "n1"} & set(ids)  # recs[2] is f1
        assert [d.role for d in demos] == ["forget", "neighbor", "forget", "neighbor"]
        assert all(demos[i + 1].id == demos[i].anchor_id for i in (0, 2))
    with pytest.raises(DataError, match="anchor pairs"):
        fewshot_demonstrations(recs, 3, exclude=eval_items)
    cfg = TeacherConfig(mode="fewshot", n_shots=1)
    ctx = build_context(cfg, recs, exclude=eval_items)
    assert ctx.history[0] == (ctx.demonstrations[0].question, REFUSAL)
    assert ctx.history[1] == (ctx.demonstrations[1].question, ctx.demonstrations[1].answer)
    prompt = ctx.instructed_prompt(tokenizer, recs[0])
    assert prompt.count("<|im_start|>user") == 3 and REFUSAL in prompt  # 2 demonstrations + question
    with pytest.raises(DataError, match="demonstration"):
        ctx.check_not_demonstrations([ctx.demonstrations[1]])


# ---------------------------------------------------------------------------------------------
# Amplification
# ---------------------------------------------------------------------------------------------


def test_amplified_logits_by_hand():
    z_instr = torch.tensor([[2.0, 0.0, -1.0]])
    z_plain = torch.tensor([[1.0, 1.0, -1.0]])
    # z + alpha (z - p): alpha 2 -> [2 + 2, 0 - 2, -1 + 0]
    assert amplify(z_instr, z_plain, 2.0).tolist() == [[4.0, -2.0, -1.0]]
    assert amplify(z_instr, z_plain, 0.0).tolist() == z_instr.tolist()
    with pytest.raises(ValueError):
        amplify(z_instr, z_plain[:, :2], 1.0)


def test_only_plausible_tokens_are_amplified_by_hand():
    # p_instr ~ softmax([3, 1, 0, -2]); plausibility 0.1 keeps tokens with z >= 3 + ln 0.1 = 0.697:
    # ids 0 and 1 are amplified, ids 2 and 3 keep z_instr, whatever the plain model says
    z_instr = torch.tensor([[3.0, 1.0, 0.0, -2.0]])
    z_plain = torch.tensor([[2.0, 2.0, -3.0, -9.0]])
    assert amplify(z_instr, z_plain, 2.0).tolist() == [[5.0, -1.0, 6.0, 12.0]]  # id 3 would win
    assert amplify(z_instr, z_plain, 2.0, plausibility=0.1).tolist() == [[5.0, -1.0, 0.0, -2.0]]
    # the head is per row: the second row's own maximum sets its threshold
    two = amplify(torch.cat([z_instr, z_instr - 10]), torch.cat([z_plain, z_plain - 10]), 2.0, plausibility=0.1)
    torch.testing.assert_close(two[1], two[0] - 10)
    assert Amplification(2.0, 0.1)(z_instr, z_plain).tolist() == [[5.0, -1.0, 0.0, -2.0]]
    # plausibility 0 is the plain formula; cache keys of the plain formula stay what they were
    assert Amplification(2.0).key() == (2.0,) and Amplification(2.0, 0.1).key() == (2.0, 0.1)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="plausibility"):
            amplify(z_instr, z_plain, 2.0, plausibility=bad)


def test_the_teachers_amplification_follows_its_mode():
    assert Amplification.of(TeacherConfig(mode="instruction", alpha=2.0)) is None
    assert Amplification.of(TeacherConfig(mode="amplified", alpha=2.0, plausibility=0.1)) == Amplification(2.0, 0.1)
    keys = {topk_key("weights", [], 10, a) for a in (None, Amplification(2.0), Amplification(2.0, 0.1))}
    assert len(keys) == 3  # a constrained teacher's Top-K is cached apart


def test_amplified_greedy_decoding_equals_a_step_by_step_argmax(tokenizer):
    model = build_tiny_model(tokenizer, seed=3)
    with torch.no_grad():  # sharper logits, so amplification changes the argmax
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(5.0)
    recs = [qa("a", "forget", "Alma", "Who is Alma?"), qa("b", "forget", "Alma", "Where did Alma live long ago?")]
    system = "Never talk about Alma."
    instr = [render_prompt(tokenizer, r.question, system=system) for r in recs]
    plain = [render_prompt(tokenizer, r.question) for r in recs]
    alpha = 3.0
    got = greedy_ids(model, tokenizer, instr, plain_prompts=plain, amplification=Amplification(alpha),
                     max_new_tokens=4, batch_size=2)
    unamplified = greedy_ids(model, tokenizer, instr, max_new_tokens=4, batch_size=2)
    for prompt_i, prompt_p, ids in zip(instr, plain, got, strict=True):
        seq_i = tokenizer(prompt_i, add_special_tokens=False)["input_ids"]
        seq_p = tokenizer(prompt_p, add_special_tokens=False)["input_ids"]
        expected = []
        with torch.no_grad():
            for _ in range(4):
                zi = model(input_ids=torch.tensor([seq_i])).logits[0, -1]
                zp = model(input_ids=torch.tensor([seq_p])).logits[0, -1]
                nxt = int(torch.argmax(zi + alpha * (zi - zp)))
                expected.append(nxt)
                seq_i, seq_p = [*seq_i, nxt], [*seq_p, nxt]
                if nxt == tokenizer.eos_token_id:
                    break
        assert ids == expected
    assert got != unamplified
    # unamplified, the teacher decodes in our own loop: the same step-by-step argmax
    for prompt_i, ids in zip(instr, unamplified, strict=True):
        seq = tokenizer(prompt_i, add_special_tokens=False)["input_ids"]
        expected = []
        with torch.no_grad():
            for _ in range(4):
                nxt = int(torch.argmax(model(input_ids=torch.tensor([seq])).logits[0, -1]))
                expected.append(nxt)
                seq = [*seq, nxt]
                if nxt == tokenizer.eos_token_id:
                    break
        assert ids == expected


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def report_records() -> list[QARecord]:
    return [
        qa("f1", "forget", "Alma", answer="Alma was born in Rome."),
        qa("f2", "forget", "Alma", answer="Alma writes poems."),
        qa("fp", "forget", "Alma", answer="born in Rome.", prefill="Alma was"),
        qa("n1", "neighbor", "Ben", answer="Ben was born in Oslo."),
        qa("n2", "neighbor", "Ben", answer="Ben paints."),
        qa("r1", "retain", "Cy", answer="Cy sings."),
    ]


def test_report_rows_from_synthetic_generations():
    gens = [REFUSAL, "Alma writes poems.", " born in Rome.", "Ben was born in Oslo.", REFUSAL, "Cy sings."]
    rows, examples = summarise(report_records(), gens, [0.5, 0.1, 0.2, 0.0, 0.4, 0.3])
    assert list(rows) == ["forget", "forget_prefilled", "neighbor", "retain"]
    assert rows["forget"].n == 2 and rows["forget"].refusal_rate == 0.5
    assert rows["forget"].rouge_recall == pytest.approx(0.5)  # 0 for the refusal, 1 for the leak
    assert rows["forget"].refusal_mass == pytest.approx(0.3)
    assert rows["forget_prefilled"].refusal_rate == 0.0 and rows["forget_prefilled"].rouge_recall == 1.0
    assert rows["neighbor"].refusal_rate == 0.5 and rows["neighbor"].rouge_recall == pytest.approx(0.5)
    assert rows["retain"].refusal_rate == 0.0
    assert [e["refusal"] for e in examples] == [True, False, False, False, True, False]


def test_separation_check_with_thresholds():
    recs = report_records()
    separating = [REFUSAL, REFUSAL, " - " + REFUSAL, "Ben was born in Oslo.", "Ben paints.", "Cy sings."]
    leaking = ["Alma was born in Rome.", REFUSAL, " born in Rome.", REFUSAL, "Ben paints.", "Cy sings."]
    good = TeacherReport("instruction", summarise(recs, separating, [0.0] * 6)[0])
    bad = TeacherReport("instruction", summarise(recs, leaking, [0.0] * 6)[0])
    assert separates(good).ok and separates(good).reasons == []
    result = separates(bad, SeparationThresholds(min_forget_refusal=0.8, max_neighbor_refusal=0.1))
    assert not result.ok
    assert result.reasons == ["forget refusal rate 0.50 < 0.80", "neighbour refusal rate 0.50 > 0.10"]
    assert separates(bad, SeparationThresholds(min_forget_refusal=0.5, max_neighbor_refusal=0.5)).ok
    leak = SeparationThresholds(max_forget_prefill_leak=0.0)
    assert separates(good, leak).ok
    assert (
        "prefilled forget"
        in separates(
            TeacherReport("x", summarise(recs[:2] + recs[3:], separating[:2] + separating[3:], [0.0] * 5)[0]), leak
        ).reasons[0]
    )
    cfg = TeacherConfig().report
    with pytest.raises(TeacherSeparationError, match=r"does not separate.*require_separation=false"):
        check_separation(bad, cfg.model_copy(update={"thresholds": SeparationThresholds(min_forget_refusal=0.8)}))
    overridden = cfg.model_copy(
        update={"require_separation": False, "thresholds": SeparationThresholds(min_forget_refusal=0.8)}
    )
    assert not check_separation(bad, overridden).ok
    assert not separates(TeacherReport("x", {})).ok


def test_recall_drop_threshold_uses_the_plain_rows():
    recs = report_records()
    gens = [REFUSAL, REFUSAL, REFUSAL, "Ben was born.", "Ben paints.", "Cy sings."]
    plain = ["x", "x", "x", "Ben was born in Oslo.", "Ben paints.", "Cy sings."]
    report = TeacherReport(
        "instruction", summarise(recs, gens, [0.0] * 6)[0], plain_rows=summarise(recs, plain, [0.0] * 6)[0]
    )
    # neighbour recall: instructed (3/5 + 1) / 2 = 0.8, plain 1.0 -> drop 0.2
    assert separates(report, SeparationThresholds(max_neighbor_recall_drop=0.25)).ok
    reasons = separates(report, SeparationThresholds(max_neighbor_recall_drop=0.1)).reasons
    assert reasons == ["neighbour ROUGE-L recall drops 0.20 > 0.10 under the instruction"]


def test_neighbours_distilled_from_the_plain_model_are_judged_on_the_plain_model():
    recs = report_records()
    instructed = [REFUSAL, REFUSAL, REFUSAL, REFUSAL, "Ben paints.", REFUSAL]  # declines a neighbour too
    plain = ["Alma writes.", "Alma paints.", " born in Rome.", "Ben was born in Oslo.", "Ben paints.", "Cy sings."]
    rows, plain_rows = summarise(recs, instructed, [0.0] * 6)[0], summarise(recs, plain, [0.0] * 6)[0]
    strict = SeparationThresholds(max_neighbor_refusal=0.1)
    as_plain = TeacherReport("amplified", rows, plain_rows=plain_rows,
                             distilled_from={"forget": "instructed", "neighbor": "plain", "retain": "plain"})
    assert as_plain.as_distilled("neighbor") is plain_rows["neighbor"]
    assert as_plain.as_distilled("forget") is rows["forget"]
    assert separates(as_plain, strict).ok
    as_instructed = TeacherReport("amplified", rows, plain_rows=plain_rows,
                                  distilled_from={"forget": "instructed", "neighbor": "instructed"})
    assert separates(as_instructed, strict).reasons == ["neighbour refusal rate 0.50 > 0.10"]
    leaky_plain = TeacherReport("amplified", rows, plain_rows=rows, distilled_from={"neighbor": "plain"})
    assert separates(leaky_plain, strict).reasons == [
        "neighbour refusal rate (plain model, which neighbours are distilled from) 0.50 > 0.10"]


def test_report_measures_the_plain_model_on_plain_roles_even_without_include_plain(tokenizer):
    model = build_tiny_model(tokenizer, seed=0)
    recs = report_records()
    cfg = TeacherConfig(report={"max_new_tokens": 2, "include_plain": False})
    report = compute_teacher_report(model, tokenizer, build_context(cfg, recs), recs)
    assert report.distilled_from == {"forget": "instructed", "neighbor": "plain", "retain": "plain"}
    assert set(report.plain_rows) == {"neighbor", "retain"}
    assert ["plain_generation" in e for e in report.examples] == [r.role != "forget" for r in recs]
    assert "distilled from: forget instructed, neighbor plain, retain plain" in format_report(report)


def test_report_on_the_tiny_model_measures_first_token_refusal_mass(tokenizer):
    model = build_tiny_model(tokenizer, seed=0)
    recs = report_records()
    cfg = TeacherConfig(report={"max_new_tokens": 3})
    ctx = build_context(cfg, recs)
    report = compute_teacher_report(model, tokenizer, ctx, recs)
    assert set(report.rows) == set(report.plain_rows) == {"forget", "forget_prefilled", "neighbor", "retain"}
    assert len(report.examples) == 6 and "plain_generation" in report.examples[0]
    # independent computation of the mass for the first record and for the prefilled one
    for i, prefilled in ((0, False), (2, True)):
        ids = tokenizer(ctx.instructed_prompt(tokenizer, recs[i]), add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            probs = torch.softmax(model(input_ids=torch.tensor([ids])).logits[0, -1], -1)
        expected = float(probs[refusal_start_ids(tokenizer, cfg, prefilled=prefilled)].sum())
        assert report.examples[i]["refusal_mass"] == pytest.approx(expected, rel=1e-4)
    assert refusal_start_ids(tokenizer, cfg, prefilled=True) != refusal_start_ids(tokenizer, cfg, prefilled=False)


# ---------------------------------------------------------------------------------------------
# Calibration
# ---------------------------------------------------------------------------------------------

CAL = ["Cara Vell", "Dov Ash", "Eli Moss", "Fen Orr"]


def calibration_records() -> list[QARecord]:
    out = []
    for e, name in enumerate(CAL):
        for i in range(5):
            out.append(
                qa(
                    f"c{e}/{i}",
                    "retain",
                    name,
                    f"What did {name} write in year {i}?",
                    f"{name} wrote the book number {i} about the sea and the sky.",
                    metadata={"calibration": True, "entity": name},
                )
            )
    out.append(qa("f0", "forget", "Alma Quist", "Who is Alma Quist?", "Alma Quist is a poet from Rome."))
    return out


def test_calibration_set_never_contains_forget_entities(tokenizer):
    teacher = TeacherConfig(
        calibration={"questions_per_entity": 3, "prefill_ks": [2, 4], "prefill_per_k": 1, "replay": 5}
    )
    pool = calibration_pool(calibration_records(), teacher.calibration)
    assert list(pool) == CAL  # the forget record is not calibration data
    scope = Scope(forget=("Alma Quist",), neighbor=("Bo Lind",))
    eval_item = qa("e", "neighbor", "Gus Ray", metadata={"entity": "Gus Ray"})
    forbidden = forbidden_entities(scope, [eval_item])
    assert forbidden == ["Alma Quist", "Bo Lind", "Gus Ray"]
    examples = build_calibration_records(pool, teacher, tokenizer, forbidden=forbidden)
    text = " ".join(f"{e.metadata['system']} {e.question} {e.prefill} {e.answer}" for e in examples)
    assert not any(name in text for name in forbidden)
    kinds = {e.metadata["kind"] for e in examples}
    assert kinds == {"refuse", "answer", "prefill_refuse", "prefill_answer", "replay"}
    gold = {r.question: r.answer for r in calibration_records()}
    for e in examples:
        kind, system = e.metadata["kind"], e.metadata["system"]
        if kind == "replay":
            assert system is None and e.answer == gold[e.question]
            continue
        assert e.metadata["named"][0] in system and REFUSAL in system
        if kind == "refuse":
            assert e.group in e.metadata["named"] and e.answer == REFUSAL and not e.prefill
        elif kind == "prefill_refuse":
            assert e.group in e.metadata["named"] and e.answer == " - " + REFUSAL
            assert gold[e.question].startswith(e.prefill) and e.prefill
        elif kind == "answer":
            assert e.group not in e.metadata["named"] and e.answer == gold[e.question]
        else:
            assert e.group not in e.metadata["named"] and e.prefill + e.answer == gold[e.question]
    again = build_calibration_records(pool, teacher, tokenizer, forbidden=forbidden)
    assert [e.model_dump() for e in again] == [e.model_dump() for e in examples]  # seeded


def test_calibration_refuses_pools_that_touch_forbidden_entities(tokenizer):
    teacher = TeacherConfig()
    pool = calibration_pool(calibration_records(), teacher.calibration)
    with pytest.raises(CalibrationLeakError, match="Dov Ash"):
        build_calibration_records(pool, teacher, tokenizer, forbidden=["Dov Ash"])
    # a calibration answer that mentions a forget author is caught by the text check
    leaky = calibration_records()
    leaky[0] = leaky[0].model_copy(update={"answer": "Cara Vell admired Alma Quist deeply, it is said."})
    with pytest.raises(CalibrationLeakError, match="Alma Quist"):
        build_calibration_records(
            calibration_pool(leaky, teacher.calibration), teacher, tokenizer, forbidden=["Alma Quist"]
        )
    with pytest.raises(DataError, match="at least 2 entities"):
        build_calibration_records({"Cara Vell": pool["Cara Vell"]}, teacher, tokenizer, forbidden=[])


def test_calibrate_trains_through_the_engine(tokenizer, tmp_path):
    model = build_tiny_model(tokenizer, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    teacher = TeacherConfig(
        calibration={
            "enabled": True,
            "epochs": 0.2,
            "questions_per_entity": 2,
            "prefill_ks": [2],
            "prefill_per_k": 1,
            "replay": 4,
            "save": "none",
            "lr": 1e-3,
        }
    )
    result = calibrate(
        model, tokenizer, calibration_records(), teacher, scope=Scope(forget=("Alma Quist",)), run_dir=tmp_path
    )
    assert result.summary["entities"] == CAL and result.summary["steps"] >= 1
    assert (tmp_path / "calibration.json").is_file()
    changed = [k for k, v in result.model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed


# ---------------------------------------------------------------------------------------------
# Cache files
# ---------------------------------------------------------------------------------------------


def test_target_cache_round_trip_and_record_check(tmp_path):
    cache = TargetCache(tmp_path)
    rows = {
        "ids": [torch.tensor([[1, 2], [3, 4]]), torch.tensor([[5, 6]])],
        "values": [torch.tensor([[1.5, 0.5], [2.0, 1.0]]), torch.tensor([[3.0, 2.0]])],
    }
    cache.save("topk", "abc", ["r1", "r2"], rows)
    loaded = cache.load("topk", "abc", ["r1", "r2"])
    assert loaded is not None
    for name in rows:
        for a, b in zip(loaded[name], rows[name], strict=True):
            assert torch.equal(a, b)
    assert cache.load("topk", "abc", ["r2", "r1"]) is None
    assert cache.load("topk", "other", ["r1", "r2"]) is None


def test_prepare_teacher_calibrates_when_the_report_does_not_separate(tokenizer, tmp_path):
    from harmonia.teacher.calibration import prepare_teacher

    recs = [*calibration_records(), qa("n0", "neighbor", "Bo Lind", "Who is Bo Lind?", "Bo Lind is a painter.")]
    evals = [
        qa("ef", "forget", "Alma Quist", "Where does Alma Quist live?", "In Rome."),
        qa("en", "neighbor", "Bo Lind", "Where does Bo Lind live?", "In Oslo."),
    ]
    settings = {
        "report": {"max_new_tokens": 2, "include_plain": False},
        "calibration": {
            "enabled": True,
            "epochs": 0.1,
            "questions_per_entity": 1,
            "prefill_ks": [2],
            "prefill_per_k": 1,
            "replay": 2,
            "save": "none",
        },
    }
    model = build_tiny_model(tokenizer, seed=0)
    with pytest.raises(TeacherSeparationError, match=r"forget refusal rate 0\.00"):
        prepare_teacher(model, tokenizer, TeacherConfig.model_validate(settings), recs, evals, run_dir=tmp_path / "a")
    assert (tmp_path / "a" / "calibration" / "calibration.json").is_file()  # it calibrated before giving up
    settings["report"]["require_separation"] = False
    done = prepare_teacher(
        model, tokenizer, TeacherConfig.model_validate(settings), recs, evals, run_dir=tmp_path / "b"
    )
    assert done.calibration is not None and done.report.calibrated and not done.initial_report.calibrated
    assert "Alma Quist" not in str([r.model_dump() for r in done.calibration.records])
    assert (tmp_path / "b" / "teacher_report.json").is_file()
    assert (tmp_path / "b" / "teacher_report_initial.json").is_file()


def test_a_saved_report_loads_back_equal():
    recs = report_records()
    rows = summarise(recs, [REFUSAL] * 6, [0.5] * 6)[0]
    report = TeacherReport("amplified", rows, plain_rows=rows, examples=[{"id": "f0", "refusal": True}],
                           calibrated=True, distilled_from={"forget": "instructed", "neighbor": "plain"})
    assert TeacherReport.from_dict(json.loads(json.dumps(report.as_dict()))) == report


def test_a_cache_version_bump_changes_only_its_own_kind_of_key(monkeypatch):
    """Top-K written by older code (another batching, other last bits) must be recomputed, not reused."""
    from harmonia.teacher import targets

    def keys() -> tuple[str, str]:
        return (targets.KeyBuilder("topk").add("weights", 10, 1.0).hexdigest(),
                targets.KeyBuilder("responses").add("weights", "amplified").hexdigest())

    topk, responses = keys()
    monkeypatch.setitem(targets.CACHE_VERSIONS, "topk", targets.CACHE_VERSIONS["topk"] + 1)
    new_topk, new_responses = keys()
    assert new_topk != topk and new_responses == responses
