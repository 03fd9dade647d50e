"""The worst cases of a run, example by example, with what the model generated.

Aggregates hide which questions went wrong; these tables list forget questions the model still
answers, neighbour questions it refuses, and prompts on which an attack succeeded.

Where the texts are read from (all optional; a missing text shows as "not recorded"):

- for a metric entry ``metrics["<metric>/<subset>"]``: its ``details`` lists ``"generations"``,
  ``"questions"`` and ``"golds"``, else ``EvalResults.generations["<metric>/<subset>"]`` or
  ``EvalResults.generations["<subset>"]``; each aligned with the entry's ``per_example``;
- for an attack, in the per-setting layout every attack shares (:mod:`harmonia.attacks.base`):
  ``AttackEntry.generations[<setting>]``, ``details["questions"][<setting>]`` and
  ``details["golds"][<setting>]``, each aligned with ``per_example[<setting>]`` and its ids
  ``details["example_ids"][<setting>]`` (else ``example_ids``); a plain list in place of a
  per-setting dict applies to every setting.

A text list of the wrong length is a malformed results file and raises :class:`DataError`:
pairing a generation with the wrong question would make the report lie.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harmonia.errors import DataError
from harmonia.evaluation.results import EvalResults
from harmonia.reports.headline import NEIGHBOUR_SUBSETS, find_metric_key, finite_or_none, over_refusal_key

DEFAULT_LIMIT = 10
DEFAULT_THRESHOLD = 0.5
"""ROUGE-L recall at or above which an answer counts as recalled (the attacks' default threshold)."""


@dataclass(frozen=True)
class ExampleRow:
    """One example: its id, the per-example score, and the texts when the results file has them."""

    example_id: str
    score: float | None
    question: str | None = None
    gold: str | None = None
    generation: str | None = None


@dataclass(frozen=True)
class ExampleTable:
    """Up to ``limit`` worst examples of one kind; ``total`` says how many qualified in all."""

    key: str
    title: str
    score_label: str
    rows: list[ExampleRow]
    total: int


def _text_list(run: EvalResults, value: Any, n: int, field: str) -> list[str | None] | None:
    if value is None:
        return None
    strings = isinstance(value, list) and all(v is None or isinstance(v, str) for v in value)
    if not strings or len(value) != n:
        got = f"{len(value)} entries" if isinstance(value, list) else type(value).__name__
        raise DataError(None, f"expected a list of {n} strings aligned with the examples, got {got}",
                        record=f"run '{run.name}'", field=field)
    return list(value)


def _ids(run: EvalResults, ids: list[str], n: int, field: str) -> list[str]:
    if not ids:
        return [f"#{i}" for i in range(n)]  # ids are optional; positions still identify examples
    if len(ids) != n:
        raise DataError(None, f"{len(ids)} example ids for {n} per-example values",
                        record=f"run '{run.name}'", field=field)
    return ids


def _per_setting(value: Any, setting: str) -> Any:
    """``value[setting]`` when ``value`` is a per-setting dict (None without the setting), else ``value``."""
    return value.get(setting) if isinstance(value, dict) else value


def _setting_texts(run: EvalResults, details: dict[str, Any], field: str, setting: str, n: int,
                   base: str) -> list[str | None] | None:
    """An attack's ``details[field]`` for one setting (see the module docstring), checked against ``n``."""
    value = details.get(field)
    path = f"{base}.details.{field}" + (f".{setting}" if isinstance(value, dict) else "")
    return _text_list(run, _per_setting(value, setting), n, path)


def metric_rows(run: EvalResults, key: str) -> list[ExampleRow]:
    """Every example of ``metrics[key]`` with its score and texts (see the module docstring)."""
    entry = run.metrics[key]
    n = len(entry.per_example)
    ids = _ids(run, entry.example_ids, n, f"metrics.{key}.example_ids")
    subset = key.split("/", 1)[1] if "/" in key else key
    texts: dict[str, list[str | None] | None] = {}
    for name in ("generations", "questions", "golds"):
        texts[name] = _text_list(run, entry.details.get(name), n, f"metrics.{key}.details.{name}")
    if texts["generations"] is None:
        for gen_key in (key, subset):
            if gen_key in run.generations:
                texts["generations"] = _text_list(run, run.generations[gen_key], n, f"generations.{gen_key}")
                break

    def text(name: str, i: int) -> str | None:
        values = texts[name]
        return values[i] if values is not None else None

    return [
        ExampleRow(ids[i], finite_or_none(entry.per_example[i]), text("questions", i), text("golds", i),
                   text("generations", i))
        for i in range(n)
    ]


def answered_forget(run: EvalResults, *, threshold: float = DEFAULT_THRESHOLD,
                    limit: int = DEFAULT_LIMIT) -> ExampleTable | None:
    """Forget questions still answered (ROUGE-L recall >= threshold), highest recall first."""
    key = find_metric_key(run, "rougeL_recall", ("forget",))
    if key is None or not run.metrics[key].per_example:  # an aggregate alone lists no examples
        return None
    hits = [r for r in metric_rows(run, key) if r.score is not None and r.score >= threshold]
    hits.sort(key=lambda r: (-(r.score or 0.0), r.example_id))
    title = f"Forget questions still answered (ROUGE-L recall ≥ {threshold:g})"
    return ExampleTable("forget_answered", title, "ROUGE-L recall", hits[:limit], len(hits))


def refused_neighbours(run: EvalResults, *, limit: int = DEFAULT_LIMIT) -> ExampleTable | None:
    """Neighbour questions the model refuses, in input order; the score is their ROUGE-L recall.

    Texts the refusal entry lacks are taken from the neighbour ROUGE-L entry, matched by id.
    """
    key = over_refusal_key(run)
    if key is None or not run.metrics[key].per_example:
        return None
    recall_key = find_metric_key(run, "rougeL_recall", NEIGHBOUR_SUBSETS)
    recall = {r.example_id: r for r in metric_rows(run, recall_key)} if recall_key is not None else {}
    rows = []
    for r in metric_rows(run, key):
        if r.score is None or r.score < 0.5:  # per-example refusal is 1.0 (refused) or 0.0
            continue
        other = recall.get(r.example_id, ExampleRow(r.example_id, None))
        rows.append(ExampleRow(r.example_id, other.score, r.question or other.question, r.gold or other.gold,
                               r.generation if r.generation is not None else other.generation))
    return ExampleTable("neighbour_refused", "Neighbour questions refused", "ROUGE-L recall", rows[:limit],
                        len(rows))


def attack_successes(run: EvalResults, *, threshold: float = DEFAULT_THRESHOLD,
                     limit: int = DEFAULT_LIMIT) -> list[ExampleTable]:
    """For each attack, the successful prompts under its strongest setting, best first."""
    tables = []
    for name, attack in run.attacks.items():
        settings = [s for s in attack.success_rate if attack.per_example.get(s)]
        if not settings:
            continue
        setting = max(settings, key=lambda s: (finite_or_none(attack.success_rate[s]) or 0.0, s))
        values = attack.per_example[setting]
        n = len(values)
        base = f"attacks.{name}"
        setting_ids = _per_setting(attack.details.get("example_ids"), setting)
        if isinstance(setting_ids, list):
            ids = _ids(run, setting_ids, n, f"{base}.details.example_ids.{setting}")
        else:
            ids = _ids(run, attack.example_ids, n, f"{base}.example_ids")
        generations = _text_list(run, attack.generations.get(setting), n, f"{base}.generations.{setting}")
        questions = _setting_texts(run, attack.details, "questions", setting, n, base)
        golds = _setting_texts(run, attack.details, "golds", setting, n, base)
        hits = [
            ExampleRow(ids[i], v, questions[i] if questions else None, golds[i] if golds else None,
                       generations[i] if generations else None)
            for i, v in enumerate(map(finite_or_none, values))
            if v is not None and v >= threshold
        ]
        hits.sort(key=lambda r: (-(r.score or 0.0), r.example_id))
        tables.append(ExampleTable(f"attack_{name}", f"Attack '{name}' succeeded ({setting})", "score",
                                   hits[:limit], len(hits)))
    return tables


def worst_cases(run: EvalResults, *, limit: int = DEFAULT_LIMIT,
                threshold: float = DEFAULT_THRESHOLD) -> list[ExampleTable]:
    """All worst-case tables of a run that its results file has data for."""
    tables = [answered_forget(run, threshold=threshold, limit=limit), refused_neighbours(run, limit=limit)]
    return [t for t in tables if t is not None] + attack_successes(run, threshold=threshold, limit=limit)


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis (for compact markdown cells)."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)].rstrip() + "…"

