"""Pipelines and CLI: run configs, the demo config, record selection, target/reference data, errors."""

from __future__ import annotations

import os

import pytest
import yaml
from typer.testing import CliRunner

from harmonia.cli.main import app
from harmonia.config import load_config
from harmonia.data.schema import QARecord
from harmonia.errors import ConfigError
from harmonia.pipelines.config import RunConfig
from harmonia.pipelines.demo import select
from harmonia.pipelines.demo_config import DemoConfig, SelectionConfig, demo_config_path
from harmonia.pipelines.targets import calibration_records, plain_training_records
from harmonia.teacher.config import TeacherConfig
from harmonia.teacher.instruction import Scope

runner = CliRunner()


def rec(i: int, role: str, prefill: str = "", calibration: bool = False, group: str = "") -> QARecord:
    return QARecord(id=f"{role}{i}{'p' if prefill else ''}", question=f"q{i}?", answer=f"a{i}", role=role,
                    source="t", prefill=prefill, group=group or f"{role}-author",
                    metadata={"calibration": True} if calibration else {})


def test_shipped_demo_config_validates():
    cfg = load_config(DemoConfig, demo_config_path(None))
    assert demo_config_path(None) == demo_config_path("demo_fast")  # the default profile
    assert cfg.unlearn.train.steps == 30 and cfg.unlearn.train.train_top_layers == 15
    assert cfg.unlearn.method.name == "harmonia"
    assert set(cfg.run_baselines) == {"npo", "simnpo", "duet"}
    assert cfg.teacher.calibration.enabled


def test_demo_config_rejects_unknown_baseline_and_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        load_config(DemoConfig, demo_config_path(None), ["run_baselines=[nope]"])
    with pytest.raises(ConfigError, match=r"key 'unlearn\.train\.bogus': unknown key"):
        load_config(DemoConfig, demo_config_path(None), ["unlearn.train.bogus=1"])


def test_config_errors_say_which_override_set_the_key(tmp_path):
    # the first line names the file; a key that only the command line set is not in it
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"train": {"steps": 1, "lrr": 1.0}}))
    with pytest.raises(ConfigError) as info:
        load_config(RunConfig, path, ["train.stepz=3", "train.batch_size=abc", "train.batch_size=0"])
    lines = str(info.value).splitlines()
    assert lines[0] == f"{path}: invalid configuration"
    assert "key 'train.lrr': unknown key" in str(info.value)
    assert not any("override" in line for line in lines if "train.lrr" in line)  # from the file
    assert any("train.stepz" in line and "set by the override 'train.stepz=3'" in line for line in lines)
    # the last override of a key is the one validated, and the one named
    assert any("train.batch_size" in line and "'train.batch_size=0'" in line for line in lines)
    with pytest.raises(ConfigError, match=r"key 'train\.steps': .* \(set by the override 'train=\{steps: x\}'\)"):
        load_config(RunConfig, path, ["train={steps: x}"])  # a whole section set on the command line


def test_run_config_names_missing_data_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"data_file": "missing.jsonl", "train": {"steps": 1}}))
    with pytest.raises(ConfigError) as info:
        load_config(RunConfig, path)
    assert str(path) in str(info.value) and "data_file" in str(info.value) and "missing.jsonl" in str(info.value)


def test_select_samples_per_role_and_kind_deterministically():
    records = [rec(i, "forget") for i in range(10)] + [rec(i, "forget", prefill="x") for i in range(10)]
    records += [rec(i, "retain") for i in range(10)] + [rec(i, "retain", calibration=True) for i in range(10, 20)]
    selection = SelectionConfig(plain={"forget": None, "retain": 3}, prefilled={"forget": 2}, seed=4)
    chosen = select(records, selection)
    assert chosen == select(records, selection)
    assert sum(r.role == "forget" and not r.prefill for r in chosen) == 10
    assert sum(r.role == "forget" and bool(r.prefill) for r in chosen) == 2
    retain = [r for r in chosen if r.role == "retain"]
    assert len(retain) == 3 and not any(r.metadata.get("calibration") for r in retain)
    assert [r.id for r in chosen] == [r.id for r in records if r in chosen]  # input order kept


