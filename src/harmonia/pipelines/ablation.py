"""Ablations of the method's design choices, one toggle at a time, against a demo config.

Every variant starts from the same cached target, trains with the same step budget and is
evaluated on the same records (cached per model), so the rows of the table differ only by the
toggled choice. A variant is either config overrides (``key.sub=value``, validated like the
demo's) or a change of the unlearning records that the data build cannot express without also
changing the target (raw text instead of QA; anchor links dropped).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harmonia.config import load_config
from harmonia.data.anchors import drop_anchor_links
from harmonia.data.build import build_dataset
from harmonia.data.config import DataConfig, TextSource
from harmonia.data.schema import ROLES, QARecord
from harmonia.errors import ConfigError
from harmonia.evaluation.results import EvalResults
from harmonia.io import write_text_atomic
from harmonia.pipelines.demo import DemoData, Log, cached_evaluation, load_demo_data, select, unlearn
from harmonia.pipelines.demo_config import DemoConfig, SelectionConfig
from harmonia.pipelines.targets import prepare_model
from harmonia.reports.tables import markdown_escape, markdown_table


@dataclass(frozen=True)
class Variant:
    """One toggled design choice: config ``overrides`` and/or a change of the unlearning records."""

    name: str
    change: str
    overrides: tuple[str, ...] = ()
    raw_text: bool = False
    anchors: bool = True


VARIANTS: tuple[Variant, ...] = (
    Variant("base", "the demo config as it is"),
    Variant("raw_text", "forget records as raw-text continuations instead of QA", raw_text=True),
    Variant("no_anchors", "no forget/neighbour anchor pairs in the unlearning batches", anchors=False),
    Variant("pull_only", "pull only: push weight 0", ("unlearn.method.params.push_weight=0",)),
    Variant("k10_all", "one Top-K, K = 10, for every role (the default before role_k)",
            ("unlearn.method.params.k=10", "unlearn.method.params.role_k={}")),
    Variant("k5", "one Top-K, K = 5, for every role", ("unlearn.method.params.k=5", "unlearn.method.params.role_k={}")),
    Variant("k20", "one Top-K, K = 20, for every role",
            ("unlearn.method.params.k=20", "unlearn.method.params.role_k={}")),
    Variant("no_prefill", "no prefill-augmented unlearning records", ("unlearn.records.prefilled={}",)),
    Variant("teacher_instruction", "teacher mode: instruction", ("teacher.mode=instruction",)),
    Variant("teacher_fewshot", "teacher mode: few-shot", ("teacher.mode=fewshot",)),
    Variant("teacher_amplified", "teacher mode: amplified, alpha 3", ("teacher.mode=amplified", "teacher.alpha=3.0")),
    Variant("teacher_amplified1", "teacher mode: amplified, alpha 1", ("teacher.mode=amplified", "teacher.alpha=1.0")),
    Variant("response_teacher", "forget records distilled along the teacher's own greedy response, not its decline "
            "sentence", ("unlearn.method.params.response=teacher", "unlearn.method.params.decline_margin=null")),
    Variant("smooth_l1_live", "live teacher, Smooth-L1 push toward the teacher's logits (not the cached hinge), "
            "along the teacher's own responses", ("unlearn.method.params.response=teacher",
            "unlearn.method.params.push=smooth_l1", "unlearn.method.params.cache=false",
            "unlearn.method.params.decline_margin=null")),
    Variant("centre", "logits centred on each model's mean over the teacher's Top-K before the Smooth-L1 "
            "(matches logit differences, not the softmax-irrelevant offset)", ("unlearn.method.params.centre=true",)),
    Variant("no_decline_margin", "the teacher's Top-K as it is at the first position of declined records (no "
            "decline_margin)", ("unlearn.method.params.decline_margin=null",)),
    Variant("first_weight1", "no extra weight on each record's first distilled position (the demo: 5x)",
            ("unlearn.method.params.first_weight=1.0",)),
    Variant("no_update_scale", "the trained weights as they are (the demo keeps 0.7 of the update: "
            "unlearn.train.update_scale)", ("unlearn.train.update_scale=1.0",)),
)


def choose_variants(names: Sequence[str] | None) -> list[Variant]:
    """The named variants in table order (all when ``names`` is empty)."""
    if not names:
        return list(VARIANTS)
    known = {v.name: v for v in VARIANTS}
    if unknown := [n for n in names if n not in known]:
        raise ConfigError(f"unknown ablation variant(s) {unknown}; known: {', '.join(known)}")
    return [v for v in VARIANTS if v.name in names]


def variant_config(path: Path, variant: Variant, overrides: Sequence[str] = ()) -> DemoConfig:
    """The demo config at ``path`` with the run's ``overrides``, then the variant's own."""
    return load_config(DemoConfig, path, [*overrides, *variant.overrides])


def raw_text_data(data: DataConfig, records: Sequence[QARecord], folder: Path) -> DataConfig:
    """``data`` with its forget sources replaced by raw text: per forget group (entity), the gold
    answers of its QA joined into one document, which the build cuts into "continue the passage"
    records. The group is kept, so the teacher's scope still names the same entities."""
    answers: dict[str, list[str]] = {}
    for r in records:
        if r.role == "forget" and not r.prefill:
            answers.setdefault(r.group, []).append(r.answer.strip())
    folder.mkdir(parents=True, exist_ok=True)
    texts: list[TextSource] = []
    for i, (group, parts) in enumerate(answers.items()):
        path = write_text_atomic(folder / f"forget_{i}.txt", " ".join(parts) + "\n")
        texts.append(TextSource(loader="text", name=f"raw_forget_{i}", role="forget", path=str(path.resolve()),
                                source="raw_text", group=group))
    first = next(i for i, s in enumerate(data.sources) if s.role == "forget")
    kept = [s for s in data.sources if s.role != "forget"]
    return data.model_copy(update={"sources": [*kept[:first], *texts, *kept[first:]]})


