"""The harness: config validation, subsets, objectives, results.json, batch-size independence."""

from __future__ import annotations

import html
import math
import re

import pytest

from harmonia.data.schema import QARecord
from harmonia.errors import ConfigError
from harmonia.evaluation.config import EvalConfig, SubsetSettings, load_eval_config
from harmonia.evaluation.harness import evaluate, select_subsets
from harmonia.evaluation.objectives import compute_objectives
from harmonia.evaluation.results import AttackEntry, EvalResults, MetricEntry
from harmonia.models import LoadedModel
from harmonia.reports import write_report
from test_eval_support import FACTS, StubLM, forget_records, leaky_model, neighbor_records, token_ids


def loaded(model, tokenizer) -> LoadedModel:
    return LoadedModel(model=model, tokenizer=tokenizer, spec="test-model", path="test-model")


def quiet(*overrides: str) -> EvalConfig:
    return load_eval_config(None, ["progress=false", "generation.max_new_tokens=24", *overrides])


def mmlu(i: int, correct: int) -> QARecord:
    choices = ["alpha", "beta", "gamma", "delta"]
    return QARecord(id=f"mmlu/{i}", question=f"Question {i}?", answer=choices[correct], role="general",
                    source="mmlu", group="computer_security", choices=choices, correct=correct,
                    metadata={"subject": "computer_security"})


# -- configuration ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("override", "key"), [
    ("attacks.prefill.kz=[1]", "attacks.prefill.kz"),
    ("attacks.prefill.ks=[0]", "attacks.prefill.ks"),
    ("generation.batch_size=0", "generation.batch_size"),
    ("subsets.max_qa={forgett: 3}", "subsets.max_qa.forgett"),
    ("subsets.max_mcq={general: 0}", "subsets.max_mcq"),
    ("metrics=[qa, rouge]", "metrics.1"),
    ("privacy.reference_auc={mia_los: 0.5}", "privacy.reference_auc"),
    ("knowmem.icl_file=/nonexistent/icl.json", "knowmem.icl_file"),
    ("mcq.backend=lmeval", "mcq.backend"),
    ("attacks.jailbreak={data_dir: /nonexistent}", "attacks.jailbreak.data_dir"),
    ("unknown_section=1", "unknown_section"),
])
def test_config_errors_name_the_key(override, key):
    # The key is named exactly (dict keys get a trailing ".[key]" from pydantic).
    with pytest.raises(ConfigError, match=f"key '{re.escape(key)}(\\.\\[key\\])?'"):
        load_eval_config(None, [override])


def test_config_file_paths_resolve_against_the_file(tmp_path):
    (tmp_path / "icl.json").write_text('[{"question": "q", "answer": "a"}]', encoding="utf-8")
    (tmp_path / "eval.yaml").write_text("knowmem: {icl_file: icl.json}\nattacks: {relearn: {steps: 2}}\n",
                                        encoding="utf-8")
    cfg = load_eval_config(tmp_path / "eval.yaml")
    assert cfg.knowmem.icl_file == tmp_path / "icl.json"
    assert list(cfg.attacks.enabled()) == ["prefill", "paraphrase", "relearn", "mcq_prefill"]


def test_mia_texts_come_in_pairs(tmp_path):
    (tmp_path / "f.json").write_text('["a"]', encoding="utf-8")
    with pytest.raises(ConfigError, match="both forget_texts and holdout_texts"):
        load_eval_config(None, [f"privacy.forget_texts={tmp_path / 'f.json'}"])


