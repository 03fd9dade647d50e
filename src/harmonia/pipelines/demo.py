"""``harmonia demo``: the whole mission on the embedded model, offline, with timings per stage.

data -> target and reference (cached) -> teacher report -> unlearn with harmonia -> baselines with
the same step budget -> evaluate every model on all four objectives and attacks -> report and a
summary table. Everything expensive is cached by content hash (targets, teacher cache, the
evaluations of target and reference), so a rerun repeats only what changed.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harmonia.config import MethodConfig, TrainConfig
from harmonia.data.build import build_dataset
from harmonia.data.schema import ROLES, QARecord
from harmonia.data.split import split_heldout
from harmonia.evaluation.harness import evaluate
from harmonia.evaluation.results import EvalResults
from harmonia.io import harmonia_home, write_json_atomic, write_text_atomic
from harmonia.methods.base import Method, MethodParams, build_params, get_method
from harmonia.models import LoadedModel, load_model
from harmonia.pipelines.demo_config import BaselineConfig, DemoConfig, SelectionConfig, check_methods
from harmonia.pipelines.fingerprint import (
    adopt_legacy,
    cache_path,
    fingerprint,
    finished_model,
    legacy_model_dir_fingerprint,
    model_keys,
)
from harmonia.pipelines.targets import prepare_model
from harmonia.teacher.context import TeacherContext, build_context, instructed_system_prompt
from harmonia.teacher.report import TeacherReport, check_separation, compute_teacher_report, format_report
from harmonia.training.engine import Engine

Log = Callable[[str], Any]


@dataclass
class DemoResult:
    results: list[EvalResults]
    timings: dict[str, float] = field(default_factory=dict)
    report_html: Path | None = None
    table_markdown: str = ""


def selectable(record: QARecord, selection: SelectionConfig) -> bool:
    """Whether :func:`select` may draw ``record``: calibration entities only when ``selection`` asks."""
    return selection.calibration or not record.metadata.get("calibration")


def select(records: Sequence[QARecord], selection: SelectionConfig) -> list[QARecord]:
    """A seeded sample per role of plain and of prefilled records, kept in input order."""
    rng = random.Random(selection.seed)
    keep: set[str] = set()
    for kind, sizes in (("plain", selection.plain), ("prefilled", selection.prefilled)):
        for role, n in sizes.items():
            pool = [r.id for r in records if r.role == role and bool(r.prefill) == (kind == "prefilled")
                    and selectable(r, selection)]
            keep.update(pool if n is None or n >= len(pool) else rng.sample(pool, n))
    return [r for r in records if r.id in keep]


class Stopwatch:
    def __init__(self, log: Log) -> None:
        self.timings: dict[str, float] = {}
        self.log = log

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.log(f"[bold cyan]== {name}[/]")
        start = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - start, 1)
        self.log(f"   {name}: {self.timings[name]:.0f} s")


@dataclass
class DemoData:
    """``records``: everything built (the target learns all of it); ``train`` and ``evaluation``:
    the pools unlearning and evaluation select from (held-out questions are only in the latter);
    ``eval_extra``: evaluation-only records (MMLU)."""

    base: LoadedModel
    records: list[QARecord]
    train: list[QARecord]
    evaluation: list[QARecord]
    eval_extra: list[QARecord]
    context: TeacherContext


def demo_pools(cfg: DemoConfig, records: Sequence[QARecord],
               log: Log = print) -> tuple[list[QARecord], list[QARecord], TeacherContext]:
    """``(train, evaluation, context)``: the held-out split of ``records`` and the teacher context.

    The forget questions are both unlearned and evaluated (TOFU); those a few-shot teacher shows as
    demonstrations would score its own prompt, so they leave the evaluation pool of every row.
    """
    split = split_heldout(records, cfg.heldout, seed=cfg.heldout_seed, anchor_method=cfg.data.anchors.method)
    context = build_context(cfg.teacher, split.train)  # few-shot demonstrations never come from held-out items
    # calibration entities are split too, but the evaluation draws them only if eval_records asks
    held = sum(not r.prefill and selectable(r, cfg.eval_records) for r in records if r.id in split.heldout_ids)
    log(f"   {len(records)} records, {held} questions held out for evaluation; "
        f"forget scope: {', '.join(context.scope.forget)}")
    evaluation = [r for r in split.evaluation if not context.shows(r)]
    if dropped := sum(not r.prefill for r in split.evaluation) - sum(not r.prefill for r in evaluation):
        log(f"   few-shot teacher: its {dropped} demonstration questions are left out of every evaluation")
    return split.train, evaluation, context


def load_demo_data(cfg: DemoConfig, log: Log = print) -> DemoData:
    """The demo's data stage: base model, records and their held-out split, teacher context."""
    base = load_model(cfg.model.spec, dtype=cfg.model.dtype)
    records = build_dataset(cfg.data, tokenizer=base.tokenizer)
    eval_extra = build_dataset(cfg.eval_data, tokenizer=base.tokenizer) if cfg.eval_data else []
    train, evaluation, context = demo_pools(cfg, records, log)
    return DemoData(base, records, train, evaluation, eval_extra, context)