def unlearning_records(cfg: DemoConfig, variant: Variant, records: Sequence[QARecord], tokenizer: object,
                       folder: Path) -> list[QARecord]:
    """The variant's unlearning records: the demo's selection, with raw-text forget records when toggled.

    Only the forget records come from the raw-text build: its other records would differ too (the
    openers drawn for prefilled neighbours follow one seeded stream over all records).
    """
    chosen = select(records, cfg.unlearn.records)
    if variant.raw_text:
        # the other roles keep the demo's own selection: selecting from the mixed list would draw
        # them from a seeded stream that the raw forget pool's size has already moved
        rebuilt = build_dataset(raw_text_data(cfg.data, records, folder), tokenizer=tokenizer)
        forget = select([r for r in rebuilt if r.role == "forget"], cfg.unlearn.records)
        chosen = [r for r in forget if r.role == "forget"] + [r for r in chosen if r.role != "forget"]
    return chosen if variant.anchors else drop_anchor_links(chosen)


def limit_per_role(records: Sequence[QARecord], limit: int | None, seed: int = 0) -> list[QARecord]:
    """At most ``limit`` plain and ``limit`` prefilled records of each role (a seeded sample)."""
    if limit is None:
        return list(records)
    sizes = dict.fromkeys(ROLES, limit)
    return select(records, SelectionConfig(plain=sizes, prefilled=sizes, calibration=True, seed=seed))


@dataclass
class Comparison:
    """What every row of a comparison shares: the demo data, the target (the start of every run),
    the evaluation records and the target's results (the yardstick of the objectives)."""

    data: DemoData
    target_dir: Path
    eval_records: list[QARecord]
    target_results: EvalResults


def prepare_comparison(cfg: DemoConfig, *, eval_limit: int | None = None, log: Log = print) -> Comparison:
    """The demo's data, target (cached) and evaluation records, and the target evaluated (cached)."""
    data = load_demo_data(cfg, log)
    target = prepare_model("target", data.base.path, data.records, cfg.teacher, cfg.target,
                           data.base.tokenizer, scope=data.context.scope, log=log)
    eval_records = limit_per_role(select(data.evaluation, cfg.eval_records) + data.eval_extra, eval_limit)
    target_results = cached_evaluation(cfg, "target", target.model_dir, eval_records, None, log)
    return Comparison(data, target.model_dir, eval_records, target_results)


def run_ablation(path: Path, variants: Sequence[Variant], *, overrides: Sequence[str] = (),
                 eval_limit: int | None = None, log: Log = print) -> list[EvalResults]:
    """The target (cached), then per variant: unlearn with the shared budget, evaluate (cached)."""
    base_cfg = variant_config(path, VARIANTS[0], overrides)
    out = Path(base_cfg.output_dir)
    shared = prepare_comparison(base_cfg, eval_limit=eval_limit, log=log)
    data = shared.data
    results = [shared.target_results]
    for variant in variants:
        log(f"== ablation {variant.name}: {variant.change}")
        cfg = variant_config(path, variant, overrides)
        train = unlearning_records(cfg, variant, data.train, data.base.tokenizer, out / variant.name / "raw_text")
        model_dir = unlearn(cfg, cfg.unlearn.method, shared.target_dir, train, out / variant.name, main=True)
        results.append(cached_evaluation(cfg, variant.name, model_dir, shared.eval_records, results[0], log))
    return results


def ablation_markdown(results: Sequence[EvalResults], variants: Sequence[Variant], *, command: str,
                      steps: int) -> str:
    """The generated part of docs/ablations.md: what each variant toggles, then the measured table
    (no heading: it sits in a section of the hand-written page, see ``write_section_atomic``)."""
    rows = "\n".join(f"| {v.name} | {markdown_escape(v.change)} | {markdown_escape(' '.join(v.overrides)) or '-'} |"
                     for v in variants)
    return (
        "Each row toggles one design choice of the method relative to the demo config; all rows start\n"
        f"from the same target, train {steps} steps with the same batch and learning rate, and are\n"
        "evaluated on the same records (objectives relative to the target row). Written by\n"
        f"`scripts/ablation.py`; reproduce with:\n\n```\n{command}\n```\n\n"
        "| variant | what changes | overrides |\n|:---|:---|:---|\n" + rows + "\n\n" + markdown_table(results)
    )