def test_reference_training_data_never_holds_forget_records(tokenizer):
    records = [rec(i, "forget") for i in range(3)] + [rec(i, "neighbor") for i in range(3)]
    records += [rec(i, "retain") for i in range(3)] + [rec(i, "forget", prefill="x") for i in range(3)]
    target = plain_training_records(records, kind="target")
    reference = plain_training_records(records, kind="reference")
    assert {r.role for r in target} == {"forget", "neighbor", "retain"} and not any(r.prefill for r in target)
    assert {r.role for r in reference} == {"neighbor", "retain"}
    assert len(reference) == len(target) - 3
    unlearned = [rec(i, "retain") for i in range(3, 5)]
    for r in unlearned:
        r.metadata["in_target"] = False  # a calibration-only source: neither model learns it first
    assert plain_training_records(records + unlearned, kind="target") == target
    assert plain_training_records(records + unlearned, kind="reference") == reference
    scope = Scope(forget=("forget-author",), neighbor=("neighbor-author",))
    assert calibration_records(records, TeacherConfig(), tokenizer, scope=scope) == []  # calibration off


def test_calibration_set_uses_only_calibration_entities(tokenizer):
    authors = ["Ann Lee", "Bob Ray", "Cy Dunn"]
    records = [QARecord(id=f"c{a}{i}", question=f"What did {name} write ({i})?", answer=f"{name} wrote book {i}.",
                        role="retain", source="t", group=name, metadata={"calibration": True})
               for a, name in enumerate(authors) for i in range(6)]
    records += [rec(i, "forget", group="Zed Forget") for i in range(3)]
    teacher = TeacherConfig(calibration={"enabled": True, "episodes_per_entity": 1, "questions_per_entity": 2,
                                         "prefill_per_k": 1, "replay": 0})
    scope = Scope(forget=("Zed Forget",), neighbor=())
    cal = calibration_records(records, teacher, tokenizer, scope=scope)
    assert cal and all(r.source == "calibration" for r in cal)
    assert not any("Zed Forget" in (r.question + r.answer + str(r.metadata.get("system"))) for r in cal)
    kinds = {r.metadata["kind"] for r in cal}
    assert {"refuse", "answer", "prefill_refuse", "prefill_answer"} <= kinds


def test_cli_reports_config_errors_without_traceback(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"train": {"steps": 1, "lr": "fast"}}))
    result = runner.invoke(app, ["unlearn", str(path)])
    assert result.exit_code == 2
    assert "key 'train.lr'" in result.output and str(path) in result.output
    assert "Traceback" not in result.output


def test_cli_bad_override_is_a_clear_error(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"train": {"steps": 1}}))
    result = runner.invoke(app, ["unlearn", str(path), "train.lr"])
    assert result.exit_code == 2 and "key.sub=value" in result.output


def test_cli_lists_methods():
    result = runner.invoke(app, ["methods"])
    assert result.exit_code == 0
    for name in ("harmonia", "duet", "bild", "npo", "simnpo", "rmu", "ga", "graddiff", "idkdpo", "refusal_sft"):
        assert name in result.output


