"""Which forget questions the prefilling attack gets, counted over groups of runs (e.g. seeds).

The attack's rate says how many questions a run leaks, not which: whether the same few leak at
every seed, whether the model that never learned them (the reference) is judged to leak them too,
or whether a method leaks where the target does not. Each group is ``NAME=RUN[,RUN...]``; a
cell counts, per prefill length, the group's runs whose continuation of that question was judged a
success (``2/5/3`` at k = 2, 5, 10). A repeated ``NAME=`` adds to the group, so the shell's
``NAME=dir{0,1}`` works. Only questions some run leaks are listed. With ``--declined`` a cell counts
the runs whose continuation declined the question instead (``is_refusal``), for every question probed:
a model can resist the attack by declining or by continuing with facts that are not the answer.

    .venv/bin/python scripts/prefill_by_question.py \\
        harmonia=runs/seeds_s20/us07-seed{0,1,2,3,4,5,6,7} npo=runs/seeds_s20/npo-seed{0,1,2,3,4,5,6,7} \\
        reference=runs/demo_fast/reference target=runs/demo_fast/target
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Mapping, Sequence

from harmonia.errors import DataError
from harmonia.evaluation.metrics.refusal import is_refusal
from harmonia.evaluation.results import EvalResults


def leaks(runs: Sequence[EvalResults], *, declined: bool = False) -> dict[str, Counter[str]]:
    """Per ``k=K`` setting of the runs' prefill attack, how many runs each question was judged a success
    in (``declined``: how many runs declined it, :func:`is_refusal` of the continuation)."""
    out: dict[str, Counter[str]] = {}
    for run in runs:
        attack = run.attacks.get("prefill")
        if attack is None:
            raise DataError(None, f"'{run.name}' has no prefill attack", field="attacks.prefill")
        for setting, outcomes in attack.per_example.items():
            if not setting.startswith("k="):
                continue
            ids = attack.details["example_ids"][setting]
            if declined:
                if setting not in attack.generations:
                    raise DataError(None, f"'{run.name}' kept no generations at {setting}", field="generations")
                outcomes = [float(is_refusal(text)) for text in attack.generations[setting]]
            counts = out.setdefault(setting, Counter())
            # every probed question gets an entry (0 where no run counts it): --declined lists them all
            counts.update({record_id: int(bool(hit)) for record_id, hit in zip(ids, outcomes, strict=True)})
    return out


def leak_table(groups: Mapping[str, Sequence[EvalResults]], *, declined: bool = False) -> str:
    """A markdown table: one row per question any run leaks (``declined``: per question probed), one
    ``k2/k5/...`` cell per group."""
    counted = {name: leaks(runs, declined=declined) for name, runs in groups.items()}
    settings = sorted({s for c in counted.values() for s in c}, key=lambda s: int(s[2:]))
    questions = sorted({q for c in counted.values() for s in c.values() for q in s if s[q] or declined})
    head = "/".join(s[2:] for s in settings)
    lines = ["| question | " + " | ".join(f"{name} ({len(groups[name])} runs), k = {head}" for name in groups) + " |",
             "|:---|" + "---:|" * len(groups)]
    for q in questions:
        cells = ["/".join(str(counted[name].get(s, Counter())[q]) for s in settings) for name in groups]
        lines.append(f"| {q} | " + " | ".join(cells) + " |")
    totals = ["/".join(str(sum(counted[name].get(s, Counter()).values())) for s in settings) for name in groups]
    lines.append("| all questions | " + " | ".join(totals) + " |")
    return "\n".join(lines) + "\n"


def parse_group(text: str) -> tuple[str, list[str]]:
    name, sep, paths = text.partition("=")
    if not sep or not name or not paths.strip(","):
        raise DataError(None, f"group '{text}': NAME=RUN[,RUN...]", field="groups")
    return name, [p for p in paths.split(",") if p]


def main(argv: list[str] | None = None) -> str:
    from harmonia.reports.compare import load_runs

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("groups", nargs="+", help="NAME=RUN[,RUN...]: run folders or results files")
    parser.add_argument("--declined", action="store_true",
                        help="count the runs that declined each question instead (every question probed)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    groups: dict[str, list[str]] = {}
    for text in args.groups:  # a repeated NAME adds to its group: NAME=run{0,1} expands to two arguments
        name, paths = parse_group(text)
        groups.setdefault(name, []).extend(paths)
    text = leak_table({name: load_runs(paths) for name, paths in groups.items()}, declined=args.declined)
    print(text)
    return text


if __name__ == "__main__":
    main()