def run_demo(cfg: DemoConfig, *, baselines: Sequence[str] | None = None, log: Log = print) -> DemoResult:
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    watch = Stopwatch(log)
    names = list(baselines if baselines is not None else cfg.run_baselines)
    check_methods(cfg, names)

    with watch.stage("data"):
        data = load_demo_data(cfg, log)
    base, records, context = data.base, data.records, data.context

    with watch.stage("target"):
        target = prepare_model("target", base.path, records, cfg.teacher, cfg.target, base.tokenizer,
                               scope=context.scope, log=log)
    with watch.stage("reference"):
        reference = prepare_model("reference", base.path, records, cfg.teacher, cfg.target, base.tokenizer,
                                  scope=context.scope, log=log)

    report_records = select(data.evaluation, cfg.unlearn.teacher_report_records)
    with watch.stage("teacher report"):
        report = cached_teacher_report(cfg, target.model_dir, context, report_records, log)
        write_json_atomic(out / "teacher_report.json", report.as_dict())
        log(format_report(report))
        check_separation(report, cfg.teacher.report)

    eval_records = select(data.evaluation, cfg.eval_records) + data.eval_extra
    results: list[EvalResults] = []
    with watch.stage("evaluate target"):
        target_results = cached_evaluation(cfg, "target", target.model_dir, eval_records, None, log)
    results.append(target_results)
    with watch.stage("evaluate reference"):
        results.append(cached_evaluation(cfg, "reference", reference.model_dir, eval_records, target_results, log))
    if cfg.in_context_row:
        with watch.stage("evaluate in-context"):
            icu_cfg = cfg.evaluation.model_copy(update={"system": instructed_system_prompt(cfg.teacher,
                                                                                          context.scope)})
            results.append(cached_evaluation(cfg, "in-context (target + instruction)", target.model_dir,
                                             eval_records, target_results, log, eval_cfg=icu_cfg))

    from harmonia.reports import markdown_table, write_report  # matplotlib: imported only when needed

    # Each method is evaluated as soon as it has trained, so its row exists even if a later one fails.
    train_records = select(data.train, cfg.unlearn.records)
    runs = [(cfg.unlearn.method.name, cfg.unlearn.method)]
    runs += [(label, cfg.method_config(label)) for label in names]
    for label, method_cfg in runs:
        with watch.stage(f"unlearn {label}"):
            model_dir = unlearn(cfg, method_cfg, target.model_dir, train_records, out / label,
                                main=label == cfg.unlearn.method.name)
        with watch.stage(f"evaluate {label}"):
            # keyed by the unlearned weights too: a method trained again is evaluated again
            results.append(cached_evaluation(cfg, label, model_dir, eval_records, target_results, log))
        write_json_atomic(out / "timings.json", watch.timings)
        write_text_atomic(out / "summary.md", markdown_table(results) + "\n")  # the rows so far

    with watch.stage("report"):
        paths = write_report(results, out / "report", title=f"harmonia demo: {cfg.name}")
        table = markdown_table(results)
        write_text_atomic(out / "summary.md", table + "\n")
    write_json_atomic(out / "timings.json", watch.timings)
    return DemoResult(results=results, timings=watch.timings, report_html=paths.html, table_markdown=table)


@dataclass(frozen=True)
class UnlearnPlan:
    """What one unlearning run trains: the method, its params, budget and records, and the key that
    names the run (a finished run with the same key is reused)."""

    method: type[Method]
    params: MethodParams
    train: TrainConfig
    records: list[QARecord]
    key: str
    legacy_key: str = ""
    """The key the run had before content fingerprints (a run folder keyed on it is reused)."""