def test_demo_evaluations_are_reused_until_the_weights_change(tmp_path, monkeypatch):
    import os

    from harmonia.evaluation.results import EvalResults
    from harmonia.pipelines import demo

    monkeypatch.setenv("HARMONIA_HOME", str(tmp_path / "home"))
    calls: list[str] = []

    def fake_evaluate(model, records, cfg, *, name, reference=None, out=None):
        calls.append(name)
        result = EvalResults(name=name, model=model)
        result.save(out)
        return result

    monkeypatch.setattr(demo, "evaluate", fake_evaluate)
    cfg = load_config(DemoConfig, demo_config_path(None), [f"output_dir={tmp_path / 'run'}"])
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    weights = model_dir / "model.safetensors"
    weights.write_bytes(b"0")
    records = [rec(0, "forget")]
    first = demo.cached_evaluation(cfg, "npo", model_dir, records, None, print)
    assert demo.cached_evaluation(cfg, "npo", model_dir, records, None, print) == first
    assert calls == ["npo"] and (tmp_path / "run" / "npo" / "results.json").is_file()
    renamed = demo.cached_evaluation(cfg, "npo again", model_dir, records, None, print)
    assert calls == ["npo"] and renamed.name == "npo again"  # same weights, another name: no re-evaluation
    assert EvalResults.load(tmp_path / "run" / "npo" / "results.json").name == "npo again"
    os.utime(weights, ns=(1, 1))  # the same weights copied or converted again: same content
    demo.cached_evaluation(cfg, "npo", model_dir, records, None, print)
    assert calls == ["npo"]
    weights.write_bytes(b"1")  # a method trained again writes new weights
    demo.cached_evaluation(cfg, "npo", model_dir, records, None, print)
    assert calls == ["npo", "npo"]
    demo.cached_evaluation(cfg, "npo", model_dir, [rec(1, "forget")], None, print)
    assert calls == ["npo", "npo", "npo"]  # other records: evaluated again


def test_the_demo_teacher_report_is_computed_once_per_target_teacher_and_records(tmp_path, monkeypatch):
    from harmonia.pipelines import demo
    from harmonia.teacher.context import TeacherContext
    from harmonia.teacher.report import RowReport, TeacherReport

    monkeypatch.setenv("HARMONIA_HOME", str(tmp_path / "home"))
    calls: list[int] = []

    def fake_report(model, tokenizer, context, records, config):
        calls.append(len(records))
        return TeacherReport("amplified", {"forget": RowReport(len(records), 1.0, 0.0, 0.9)},
                             distilled_from={"forget": "instructed"})

    monkeypatch.setattr(demo, "compute_teacher_report", fake_report)
    monkeypatch.setattr(demo, "load_model", lambda path: type("M", (), {"model": None, "tokenizer": None}))
    cfg = load_config(DemoConfig, demo_config_path(None), [])
    target = tmp_path / "target"
    target.mkdir()
    (target / "model.safetensors").write_bytes(b"0")
    context = TeacherContext(cfg.teacher, Scope(forget=("A",)), system="Do not discuss A.")
    records = [rec(0, "forget"), rec(1, "forget")]
    first = demo.cached_teacher_report(cfg, target, context, records, print)
    again = demo.cached_teacher_report(cfg, target, context, records, print)
    assert calls == [2] and again == first and again.calibrated == cfg.teacher.calibration.enabled
    demo.cached_teacher_report(cfg, target, context, records[:1], print)  # other records
    other = load_config(DemoConfig, demo_config_path(None), ["teacher.alpha=2.0"])
    demo.cached_teacher_report(other, target, TeacherContext(other.teacher, context.scope, context.system),
                               records, print)  # another teacher
    assert calls == [2, 1, 2]


