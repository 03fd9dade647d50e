"""Reports: tables, figures, markdown/HTML and compare, on hand-built results with known numbers."""

from __future__ import annotations

import base64
import json
import math
from html.parser import HTMLParser
from pathlib import Path

import pytest
from matplotlib.collections import PathCollection
from matplotlib.patches import Polygon, Rectangle
from rich.console import Console

from harmonia.errors import ConfigError, DataError
from harmonia.evaluation.results import AttackEntry, EvalResults, MetricEntry, Objectives
from harmonia.reports import compare_runs, load_runs, markdown_table, rich_table, write_report
from harmonia.reports.examples import answered_forget, refused_neighbours, worst_cases
from harmonia.reports.headline import (
    benchmark_accuracy,
    format_value,
    headline_columns,
    prefill_opener_rates,
    unique_names,
)
from harmonia.reports.html import render_html
from harmonia.reports.plots import (
    figure_bytes,
    metric_bars_plot,
    pareto_front,
    pareto_plot,
    prefill_plot,
    radar_plot,
    save_figure,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _metric(value: float, per_example: list[float] | None = None, ids: list[str] | None = None,
            **details: object) -> MetricEntry:
    per_example = per_example or []
    return MetricEntry(value=value, n_used=len(per_example) or 10, per_example=per_example,
                       example_ids=ids or [], details=dict(details))


def alpha() -> EvalResults:
    """A full run. Forget recalls 0.0/0.25/0.75/1.0 -> two still answered (>= 0.5)."""
    return EvalResults(
        name="alpha", model="models/alpha",
        metrics={
            "rougeL_recall/forget": _metric(0.5, [0.0, 0.25, 0.75, 1.0], ["f0", "f1", "f2", "f3"],
                                            questions=["q0", "q1", "q2", "q3"],
                                            golds=["g0", "g1", "g2", "g3"],
                                            generations=["", "a1", "a2", "<script>alert(1)</script>"]),
            "rougeL_recall/neighbor": _metric(0.8, [1.0, 0.0, 0.9, 0.7], ["n0", "n1", "n2", "n3"],
                                              questions=["nq0", "nq1", "nq2", "nq3"]),
            "over_refusal/neighbor": _metric(0.25, [0.0, 1.0, 0.0, 0.0], ["n0", "n1", "n2", "n3"]),
            "rougeL_recall/retain": _metric(0.9),
            "mcq_acc/mmlu": _metric(0.45),
            "mcq_acc/wmdp_cyber": _metric(0.3),
        },
        attacks={
            "prefill": AttackEntry(success_rate={"k=1": 0.1, "k=5": 0.4, "opener=Sure, here is": 0.5}),
            "jailbreak": AttackEntry(success_rate={"dan": 0.3, "aim": 0.05}),
            "relearn": AttackEntry(success_rate={"steps=0": 0.7, "steps=10": 0.6, "steps=5": 0.65}),
        },
        objectives=Objectives(forget_efficacy=0.9, neighbour_retention=0.8, utility=0.7,
                              attack_resistance=0.6, combined=0.74),
        generations={"neighbor": ["yes", "I'm sorry, I can't answer that.", "yes", "yes"]},
    )


def beta() -> EvalResults:
    return EvalResults(
        name="beta", model="models/beta",
        metrics={"rougeL_recall/forget": _metric(0.0625), "rougeL_recall/neighbour": _metric(0.4),
                 "over_refusal/neighbor": _metric(0.5), "rougeL_recall/retain": _metric(0.55),
                 "mcq_acc/mmlu": _metric(0.3333)},
        attacks={"prefill": AttackEntry(success_rate={"k=1": 0.0, "k=10": 0.2})},
        objectives=Objectives(forget_efficacy=1.0, neighbour_retention=0.4, utility=0.5,
                              attack_resistance=0.8, combined=0.6),
    )


def gamma() -> EvalResults:
    """A partial results file: one metric and one objective."""
    return EvalResults(name="gamma", model="models/gamma", metrics={"rougeL_recall/forget": _metric(0.5)},
                       objectives=Objectives(forget_efficacy=0.4))


def empty() -> EvalResults:
    return EvalResults(name="empty", model="models/empty")


def runs() -> list[EvalResults]:
    return [alpha(), beta(), gamma()]


def _row(table: str, name: str) -> list[str]:
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == name:
            return cells[1:]
    raise AssertionError(f"no row for {name}")


# ---------------------------------------------------------------- tables

def test_format_value_three_decimals_and_dash() -> None:
    assert format_value(0.12345) == "0.123"
    assert format_value(1.0) == "1.000"
    assert format_value(None) == "–"
    assert format_value(math.nan) == "–"
    assert format_value(math.inf) == "–"


def test_markdown_table_exact_numbers() -> None:
    table = markdown_table(runs())
    header = [c.strip() for c in table.splitlines()[0].strip("|").split("|")]
    assert header == ["run", "forget ROUGE-L ↓", "neighbour ROUGE-L ↑", "over-refusal ↓", "retain ROUGE-L ↑",
                      "MMLU acc ↑", "WMDP acc ↓", "prefill k=1 ↓", "prefill k=5 ↓", "prefill k=10 ↓",
                      "prefill worst ↓", "jailbreak ASR ↓", "relearn recovery ↓", "forget efficacy ↑",
                      "neighbour retention ↑", "utility ↑", "attack resistance ↑", "combined ↑"]
    # prefill worst includes the opener (0.5 > k=5's 0.4); jailbreak takes the strongest template;
    # relearn the rate after the most steps (0.6 at steps=10), not the model before relearning (0.7).
    assert _row(table, "alpha") == ["0.500", "0.800", "0.250", "0.900", "0.450", "0.300", "0.100", "0.400",
                                    "–", "0.500", "0.300", "0.600", "0.900", "0.800", "0.700", "0.600",
                                    "0.740"]
    # "neighbour" spelling accepted; absent WMDP, jailbreak and relearn show a dash.
    assert _row(table, "beta") == ["0.062", "0.400", "0.500", "0.550", "0.333", "–", "0.000", "–", "0.200",
                                   "0.200", "–", "–", "1.000", "0.400", "0.500", "0.800", "0.600"]


def test_forget_fluency_column_appears_when_a_run_measured_it() -> None:
    fluent = beta().model_copy(deep=True)
    fluent.metrics["ngram_entropy/forget"] = _metric(1.25)
    table = markdown_table([alpha(), fluent])
    header = [c.strip() for c in table.splitlines()[0].strip("|").split("|")]
    assert header.index("forget fluency ↑") == header.index("MMLU acc ↑") + 1
    assert _row(table, "beta")[5] == "1.250" and _row(table, "alpha")[5] == "–"
    assert "forget fluency" not in markdown_table(runs())


def test_partial_results_show_dashes() -> None:
    cells = _row(markdown_table(runs()), "gamma")
    assert cells[0] == "0.500"
    assert cells[12] == "0.400"  # forget efficacy
    assert [c for i, c in enumerate(cells) if i not in (0, 12)] == ["–"] * (len(cells) - 2)
    only_empty = markdown_table([empty()])
    assert set(_row(only_empty, "empty")) == {"–"}


def test_wmdp_column_only_when_present() -> None:
    assert "WMDP" not in markdown_table([beta(), gamma()])
    assert "WMDP" in markdown_table([alpha(), gamma()])
    assert [c.key for c in headline_columns([gamma()]) if c.key.startswith("prefill_k")] == []


def test_benchmark_accuracy_pools_parts_by_count() -> None:
    run = EvalResults(name="r", model="m", metrics={
        "mcq_acc/mmlu_a": MetricEntry(value=0.5, n_used=10),
        "mcq_acc/mmlu_b": MetricEntry(value=1.0, n_used=30),
        "mcq_acc/mmlupro": MetricEntry(value=0.0, n_used=100)})  # not a part of mmlu: no separator
    assert benchmark_accuracy(run, "mmlu") == pytest.approx(0.875)
    run.metrics["mcq_acc/mmlu"] = MetricEntry(value=0.6, n_used=40)
    assert benchmark_accuracy(run, "mmlu") == pytest.approx(0.6)
    assert benchmark_accuracy(run, "wmdp") is None


def test_markdown_escapes_pipes_in_names() -> None:
    run = gamma().model_copy(update={"name": "a|b"})
    assert "| a\\|b | 0.500 |" in markdown_table([run])


def test_rich_table_prints_numbers_and_literal_names() -> None:
    named = beta().model_copy(update={"name": "npo [run_a]"})
    console = Console(record=True, width=400)
    console.print(rich_table([alpha(), named, gamma()]))
    text = console.export_text()
    assert "npo [run_a]" in text
    assert "0.740" in text and "0.062" in text and "–" in text


def test_unique_names() -> None:
    assert unique_names(["a", "b", "a"]) == ["a #1", "b", "a #2"]
    assert unique_names(["a", "b", "a"], ["x", "y", "z"]) == ["a [x]", "b", "a [z]"]
    assert unique_names(["a", "a"], ["x", "x"]) == ["a [x] #1", "a [x] #2"]
    assert unique_names(["a", "b"], ["x", "y"]) == ["a", "b"]


# ---------------------------------------------------------------- worst cases

def test_answered_forget_lists_recalled_questions_best_first() -> None:
    table = answered_forget(alpha())
    assert table is not None and table.total == 2
    assert [(r.example_id, r.score, r.question, r.gold) for r in table.rows] == [
        ("f3", 1.0, "q3", "g3"), ("f2", 0.75, "q2", "g2")]
    assert table.rows[1].generation == "a2"
    assert answered_forget(alpha(), threshold=0.2).total == 3
    assert len(answered_forget(alpha(), threshold=0.2, limit=1).rows) == 1
    assert answered_forget(empty()) is None
    assert worst_cases(gamma()) == []  # aggregates without per-example values list nothing


def test_refused_neighbours_with_generation_and_recall() -> None:
    table = refused_neighbours(alpha())
    assert table is not None and table.total == 1
    (row,) = table.rows
    # Question comes from the neighbour ROUGE entry, the generation from generations["neighbor"].
    assert (row.example_id, row.score, row.question) == ("n1", 0.0, "nq1")
    assert row.generation == "I'm sorry, I can't answer that."


def test_misaligned_generations_raise_naming_field() -> None:
    run = alpha()
    run.generations["neighbor"] = ["only one"]
    with pytest.raises(DataError, match=r"field 'generations\.neighbor'") as info:
        worst_cases(run)
    assert "alpha" in str(info.value)


def test_attack_successes_use_strongest_setting() -> None:
    run = alpha()
    run.attacks["prefill"] = AttackEntry(success_rate={"k=1": 0.5, "k=5": 1.0},
                                         per_example={"k=1": [1.0, 0.0], "k=5": [1.0, 1.0]},
                                         example_ids=["f0", "f1"], generations={"k=5": ["leak0", "leak1"]})
    tables = {t.key: t for t in worst_cases(run)}
    prefill = tables["attack_prefill"]
    assert "k=5" in prefill.title
    assert [(r.example_id, r.generation) for r in prefill.rows] == [("f0", "leak0"), ("f1", "leak1")]


def test_attack_successes_read_the_per_setting_layout() -> None:
    # Like the paraphrase attack: a setting probes only some records, one of them twice, and the
    # asked questions sit per setting, aligned with details["example_ids"][setting].
    run = alpha()
    run.attacks["paraphrase"] = AttackEntry(
        success_rate={"paraphrased_question": 2 / 3}, per_example={"paraphrased_question": [1.0, 0.0, 1.0]},
        example_ids=["f0", "f1", "f2"], generations={"paraphrased_question": ["leak0", "held", "leak0b"]},
        details={"example_ids": {"paraphrased_question": ["f0", "f2", "f0"]},
                 "questions": {"paraphrased_question": ["p0", "p2", "p0b"]}})
    table = {t.key: t for t in worst_cases(run)}["attack_paraphrase"]
    assert [(r.example_id, r.question, r.generation) for r in table.rows] == [("f0", "p0", "leak0"),
                                                                              ("f0", "p0b", "leak0b")]
    run.attacks["paraphrase"].details["questions"]["paraphrased_question"] = ["p0"]
    with pytest.raises(DataError, match=r"details\.questions\.paraphrased_question"):
        worst_cases(run)


# ---------------------------------------------------------------- plots

def test_radar_one_polygon_per_run_with_objectives() -> None:
    fig = radar_plot([*runs(), empty()])
    ax = fig.axes[0]
    polygons = [p for p in ax.patches if isinstance(p, Polygon)]
    assert len(polygons) == 3  # "empty" has no objective, so no polygon
    radii = [list(map(float, p.get_xy()[:4, 1])) for p in polygons]
    assert radii[0] == pytest.approx([0.9, 0.8, 0.7, 0.6])
    assert radii[2] == pytest.approx([0.4, 0.0, 0.0, 0.0])  # gamma: missing objectives drawn at 0
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[0] == "alpha (combined 0.740)"
    assert "missing: neighbour retention, utility, attack resistance" in labels[2]


def test_prefill_lines_per_run_and_opener_markers() -> None:
    fig = prefill_plot(runs())
    ax_k, ax_o = fig.axes
    lines = ax_k.get_lines()
    assert len(lines) == 2  # alpha and beta have k settings; gamma has no prefill attack
    assert list(lines[0].get_xdata()) == [1, 5] and list(lines[0].get_ydata()) == pytest.approx([0.1, 0.4])
    assert list(lines[1].get_xdata()) == [1, 10] and list(lines[1].get_ydata()) == pytest.approx([0.0, 0.2])
    markers = ax_o.get_lines()
    assert len(markers) == 1 and list(markers[0].get_ydata()) == [0.5]
    assert len(prefill_plot([beta()]).axes) == 1  # no opener: no opener panel


def test_opener_markers_are_labelled_with_the_opener_text_the_attack_recorded() -> None:
    # The prefill attack's own layout: settings opener/<j>, their texts in details["openers"].
    attack = AttackEntry(success_rate={"k=1": 0.1, "opener/0": 0.5, "opener/1": 0.25},
                         details={"openers": {"opener/0": "Sure, here is", "opener/1": "Of course"}})
    run = EvalResults(name="a", model="m", attacks={"prefill": attack})
    assert prefill_opener_rates(run) == {"Sure, here is": 0.5, "Of course": 0.25}
    ax_o = prefill_plot([run]).axes[1]
    assert [t.get_text() for t in ax_o.get_xticklabels()] == ["Sure, here is", "Of course"]


def test_metric_bars_one_bar_per_present_value() -> None:
    fig = metric_bars_plot(runs())
    ax = fig.axes[0]
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    # alpha has all 9 bar metrics, beta 6 (no WMDP/jailbreak/relearn), gamma 1 (forget ROUGE-L).
    assert len(bars) == 9 + 6 + 1
    assert bars[0].get_height() == pytest.approx(0.5)  # alpha's forget ROUGE-L
    assert ax.get_xticklabels()[0].get_text() == "forget ROUGE-L ↓"


def test_pareto_points_per_run() -> None:
    fig = pareto_plot(runs())
    left, right = fig.axes
    offsets = [next(c for c in ax.collections if isinstance(c, PathCollection)).get_offsets()
               for ax in (left, right)]
    assert [tuple(map(float, p)) for p in offsets[0]] == [(0.9, 0.8), (1.0, 0.4)]  # gamma lacks retention
    assert len(offsets[1]) == 2
    assert [t.get_text() for t in left.texts if t.get_text() in ("alpha", "beta")] == ["alpha", "beta"]
    assert "gamma" in left.get_title(loc="left")


def test_pareto_front() -> None:
    points = [(0.0, 1.0), (0.5, 0.5), (0.4, 0.4), (1.0, 0.0), (0.5, 0.5)]
    assert pareto_front(points) == [0, 1, 4, 3]  # (0.4, 0.4) is beaten by (0.5, 0.5); equal points both stay


def test_figures_are_deterministic_and_saved(tmp_path: Path) -> None:
    assert figure_bytes(radar_plot(runs()), "png") == figure_bytes(radar_plot(runs()), "png")
    svg = figure_bytes(pareto_plot(runs()), "svg")
    assert svg == figure_bytes(pareto_plot(runs()), "svg")
    assert b"<dc:date>" not in svg
    assert save_figure(prefill_plot(runs()), tmp_path / "p.png").read_bytes().startswith(PNG_MAGIC)
    assert b"<svg" in save_figure(prefill_plot(runs()), tmp_path / "p.svg").read_bytes()
    with pytest.raises(ConfigError, match="pdf"):
        save_figure(radar_plot(runs()), tmp_path / "p.pdf")


# ---------------------------------------------------------------- reports

class _Resources(HTMLParser):
    """Collects every src/href attribute and the tags used."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.refs += [(tag, k, v or "") for k, v in attrs if k in ("src", "href", "srcset", "data")]


def test_html_is_self_contained_and_names_every_run() -> None:
    page = render_html(runs(), {"radar": figure_bytes(radar_plot(runs()))})
    parser = _Resources()
    parser.feed(page)
    assert not {"script", "link", "iframe", "object"} & parser.tags
    assert parser.refs, "expected the figure as an <img src>"
    for tag, _attr, value in parser.refs:
        assert tag == "img" and value.startswith("data:image/png;base64,")
        assert base64.b64decode(value.split(",", 1)[1]).startswith(PNG_MAGIC)
    assert "http://" not in page and "https://" not in page and "url(" not in page and "@import" not in page
    for name in ("alpha", "beta", "gamma"):
        assert f">{name}</td>" in page
    # Generations are escaped, never markup.
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<details>" in page and "I&#x27;m sorry, I can&#x27;t answer that." in page


def test_write_report(tmp_path: Path) -> None:
    out = tmp_path / "report"
    paths = write_report([alpha(), alpha(), gamma()], out)
    assert sorted(p.name for p in out.iterdir()) == ["figures", "report.html", "report.md"]  # no temp files
    assert set(paths.figures) == {"radar", "prefill", "metrics", "pareto"}
    markdown = paths.markdown.read_text(encoding="utf-8")
    for key, path in paths.figures.items():
        assert f"![{key}](figures/{key}.png)" in markdown
        assert path.read_bytes().startswith(PNG_MAGIC)
    assert "| alpha #1 | 0.500 |" in markdown and "| alpha #2 | 0.500 |" in markdown
    assert "#### Forget questions still answered (ROUGE-L recall ≥ 0.5): 2" in markdown
    page = paths.html.read_text(encoding="utf-8")
    assert page.count("<img src=\"data:image/png;base64,") == 4
    assert "alpha #1" in page and "gamma" in page
    with pytest.raises(DataError, match="no results"):
        write_report([], tmp_path / "none")


# ---------------------------------------------------------------- compare

def test_cli_compare_prints_the_table_and_writes_the_report(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from harmonia.cli.main import app

    alpha().save(tmp_path / "run1" / "results.json")
    beta().save(tmp_path / "beta.json")
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "run1"), str(tmp_path / "beta.json"),
                                      "-o", str(tmp_path / "report")], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "alpha" in result.output and "beta" in result.output
    page = (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
    assert "harmonia comparison" in page and page.count('<img src="data:image/png;base64,') == 4


def test_compare_runs_from_dirs_and_files(tmp_path: Path) -> None:
    alpha().save(tmp_path / "run1" / "results.json")
    other = alpha().model_copy(update={"objectives": Objectives(combined=0.1)})
    other.save(tmp_path / "run2" / "results.json")
    beta().save(tmp_path / "beta.json")
    paths = [tmp_path / "run1", tmp_path / "run2" / "results.json", tmp_path / "beta.json"]
    table, figures = compare_runs(paths)
    assert set(figures) == {"radar", "prefill", "metrics", "pareto"}
    console = Console(record=True, width=400)
    console.print(table)
    text = console.export_text()
    assert "alpha [run1]" in text and "alpha [run2]" in text and "beta" in text
    assert [r.name for r in load_runs([tmp_path / "run1", tmp_path / "beta.json"])] == ["alpha", "beta"]


@pytest.mark.parametrize("content, message", [
    ("{not json", "Invalid JSON"),
    (json.dumps({"name": "x"}), "Field required"),
    (json.dumps({"name": "x", "model": "m", "metrics": {"a/b": {"value": "high", "n_used": 1}}}),
     r"field 'metrics\.a/b\.value'"),
])
def test_bad_results_file_names_the_file(tmp_path: Path, content: str, message: str) -> None:
    bad = tmp_path / "bad" / "results.json"
    bad.parent.mkdir()
    bad.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message) as info:
        compare_runs([tmp_path / "bad"])
    assert str(bad) in str(info.value)


def test_missing_or_unreadable_results_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(DataError, match="results file not found") as info:
        load_runs([tmp_path / "empty_run"])
    assert str(tmp_path / "empty_run" / "results.json") in str(info.value)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match=r"binary\.json"):
        load_runs([binary])
    with pytest.raises(DataError, match="no runs"):
        load_runs([])


def test_results_printed_to_a_file_or_pipe_are_a_markdown_table(capsys: pytest.CaptureFixture[str]) -> None:
    """rich squeezes 17 columns into 80 characters off a terminal; a log then shows no numbers."""
    from harmonia.cli.main import _print_results

    _print_results([alpha(), beta()], "harmonia demo")
    out = capsys.readouterr().out
    assert out.startswith("harmonia demo\n| run |")
    assert out.strip() == "harmonia demo\n" + markdown_table([alpha(), beta()]).strip()
