"""Evaluate one model on QA/MCQ records: metrics by role, attacks, objectives -> ``results.json``.

:func:`evaluate` is what ``harmonia eval`` runs. Records are split by kind:

- QA records (no ``choices``) -> the ``qa``, ``probability``, ``truth_ratio`` and ``knowmem``
  groups (KnowMem only on records with ``metadata["subset"] == "knowmem"``), and the attacks;
- VerbMem records (``metadata["subset"] == "verbmem"``: "continue this passage") -> ``verbmem``
  only, since their chat-QA scores would mean nothing new;
- MCQ records (with ``choices``) -> ``mcq`` and the ``mcq_prefill`` attack;
- texts named in ``privacy`` -> ``mia`` and ``perplexity``.

Metric keys are ``"{metric}/{role}"``. Generations are kept under ``"{kind}/{role}"`` aligned
with the matching metric entries' ``example_ids``. Evaluation is greedy and batched; its numbers
do not depend on the batch sizes (tested).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from harmonia.attacks.base import AttackSettings, get_attack
from harmonia.data.readers import read_json
from harmonia.data.schema import ROLES, QARecord
from harmonia.errors import ConfigError, DataError
from harmonia.evaluation.backends import VLLMGenerator, choose_backend, generating_with
from harmonia.evaluation.config import EvalConfig, SubsetSettings
from harmonia.evaluation.lm_eval_backend import require_lm_eval, run_lm_eval
from harmonia.evaluation.multiple_choice import mcq_metrics
from harmonia.evaluation.objectives import compute_objectives
from harmonia.evaluation.privacy import MIA_METRICS, mia_metrics, read_texts
from harmonia.evaluation.results import AttackEntry, EvalResults, MetricEntry
from harmonia.evaluation.scoring import (
    by_role,
    generate_answers,
    knowmem_metrics,
    probability_metrics,
    qa_metrics,
    text_perplexity,
    to_entry,
    verbmem_metrics,
)
from harmonia.evaluation.sharding import across_processes
from harmonia.models import LoadedModel, load_model

RESULTS_FILE = "results.json"


def select_subsets(records: Sequence[QARecord], subsets: SubsetSettings) -> list[QARecord]:
    """At most ``max_qa[role]`` QA and ``max_mcq[role]`` MCQ records per role (seeded sample, input order)."""
    keep: set[int] = set()
    rng = random.Random(subsets.seed)
    for role in ROLES:
        for is_mcq, limits in ((False, subsets.max_qa), (True, subsets.max_mcq)):
            idx = [i for i, r in enumerate(records) if r.role == role and r.is_mcq == is_mcq]
            limit = limits.get(role)
            keep.update(idx if limit is None or len(idx) <= limit else rng.sample(idx, limit))
    return [r for i, r in enumerate(records) if i in keep]


def is_verbmem(record: QARecord) -> bool:
    return not record.is_mcq and record.metadata.get("subset") == "verbmem"


def read_shots(path: Path) -> list[tuple[str, str]]:
    """Few-shot (question, answer) pairs from a JSON list of {question, answer} (MUSE ``*_icl.json``)."""
    rows = read_json(path)
    if not isinstance(rows, list):
        raise DataError(path, "expected a JSON list of {question, answer} objects")
    shots = []
    for i, row in enumerate(rows):
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("question"), str)
            or not isinstance(row.get("answer"), str)
        ):
            raise DataError(
                path, "expected an object with string 'question' and 'answer'", record=f"index {i}"
            )
        shots.append((row["question"], row["answer"]))
    return shots


def _generations_by_role(
    prefix: str, records: Sequence[QARecord], gens: Sequence[str]
) -> dict[str, list[str]]:
    return {f"{prefix}/{role}": [gens[i] for i in idx] for role, idx in by_role(records).items()}


def _load_results(value: EvalResults | str | Path | None) -> EvalResults | None:
    if value is None or isinstance(value, EvalResults):
        return value
    return EvalResults.load(value)


def privleak_references(cfg: EvalConfig) -> dict[str, float]:
    """Retrained-model AUC per MIA attack: ``privacy.reference_auc``, else ``reference_results``."""
    refs: dict[str, float] = {}
    if cfg.privacy.reference_results is not None:
        ref = EvalResults.load(cfg.privacy.reference_results)
        for name in MIA_METRICS:
            value = ref.value(f"{name}/forget_holdout")
            if value is not None:
                refs[name] = value
    refs.update(cfg.privacy.reference_auc)
    return refs


class _Run:
    """One evaluation in progress: what has been measured, generated and skipped (and why)."""

    def __init__(self, model: Any, tokenizer: Any, cfg: EvalConfig, log: Callable[[str], Any]) -> None:
        self.model, self.tokenizer, self.cfg, self.log = model, tokenizer, cfg, log
        self.metrics: dict[str, MetricEntry] = {}
        self.generations: dict[str, list[str]] = {}
        self.skipped: dict[str, str] = {}

    def wants(self, group: str) -> bool:
        return group in self.cfg.metrics

    def skip(self, group: str, reason: str) -> None:
        self.skipped[group] = reason
        self.log(f"skipped {group}: {reason}")

    def qa(self, qa: list[QARecord]) -> None:
        cfg = self.cfg
        if not qa:
            return self.skip("qa", "no QA records")
        gens = generate_answers(
            self.model,
            self.tokenizer,
            qa,
            system=cfg.system,
            max_new_tokens=cfg.generation.max_new_tokens,
            batch_size=cfg.generation.batch_size,
            stop=cfg.generation.stop,
            progress=cfg.progress,
        )
        self.metrics.update(qa_metrics(qa, gens, use_stemmer=cfg.use_stemmer))
        self.generations.update(_generations_by_role("qa", qa, gens))

    def probability(self, qa: list[QARecord]) -> None:
        if not qa:
            for group in ("probability", "truth_ratio"):
                if self.wants(group):
                    self.skip(group, "no QA records")
            return
        found = probability_metrics(
            self.model,
            self.tokenizer,
            qa,
            system=self.cfg.system,
            batch_size=self.cfg.scoring_batch_size,
            max_length=self.cfg.max_length,
            truth_ratio=self.wants("truth_ratio"),
            progress=self.cfg.progress,
        )
        for key, entry in found.items():
            group = "truth_ratio" if key.startswith("truth_ratio/") else "probability"
            if self.wants(group):
                self.metrics[key] = entry
        if self.wants("truth_ratio") and not any(k.startswith("truth_ratio/") for k in found):
            self.skip("truth_ratio", "no QA record has metadata paraphrased_answer and perturbed_answer")

    def knowmem(self, qa: list[QARecord]) -> None:
        records = [r for r in qa if r.metadata.get("subset") == "knowmem"]
        if not records:
            return self.skip("knowmem", "no record with metadata subset 'knowmem'")
        cfg = self.cfg.knowmem
        shots = read_shots(cfg.icl_file) if cfg.icl_file is not None else []
        found, gens = knowmem_metrics(
            self.model,
            self.tokenizer,
            records,
            shots=shots,
            max_new_tokens=cfg.max_new_tokens,
            batch_size=self.cfg.generation.batch_size,
            use_stemmer=cfg.use_stemmer,
            progress=self.cfg.progress,
        )
        for entry in found.values():
            entry.details["shots"] = len(shots)
        self.metrics.update(found)
        self.generations.update(_generations_by_role("knowmem", records, gens))

    def verbmem(self, records: list[QARecord]) -> None:
        if not records:
            return self.skip("verbmem", "no record with metadata subset 'verbmem'")
        found, gens = verbmem_metrics(
            self.model,
            self.tokenizer,
            records,
            max_new_tokens=self.cfg.verbmem.max_new_tokens,
            batch_size=self.cfg.generation.batch_size,
            use_stemmer=self.cfg.verbmem.use_stemmer,
            progress=self.cfg.progress,
        )
        self.metrics.update(found)
        self.generations.update(_generations_by_role("verbmem", records, gens))

    def mcq(self, records: list[QARecord]) -> None:
        cfg = self.cfg
        if cfg.mcq.backend == "lm_eval":
            self.metrics.update(
                run_lm_eval(
                    self.model,
                    self.tokenizer,
                    cfg.mcq.lm_eval_tasks,
                    batch_size=cfg.scoring_batch_size,
                    limit=cfg.mcq.lm_eval_limit,
                )
            )
            if records:
                self.log(
                    f"mcq.backend lm_eval: {len(records)} MCQ records passed in are not scored "
                    "(lm-eval uses its own task data)"
                )
            return None
        if not records:
            return self.skip("mcq", "no multiple-choice records")
        self.metrics.update(
            mcq_metrics(
                self.model,
                self.tokenizer,
                records,
                batch_size=cfg.scoring_batch_size,
                max_length=cfg.max_length,
                progress=cfg.progress,
            )
        )
        return None

    def perplexity(self) -> None:
        path = self.cfg.privacy.retain_texts
        if path is None:
            return self.skip("perplexity", "privacy.retain_texts is not set")
        texts = read_texts(path)
        result = text_perplexity(
            self.model,
            self.tokenizer,
            texts,
            max_tokens=self.cfg.privacy.max_tokens,
            batch_size=self.cfg.scoring_batch_size,
            progress=self.cfg.progress,
        )
        entry = to_entry(result, [f"retain_text/{i}" for i in range(len(texts))])
        entry.details["file"] = str(path)
        self.metrics["perplexity/retain_text"] = entry

    def mia(self) -> None:
        p = self.cfg.privacy
        if p.forget_texts is None or p.holdout_texts is None:
            return self.skip("mia", "privacy.forget_texts and privacy.holdout_texts are not set")
        self.metrics.update(
            mia_metrics(
                self.model,
                self.tokenizer,
                read_texts(p.forget_texts),
                read_texts(p.holdout_texts),
                k=p.min_k,
                max_tokens=p.max_tokens,
                batch_size=self.cfg.scoring_batch_size,
                reference_auc=privleak_references(self.cfg),
                progress=self.cfg.progress,
            )
        )
        return None


def attack_settings(cfg: EvalConfig) -> AttackSettings:
    return AttackSettings(
        system=cfg.system,
        max_new_tokens=cfg.generation.max_new_tokens,
        batch_size=cfg.generation.batch_size,
        scoring_batch_size=cfg.scoring_batch_size,
        stop=tuple(cfg.generation.stop),
        threshold=cfg.success_threshold,
        use_stemmer=cfg.use_stemmer,
        progress=cfg.progress,
    )


def run_attacks(
    model: Any,
    tokenizer: Any,
    records: Sequence[QARecord],
    cfg: EvalConfig,
    log: Callable[[str], Any] = lambda _: None,
) -> dict[str, AttackEntry]:
    """Every attack switched on in ``cfg.attacks``, on the (QA and MCQ) records."""
    out: dict[str, AttackEntry] = {}
    settings = attack_settings(cfg)
    for name, params in cfg.attacks.enabled().items():
        entry = get_attack(name)(params).run(model, tokenizer, records, settings)
        if "skipped" in entry.details:
            log(f"attack {name} skipped: {entry.details['skipped']}")
        out[name] = entry
    return out


def evaluate(
    model: str | LoadedModel,
    records: Sequence[QARecord],
    cfg: EvalConfig | None = None,
    *,
    name: str,
    reference: EvalResults | str | Path | None = None,
    out: str | Path | None = None,
    log: Callable[[str], Any] = lambda _: None,
) -> EvalResults:
    """Run the configured metrics and attacks on ``records``; fill the objectives; save if ``out`` is given.

    ``reference`` is the target model's results (object or results.json path; default
    ``cfg.objectives.target_results``): relative objectives divide by its scores. ``out`` is a
    folder (``results.json`` is written inside) or a ``.json`` path; the write is atomic.

    Under ``accelerate launch`` the per-example work is split over the processes and gathered
    back in order (:mod:`harmonia.evaluation.sharding`): every process returns the same results,
    equal to a one-process run, and only the main process logs and writes ``results.json``.
    """
    cfg = cfg or EvalConfig()
    if cfg.mcq.backend == "lm_eval":
        require_lm_eval()  # fail before any model time is spent
    state = eval_processes()
    main = state.is_main_process
    choice = choose_backend(cfg.generation.backend, required=cfg.generation.require_backend,
                            processes=state.num_processes)
    if not main:
        # every process computes the same results; one of them talks and shows progress
        log = _silent
        cfg = cfg.model_copy(update={"progress": False})
    if state.num_processes > 1 and cfg.mcq.backend == "lm_eval" and "mcq" in cfg.metrics:
        log("mcq.backend lm_eval is not sharded: every process runs the lm-eval tasks in full")
    started = time.perf_counter()
    loaded = model if isinstance(model, LoadedModel) else load_model(model, device=str(state.device))
    net = loaded.model
    net.eval()
    torch.manual_seed(cfg.seed)
    with contextlib.ExitStack() as stack:
        stack.enter_context(across_processes(state.process_index, state.num_processes))
        if choice.name == "vllm":
            stack.enter_context(generating_with(net, vllm_generator(loaded, cfg)))
        results = _evaluate_loaded(loaded, records, cfg, name=name, reference=reference, log=log)
    results.meta["generation_backend"] = {"name": choice.name, "requested": cfg.generation.backend,
                                          "reason": choice.reason}
    results.meta["processes"] = state.num_processes
    results.meta["seconds"] = time.perf_counter() - started
    if out is not None and main:
        path = Path(out)
        results.save(path if path.suffix == ".json" else path / RESULTS_FILE)
    return results


def _silent(_: str) -> None:
    return None


def eval_processes() -> Any:
    """accelerate's process state: one process, or the ones ``accelerate launch`` started.

    On a CPU-only machine accelerate must be told so, or a multi-process launch falls back to
    independent single processes instead of a gloo process group (as in the training engine).
    """
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def vllm_generator(loaded: LoadedModel, cfg: EvalConfig) -> VLLMGenerator:
    """A vLLM engine on the evaluated model's folder, in the HF model's dtype."""
    if (Path(loaded.path) / "adapter_config.json").is_file():
        raise ConfigError(f"generation.backend vllm needs a full model folder, got the adapter {loaded.path}; "
                          "save the run merged (train.save: merged) or use backend hf")
    dtype = str(next(loaded.model.parameters()).dtype).removeprefix("torch.")
    return VLLMGenerator(loaded.path, loaded.tokenizer, dtype=dtype, seed=cfg.seed,
                         gpu_memory_utilization=cfg.generation.vllm_gpu_memory_utilization)


def _evaluate_loaded(
    loaded: LoadedModel,
    records: Sequence[QARecord],
    cfg: EvalConfig,
    *,
    name: str,
    reference: EvalResults | str | Path | None,
    log: Callable[[str], Any],
) -> EvalResults:
    net, tokenizer = loaded.model, loaded.tokenizer
    chosen = select_subsets(records, cfg.subsets)
    qa = [r for r in chosen if not r.is_mcq and not is_verbmem(r)]
    verb = [r for r in chosen if is_verbmem(r)]
    mcq_records = [r for r in chosen if r.is_mcq]

    run = _Run(net, tokenizer, cfg, log)
    if run.wants("qa"):
        run.qa(qa)
    if run.wants("probability") or run.wants("truth_ratio"):
        run.probability(qa)
    if run.wants("knowmem"):
        run.knowmem(qa)
    if run.wants("verbmem"):
        run.verbmem(verb)
    if run.wants("mcq"):
        run.mcq(mcq_records)
    if run.wants("perplexity"):
        run.perplexity()
    if run.wants("mia"):
        run.mia()
    attacks = run_attacks(net, tokenizer, [*qa, *mcq_records], cfg, log)

    target = _load_results(reference if reference is not None else cfg.objectives.target_results)
    objectives, explain = compute_objectives(
        run.metrics, attacks, settings=cfg.objectives, target=target, mcq_chance=cfg.mcq.chance
    )
    results = EvalResults(
        name=name,
        model=loaded.spec,
        metrics=run.metrics,
        attacks=attacks,
        objectives=objectives,
        generations=run.generations,
        meta={
            "model_path": loaded.path,
            "config": cfg.model_dump(mode="json"),
            "skipped": run.skipped,
            "objectives": explain,
            "target": target.name if target is not None else None,
            "records": {
                "qa": _role_counts(qa),
                "verbmem": _role_counts(verb),
                "mcq": _role_counts(mcq_records),
            },
            "versions": _versions(),
        },
    )
    return results


def _role_counts(records: Sequence[QARecord]) -> dict[str, int]:
    return {role: len(idx) for role, idx in by_role(records).items()}


def _versions() -> dict[str, str]:
    out = {}
    for package in ("harmonia", "torch", "transformers", "peft"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out