def plan_unlearning(cfg: DemoConfig, method_cfg: MethodConfig, start: Path, records: Sequence[QARecord],
                    *, main: bool) -> UnlearnPlan:
    """The run :func:`unlearn` would train. Baselines keep the step budget and batch size of the main
    method, and its learning rate unless their entry sets one (``baselines.<label>.lr``); their role
    mix is the main mix restricted to the roles they train on."""
    cls = get_method(method_cfg.name)
    params = dict(method_cfg.params)
    if "teacher" in cls.Params.model_fields and "teacher" not in params:
        params["teacher"] = cfg.teacher.model_dump()
    # the roles of the method as configured (a retain term on [retain, neighbor] skips general)
    method_params = build_params(cls, params)
    roles = set(cls.trained_roles(method_params))
    train = cfg.unlearn.train
    if not main:
        mix = {role: w for role, w in train.mix.items() if role in roles} or dict(cls.default_mix)
        lr = getattr(method_cfg, "lr", None) or train.lr
        scale = getattr(method_cfg, "update_scale", None)
        train = train.model_copy(update={"mix": mix, "lr": lr,
                                         "update_scale": train.update_scale if scale is None else scale})
        roles = set(mix)
    usable = [r for r in records if r.role in roles]
    # the scale a run keeps is keyed through ``train``; the entry's own copy of it would key a baseline
    # that sets the scale it would inherit apart from one that inherits it
    keyed = method_cfg
    if isinstance(method_cfg, BaselineConfig):
        keyed = method_cfg.model_copy(update={"update_scale": None})
    key, legacy = model_keys(start, keyed, params.get("teacher", {}), train, usable)
    return UnlearnPlan(cls, method_params, train, usable, key, legacy)


def unlearn(cfg: DemoConfig, method_cfg: MethodConfig, start: Path, records: list[QARecord], run_dir: Path,
            *, main: bool) -> Path:
    """Train a method from the target on ``records`` (see :func:`plan_unlearning`); returns its model."""
    plan = plan_unlearning(cfg, method_cfg, start, records, main=main)
    key_file = run_dir / "unlearn_key.txt"
    if key_file.is_file() and finished_model(run_dir):
        found = key_file.read_text().strip()
        if found == plan.legacy_key:
            write_text_atomic(key_file, plan.key + "\n")
        if found in (plan.key, plan.legacy_key):
            return run_dir / "model"
    model = load_model(str(start))
    # The teacher report was computed once for the demo (teacher_report.json), not again per method.
    engine = Engine(plan.train, plan.method, plan.params, model.model, model.tokenizer, run_dir,
                    context_extras={"run_dir": run_dir})
    result = engine.train(plan.records)
    assert result.model_dir is not None
    write_text_atomic(key_file, plan.key + "\n")
    return result.model_dir


def cached_teacher_report(cfg: DemoConfig, target_dir: Path, context: TeacherContext,
                          records: list[QARecord], log: Log) -> TeacherReport:
    """The teacher report of the target under ``context``; computed once per target weights,
    teacher settings (mode, template, calibration, report options), instruction and records."""
    folder = harmonia_home() / "teacher_reports"
    path = cache_path(lambda key: folder / f"{key}.json", target_dir, cfg.teacher, context.system,
                      list(context.demonstrations), [list(turn) for turn in context.history], records)
    if path.is_file():
        log(f"   teacher report: cached {path}")
        return TeacherReport.from_dict(json.loads(path.read_text()))
    teacher = load_model(str(target_dir))
    report = compute_teacher_report(teacher.model, teacher.tokenizer, context, records, cfg.teacher.report)
    report.calibrated = cfg.teacher.calibration.enabled
    write_json_atomic(path, report.as_dict())
    return report


def cached_evaluation(cfg: DemoConfig, name: str, model_dir: Path, records: list[QARecord],
                      target: EvalResults | None, log: Log, *, eval_cfg: Any = None) -> EvalResults:
    """Evaluate a model once; reuse the results while its weights, the records and the settings match.

    The display ``name`` is not part of the key: the same weights shown under another name (an
    ablation's base and the demo's method row) are evaluated once and renamed on load.
    """
    eval_cfg = eval_cfg or cfg.evaluation
    reference = target.model_dump_json() if target is not None else ""
    folder = harmonia_home() / "evaluations"
    # evaluations cached before content fingerprints, also those from before the name left the key
    path = cache_path(lambda key: folder / f"{key}.json", model_dir, records, eval_cfg, reference)
    named = fingerprint(legacy_model_dir_fingerprint(model_dir), name, records, eval_cfg, reference)[:16]
    adopt_legacy(path, folder / f"{named}.json")
    if path.is_file():
        log(f"   {name}: cached evaluation {path}")
        results = EvalResults.load(path).model_copy(update={"name": name})
    else:
        results = evaluate(str(model_dir), records, eval_cfg, name=name, reference=target, out=path)
    # the run folder's copy carries this row's name, also when the evaluation came from the cache
    results.save(Path(cfg.output_dir) / name.split(" ")[0] / "results.json")
    return results


__all__ = ["ROLES", "DemoData", "DemoResult", "load_demo_data", "run_demo", "select"]