def test_lm_eval_backend_without_lm_eval_is_a_clear_error_before_loading_anything(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lm_eval" else real(name, *a))
    with pytest.raises(ConfigError, match=r"lm-eval.*not installed"):
        evaluate("/nonexistent/model", [], quiet("mcq.backend=lm_eval"), name="x")


# -- subsets and objectives ------------------------------------------------------------------------------


def test_subsets_cap_qa_and_mcq_per_role_deterministically():
    records = [QARecord(id=f"f{i}", question="q?", answer="a", role="forget", source="t") for i in range(5)]
    records += [mmlu(i, 0) for i in range(4)]
    chosen = select_subsets(records, SubsetSettings(max_qa={"forget": 2}, max_mcq={"general": 3}, seed=1))
    assert sum(r.role == "forget" for r in chosen) == 2 and sum(r.is_mcq for r in chosen) == 3
    assert [r.id for r in chosen] == [r.id for r in records if r in chosen]  # input order kept
    assert chosen == select_subsets(records, SubsetSettings(max_qa={"forget": 2}, max_mcq={"general": 3}, seed=1))
    assert select_subsets(records, SubsetSettings()) == records


def entry(value: float) -> MetricEntry:
    return MetricEntry(value=value, n_used=1)


def test_objectives_follow_the_documented_formulas_relative_to_the_target():
    metrics = {"rougeL_recall/forget": entry(0.2), "rougeL_recall/neighbor": entry(0.6),
               "over_refusal/neighbor": entry(0.2), "mcq_acc/general": entry(0.4)}
    target = EvalResults(name="target", model="m", metrics={
        "rougeL_recall/forget": entry(0.8), "rougeL_recall/neighbor": entry(0.8), "mcq_acc/general": entry(0.55)})
    attacks = {"prefill": AttackEntry(success_rate={"k=0": 0.1, "k=5": 0.3})}
    objectives, explain = compute_objectives(metrics, attacks, target=target)
    assert objectives.forget_efficacy == pytest.approx(1 - 0.2 / 0.8)
    assert objectives.neighbour_retention == pytest.approx(0.6 / 0.8 * (1 - 0.2))
    assert objectives.utility == pytest.approx((0.4 - 0.25) / (0.55 - 0.25))
    assert objectives.attack_resistance == pytest.approx(0.7)
    parts = [0.75, 0.6, 0.5, 0.7]
    assert objectives.combined == pytest.approx(4 / sum(1 / p for p in parts))
    assert explain["attack_resistance"]["worst_setting"] == "k=5"
    assert explain["utility"]["relative"] is True


def test_objectives_without_target_are_absolute_and_missing_parts_are_explained():
    metrics = {"rougeL_recall/forget": entry(0.2), "mcq_acc/general": entry(0.25)}
    objectives, explain = compute_objectives(metrics, {})
    assert objectives.forget_efficacy == pytest.approx(0.8)
    assert objectives.utility == 0.0  # chance accuracy keeps nothing
    assert objectives.neighbour_retention is None and "no metric" in explain["neighbour_retention"]["note"]
    assert objectives.attack_resistance is None and objectives.combined is None
    assert "neighbour_retention" in explain["combined"]["note"]
    # A target at chance has nothing to retain: the component is undefined, with the reason.
    target = EvalResults(name="t", model="m", metrics={"mcq_acc/general": entry(0.25)})
    objectives, explain = compute_objectives(metrics, {}, target=target)
    assert objectives.utility is None and "not above chance" in explain["utility"]["note"]


# -- end to end ---------------------------------------------------------------------------------------------


def test_evaluate_a_refusing_stub_end_to_end(tokenizer, tmp_path):
    vocab = len(tokenizer)
    stub = StubLM(vocab, favour=token_ids(tokenizer, " A"), margin=1.0, reply=token_ids(tokenizer, "I don't know."))
    retain = QARecord(id="retain/0", question="What is 2+2?", answer="Two plus two is four.", role="retain",
                      source="t")
    records = [*forget_records(), *neighbor_records(), retain, mmlu(0, 0), mmlu(1, 3)]
    cfg = quiet("metrics=[qa, probability, mcq]", "attacks.paraphrase=null", "attacks.prefill.ks=[1, 2]")
    results = evaluate(loaded(stub, tokenizer), records, cfg, name="stub", out=tmp_path)
    m = results.metrics
    assert m["refusal_rate/forget"].value == 1.0 and m["over_refusal/neighbor"].value == 1.0
    assert m["refusal_rate/retain"].value == 1.0
    assert m["rougeL_recall/forget"].value == 0.0
    assert results.generations["qa/forget"] == ["I don't know."] * 2
    assert m["mcq_acc/general"].per_example == [1.0, 0.0]
    # "Two plus two is four." has only unfavoured tokens: probability e^0 / Z per token.
    z = (vocab - 1) + math.e
    assert m["answer_probability/retain"].value == pytest.approx(1 / z, rel=1e-4)  # float32 log-softmax
    assert results.attacks["prefill"].success_rate == {"k=0": 0.0, "k=1": 0.0, "k=2": 0.0, "opener/0": 0.0,
                                                       "opener/1": 0.0, "opener/2": 0.0}
    assert "mcq_prefill" in results.attacks and "skipped" in results.attacks["mcq_prefill"].details
    assert results.objectives.forget_efficacy == 1.0
    assert results.objectives.neighbour_retention == 0.0
    assert results.objectives.attack_resistance == 1.0
    assert results.objectives.combined == 0.0
    assert set(results.meta["skipped"]) == set()
    assert results.meta["records"] == {"qa": {"forget": 2, "neighbor": 1, "retain": 1}, "verbmem": {},
                                       "mcq": {"general": 2}}
    # results.json round trip
    again = EvalResults.load(tmp_path)
    assert again.model_dump() == results.model_dump()


def test_requested_metrics_without_data_are_skipped_with_a_reason(tokenizer):
    stub = StubLM(len(tokenizer), reply=token_ids(tokenizer, "No."))
    cfg = quiet("attacks.prefill=null", "attacks.paraphrase=null", "attacks.mcq_prefill=null")
    results = evaluate(loaded(stub, tokenizer), forget_records(), cfg, name="s")
    assert set(results.meta["skipped"]) == {"truth_ratio", "knowmem", "verbmem", "mcq", "perplexity", "mia"}
    assert "paraphrased_answer" in results.meta["skipped"]["truth_ratio"]


def test_relative_objectives_use_the_target_results(tokenizer):
    model = leaky_model(tokenizer)
    cfg = quiet("metrics=[qa]", "attacks.paraphrase=null", "attacks.mcq_prefill=null", "attacks.prefill.ks=[2]",
                "attacks.prefill.openers=[]")
    target = evaluate(loaded(model, tokenizer), forget_records(), cfg, name="target")
    assert target.metrics["rougeL_recall/forget"].value == 1.0
    stub = StubLM(len(tokenizer), reply=token_ids(tokenizer, "Basil Mahfouz was born"))
    results = evaluate(loaded(stub, tokenizer), forget_records(), cfg, name="u", reference=target)
    recall = results.metrics["rougeL_recall/forget"].value
    assert 0 < recall < 1
    assert results.objectives.forget_efficacy == pytest.approx(1 - recall)
    assert results.meta["objectives"]["forget_efficacy"]["relative"] is True and results.meta["target"] == "target"


def test_results_do_not_depend_on_batch_sizes(tokenizer):
    model = leaky_model(tokenizer)
    records = [*forget_records(), *neighbor_records(), mmlu(0, 1), mmlu(1, 2), mmlu(2, 3)]
    common = ["metrics=[qa, probability, mcq]", "attacks.paraphrase=null", "attacks.prefill.ks=[1, 3]",
              "attacks.prefill.openers=['Sure, here:']", "attacks.mcq_prefill.roles=[general]"]
    one = evaluate(loaded(model, tokenizer), records,
                   quiet(*common, "generation.batch_size=1", "scoring_batch_size=1"), name="a")
    many = evaluate(loaded(model, tokenizer), records,
                    quiet(*common, "generation.batch_size=5", "scoring_batch_size=4"), name="a")
    assert one.generations == many.generations
    assert set(one.metrics) == set(many.metrics)
    for key, value in one.metrics.items():
        assert value.per_example == pytest.approx(many.metrics[key].per_example, rel=1e-5, abs=1e-7), key
    for name, attack in one.attacks.items():
        assert attack.success_rate == many.attacks[name].success_rate, name
        assert attack.generations == many.attacks[name].generations, name


def test_paraphrase_attack_results_make_a_report(tokenizer, tmp_path):
    # TOFU perturbed-style data: every forget record carries a paraphrased question, one of them two.
    records = forget_records()
    first = records[0].metadata["paraphrased_question"]
    records[0] = records[0].model_copy(
        update={"metadata": {"paraphrased_question": [first, "Tell me the birthplace of Basil Mahfouz."]}})
    cfg = quiet("metrics=[qa]", "attacks.prefill=null", "attacks.mcq_prefill=null", "attacks.relearn=null")
    results = evaluate(loaded(leaky_model(tokenizer), tokenizer), records, cfg, name="para", out=tmp_path)
    attack = results.attacks["paraphrase"]
    ids = attack.details["example_ids"]["paraphrased_question"]
    assert ids[:2] == ["forget/0", "forget/0"] and len(ids) == 3 == len(attack.per_example["paraphrased_question"])
    assert attack.per_example["paraphrased_question"][0] == 1.0 and attack.per_example["paraphrased_question"][2] == 1.0
    paths = write_report([EvalResults.load(tmp_path)], tmp_path / "report")
    markdown = paths.markdown.read_text(encoding="utf-8")
    assert "Attack 'paraphrase' succeeded (paraphrased_question)" in markdown
    page = paths.html.read_text(encoding="utf-8")
    for question in (first, FACTS[1][2]):  # each leaked row shows the rewording that was asked
        assert question in markdown and html.escape(question) in page