def test_evaluations_cached_under_the_older_name_keyed_entry_are_found(tmp_path, monkeypatch):
    from harmonia.evaluation.results import EvalResults
    from harmonia.pipelines import demo
    from harmonia.pipelines.fingerprint import fingerprint
    from harmonia.pipelines.fingerprint import legacy_model_dir_fingerprint as model_dir_fingerprint

    monkeypatch.setenv("HARMONIA_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(demo, "evaluate", lambda *a, **k: pytest.fail("evaluated again"))
    cfg = load_config(DemoConfig, demo_config_path(None), [f"output_dir={tmp_path / 'run'}"])
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.safetensors").write_bytes(b"0")
    records = [rec(0, "forget")]
    legacy = fingerprint(model_dir_fingerprint(model_dir), "npo", records, cfg.evaluation, "")[:16]
    EvalResults(name="npo", model="m").save(tmp_path / "home" / "evaluations" / f"{legacy}.json")
    assert demo.cached_evaluation(cfg, "npo", model_dir, records, None, print).model == "m"
    assert not (tmp_path / "home" / "evaluations" / f"{legacy}.json").exists()  # moved to its content key
    assert demo.cached_evaluation(cfg, "npo", model_dir, records, None, print).model == "m"


def model_folder(path, weights: bytes, mtime: int):
    path.mkdir()
    for name, data in (("model.safetensors", weights), ("config.json", b"{}"), ("notes.md", str(mtime).encode())):
        (path / name).write_bytes(data)
        os.utime(path / name, ns=(mtime, mtime))
    return path


def test_a_model_is_fingerprinted_by_content_not_by_file_dates(tmp_path):
    from harmonia.pipelines.fingerprint import legacy_model_dir_fingerprint, model_dir_fingerprint

    a = model_folder(tmp_path / "a", b"weights", 10**18)
    copy = model_folder(tmp_path / "copy", b"weights", 2 * 10**18)  # converted again: new dates
    assert model_dir_fingerprint(a) == model_dir_fingerprint(copy)
    assert legacy_model_dir_fingerprint(a) != legacy_model_dir_fingerprint(copy)  # what this replaced
    before = model_dir_fingerprint(a)
    (a / "model.safetensors").write_bytes(b"weighta")  # same size, rewritten: hashed again
    os.utime(a / "model.safetensors", ns=(10**18 + 1, 10**18 + 1))
    assert model_dir_fingerprint(a) != before
    assert model_dir_fingerprint("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"


def test_targets_and_runs_cached_under_legacy_keys_are_reused(tmp_path, monkeypatch):
    from harmonia.config import TrainConfig
    from harmonia.pipelines import demo, targets
    from harmonia.pipelines.fingerprint import cached_model_run, model_keys, weights_settings

    monkeypatch.setenv("HARMONIA_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(targets, "Engine", lambda *a, **k: pytest.fail("trained again"))
    start = model_folder(tmp_path / "base", b"weights", 10**18)
    records, train = [rec(0, "forget")], TrainConfig(epochs=1)
    settings = weights_settings(train.model_copy(update={"output_dir": None, "save": "merged"}))
    key, legacy = model_keys(start, "target-sft", records, settings)
    assert key != legacy
    (cached_model_run("target-sft", legacy) / "model").mkdir(parents=True)
    (cached_model_run("target-sft", legacy) / "model" / "config.json").write_text("{}")
    model_dir, cached, _ = targets._train_stage("target-sft", start, records, train, print)
    assert cached and model_dir == cached_model_run("target-sft", key) / "model"
    assert not cached_model_run("target-sft", legacy).exists()

    # an unlearning run whose key file holds the legacy key: reused, and its key file rewritten
    monkeypatch.setattr(demo, "load_model", lambda *a, **k: pytest.fail("trained again"))
    cfg = load_config(DemoConfig, demo_config_path(None), [f"output_dir={tmp_path / 'run'}"])
    plan = demo.plan_unlearning(cfg, cfg.method_config("npo"), start, records, main=False)
    run_dir = tmp_path / "run" / "npo"
    (run_dir / "model").mkdir(parents=True)
    (run_dir / "model" / "config.json").write_text("{}")
    (run_dir / "unlearn_key.txt").write_text(plan.legacy_key + "\n")
    assert demo.unlearn(cfg, cfg.method_config("npo"), start, records, run_dir, main=False) == run_dir / "model"
    assert (run_dir / "unlearn_key.txt").read_text().strip() == plan.key != plan.legacy_key


def test_demo_config_rejects_a_method_that_cannot_take_its_prefilled_records():
    from harmonia.errors import ConfigError
    from harmonia.pipelines.demo_config import all_baselines, check_methods

    with pytest.raises(ConfigError, match=r"baselines.duet.params.positions .*'prefill'"):
        load_config(DemoConfig, demo_config_path(None), ["baselines.duet.params.positions=[first]"])
    cfg = load_config(DemoConfig, demo_config_path(None), [])
    everything = all_baselines(cfg)  # `harmonia demo --baselines all`
    assert everything[:3] == ["npo", "simnpo", "duet"]  # the configured labels, once each
    assert "npo_retain" not in everything and "harmonia" not in everything and "sft" not in everything
    assert {"ga", "graddiff", "rmu", "refusal_sft", "idkdpo", "bild"} <= set(everything)
    check_methods(cfg, everything)  # all of them can start


def test_demo_never_evaluates_neighbour_or_retain_questions_it_unlearns_on(tokenizer):
    from harmonia.data.build import build_dataset
    from harmonia.data.split import split_heldout

    cfg = load_config(DemoConfig, demo_config_path(None), [])
    records = build_dataset(cfg.data, tokenizer=tokenizer)
    split = split_heldout(records, cfg.heldout, seed=cfg.heldout_seed, anchor_method=cfg.data.anchors.method)
    trained = select(split.train, cfg.unlearn.records)
    evaluated = select(split.evaluation, cfg.eval_records)

    def questions(rs, role):  # a prefilled copy asks its parent's question
        return {r.metadata.get("parent_id", r.id) for r in rs if r.role == role}

    for role in ("neighbor", "retain"):
        assert questions(evaluated, role) and not questions(trained, role) & questions(evaluated, role)
    assert questions(evaluated, "neighbor") == {r.id for r in records if r.id in split.heldout_ids
                                                and r.role == "neighbor" and not r.prefill}
    assert questions(evaluated, "forget") == questions(trained, "forget")  # the forget set is what is unlearned
    anchored = [r for r in trained if r.role == "forget" and not r.prefill]
    assert anchored and all(r.anchor_id in {t.id for t in trained} for r in anchored)
    # the target still learns every question, held out or not
    assert split.heldout_ids & {r.id for r in plain_training_records(records, kind="target")}


def test_a_few_shot_teacher_is_never_evaluated_on_its_demonstrations(tokenizer):
    from harmonia.data.build import build_dataset
    from harmonia.pipelines.demo import demo_pools

    cfg = load_config(DemoConfig, demo_config_path(None), ["teacher.mode=fewshot", "teacher.n_shots=2"])
    records = build_dataset(cfg.data, tokenizer=tokenizer)
    train, evaluation, context = demo_pools(cfg, records, log=lambda *_: None)
    shown = {d.id for d in context.demonstrations}
    assert len(context.demonstrations) == 4 and shown <= {r.id for r in train}  # two pairs (may share a neighbour)
    plain_forget = [r for r in records if r.role == "forget" and not r.prefill and not r.metadata.get("calibration")]
    evaluated = [r for r in evaluation if r.role == "forget"]
    assert len([r for r in evaluated if not r.prefill]) == len(plain_forget) - 2  # two forget demonstrations
    assert not {r.metadata.get("parent_id", r.id) for r in evaluation} & shown
    context.check_not_demonstrations(select(evaluation, cfg.unlearn.teacher_report_records))  # no error
    instructed = load_config(DemoConfig, demo_config_path(None), [])
    assert demo_pools(instructed, records, log=lambda *_: None)[1] == demo_pools(instructed, records)[1]


def test_a_baseline_may_set_its_own_learning_rate_and_nothing_else_of_the_budget(tmp_path):
    from harmonia.config import MethodConfig
    from harmonia.pipelines import demo
    from harmonia.pipelines.demo_config import BaselineConfig
    from harmonia.pipelines.fingerprint import fingerprint

    start = model_folder(tmp_path / "base", b"weights", 10**18)
    records = [rec(0, "forget"), rec(1, "retain")]
    cfg = load_config(DemoConfig, demo_config_path(None), ["baselines.duet.lr=3.0e-4"])
    main = demo.plan_unlearning(cfg, cfg.unlearn.method, start, records, main=True)
    duet = demo.plan_unlearning(cfg, cfg.method_config("duet"), start, records, main=False)
    ga = demo.plan_unlearning(cfg, cfg.method_config("ga"), start, records, main=False)  # no entry
    assert (duet.train.lr, ga.train.lr, main.train.lr) == (3.0e-4, cfg.unlearn.train.lr, cfg.unlearn.train.lr)
    assert duet.train.lr != main.train.lr
    assert (duet.train.steps, duet.train.batch_size) == (main.train.steps, main.train.batch_size)
    other = load_config(DemoConfig, demo_config_path(None), ["baselines.duet.lr=1.0e-4"])
    assert demo.plan_unlearning(other, other.method_config("duet"), start, records, main=False).key != duet.key
    # an entry without lr keys its run as before the setting existed (cached runs stay valid)
    entry = {"name": "duet", "params": {"cache": True}}
    assert fingerprint(BaselineConfig(**entry)) == fingerprint(MethodConfig(**entry))
    assert fingerprint(BaselineConfig(**entry, lr=1e-4)) != fingerprint(MethodConfig(**entry))
    with pytest.raises(ConfigError, match=r"baselines\.duet\.lr"):
        load_config(DemoConfig, demo_config_path(None), ["baselines.duet.lr=0"])
    # a label with no entry yet names its method: the rate tunes BiLD, not plain SFT under "bild"
    tuned = load_config(DemoConfig, demo_config_path(None), ["baselines.bild.lr=1.0e-3"])
    bild = demo.plan_unlearning(tuned, tuned.method_config("bild"), start, records, main=False)
    assert (bild.method.name, bild.train.lr) == ("bild", 1.0e-3)


def test_the_held_out_count_is_of_questions_that_are_evaluated(tokenizer):
    """Calibration entities are split like every retain record but never evaluated: the log counts
    only the held-out neighbour and retain questions an evaluation can select."""
    import re

    from harmonia.data.build import build_dataset
    from harmonia.pipelines.demo import demo_pools

    cfg = load_config(DemoConfig, demo_config_path(None))
    records = build_dataset(cfg.data, tokenizer=tokenizer)
    lines: list[str] = []
    train, evaluation, _ = demo_pools(cfg, records, log=lines.append)
    logged = int(re.search(r"(\d+) questions held out", lines[0])[1])
    trained = {r.id for r in train}
    held = [r for r in evaluation if not r.prefill and r.id not in trained]
    assert any(r.metadata.get("calibration") for r in held)  # the split does hold out calibration QA
    assert logged == sum(not r.metadata.get("calibration") for r in held) > 0
    # an evaluation that draws calibration entities counts them too
    lines.clear()
    demo_pools(cfg.model_copy(update={"eval_records": cfg.eval_records.model_copy(update={"calibration": True})}),
               records, log=lines.append)
    assert int(re.search(r"(\d+) questions held out", lines[0])[1]) == len(held)


def test_a_baseline_inherits_or_sets_its_update_scale(tmp_path):
    from harmonia.pipelines import demo

    start = model_folder(tmp_path / "base", b"weights", 10**18)
    records = [rec(0, "forget"), rec(1, "retain")]
    cfg = load_config(DemoConfig, demo_config_path("demo"),
                      ["unlearn.train.update_scale=0.7", "baselines.duet.update_scale=1.0"])
    main = demo.plan_unlearning(cfg, cfg.unlearn.method, start, records, main=True)
    duet = demo.plan_unlearning(cfg, cfg.method_config("duet"), start, records, main=False)
    ga = demo.plan_unlearning(cfg, cfg.method_config("ga"), start, records, main=False)  # no entry
    assert (main.train.update_scale, duet.train.update_scale, ga.train.update_scale) == (0.7, 1.0, 0.7)
    unscaled = load_config(DemoConfig, demo_config_path("demo"), [])
    assert demo.plan_unlearning(unscaled, unscaled.unlearn.method, start, records, main=True).key != main.key
    # the run is keyed by the scale it keeps, not by where the scale was set
    inherits = load_config(DemoConfig, demo_config_path("demo"), ["baselines.duet.lr=2.0e-4"])
    sets = load_config(DemoConfig, demo_config_path("demo"), ["baselines.duet.lr=2.0e-4",
                                                              "baselines.duet.update_scale=1.0"])
    plans = [demo.plan_unlearning(c, c.method_config("duet"), start, records, main=False) for c in (inherits, sets)]
    assert plans[0].key == plans[1].key
    assert demo.plan_unlearning(cfg, cfg.method_config("npo"), start, records, main=False).key != \
        demo.plan_unlearning(unscaled, unscaled.method_config("npo"), start, records, main=False).key
    with pytest.raises(ConfigError, match=r"baselines\.duet\.update_scale"):
        load_config(DemoConfig, demo_config_path("demo"), ["baselines.duet.update_scale=1.5"])
