"""The ``harmonia`` command line: a thin layer over the library; each command is a few lines."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from harmonia.errors import HarmoniaError

if TYPE_CHECKING:
    from harmonia.evaluation.results import EvalResults

app = typer.Typer(help="Multi-objective LLM unlearning by bidirectional Top-K logit distillation.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Build and inspect unified QA datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console()
err_console = Console(stderr=True)

Overrides = Annotated[list[str] | None, typer.Argument(help="overrides as key.sub=value")]


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Show user errors (bad config, bad data, NaN loss) as one clear message, exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except HarmoniaError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(2) from None

    return wrapper


def _print_results(results: Sequence[EvalResults], title: str) -> None:
    """The results table: rich in a terminal; markdown when the output is a file or a pipe, where
    rich would squeeze the 17 columns into 80 characters and show no numbers."""
    from harmonia.reports.tables import markdown_table, rich_table

    if console.is_terminal:
        console.print(rich_table(results, title=title))
    else:
        print(f"{title}\n{markdown_table(results)}")


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _run_config(config: Path, overrides: list[str] | None, **defaults: Any) -> Any:
    from harmonia.config import load_config
    from harmonia.pipelines.config import RunConfig

    return load_config(RunConfig, config, overrides or [], base=defaults or None)


@app.command()
@handle_errors
def finetune(config: Path, overrides: Overrides = None,
             resume: Annotated[bool, typer.Option(help="continue from the last checkpoint")] = False) -> None:
    """Supervised fine-tuning on QA records: prepare a target (cached by model, data and config)."""
    _quiet_libraries()
    from harmonia.pipelines.train import run_training

    cfg = _run_config(config, overrides, method={"name": "sft"})
    run_training(cfg, resume=resume, cache_targets=True, log=console.print)


@app.command()
@handle_errors
def unlearn(config: Path, overrides: Overrides = None,
            resume: Annotated[bool, typer.Option(help="continue from the last checkpoint")] = False) -> None:
    """Unlearn with the configured method (``method.name=NAME`` picks a baseline)."""
    _quiet_libraries()
    from harmonia.pipelines.train import run_training

    cfg = _run_config(config, overrides)
    run_training(cfg, resume=resume, log=console.print)


@app.command("eval")
@handle_errors
def eval_(model: Annotated[str, typer.Argument(help="model spec or run directory")], config: Path,
          overrides: Overrides = None,
          output: Annotated[Path | None, typer.Option("-o", "--output", help="folder for results and report")] = None,
          name: Annotated[str | None, typer.Option(help="row name in tables")] = None,
          target: Annotated[Path | None, typer.Option(help="the target's results.json (relative objectives)")]
          = None) -> None:
    """Evaluate a model on all four objectives and the attacks: results.json + report."""
    _quiet_libraries()
    from harmonia.evaluation.harness import eval_processes, evaluate
    from harmonia.models import load_tokenizer
    from harmonia.pipelines.records import load_run_records
    from harmonia.reports.report import write_report

    cfg = _run_config(config, overrides)
    records = load_run_records(cfg.data_file, cfg.data, load_tokenizer(model))
    out = output or (Path(model) / "eval" if Path(model).is_dir() else Path("runs") / "eval")
    results = evaluate(model, records, cfg.evaluation, name=name or Path(model).name, reference=target, out=out,
                       log=console.print)
    if not eval_processes().is_main_process:
        return  # under accelerate launch every process holds the same results; the main one writes
    paths = write_report([results], out, title=f"harmonia evaluation: {results.name}")
    _print_results([results], "evaluation")
    console.print(f"results: {out / 'results.json'}  report: {paths.html}")


@app.command("teacher-report")
@handle_errors
def teacher_report(config: Path, overrides: Overrides = None) -> None:
    """Measure the instructed teacher before training: does it decline forget and answer neighbours?"""
    _quiet_libraries()
    from harmonia.models import load_model
    from harmonia.pipelines.records import load_run_records
    from harmonia.teacher.config import TeacherConfig
    from harmonia.teacher.context import build_context
    from harmonia.teacher.report import compute_teacher_report, format_report, separates

    cfg = _run_config(config, overrides)
    teacher_cfg = TeacherConfig.model_validate(cfg.method.params.get("teacher", {}))
    loaded = load_model(cfg.model.spec, dtype=cfg.model.dtype)
    records = load_run_records(cfg.data_file, cfg.data, loaded.tokenizer)
    context = build_context(teacher_cfg, records)
    # a demonstration would score the teacher on its own prompt
    held_out = [r for r in records if r.role in ("forget", "neighbor", "retain")
                and not r.metadata.get("calibration") and not context.shows(r)]
    report = compute_teacher_report(loaded.model, loaded.tokenizer, context, held_out, teacher_cfg.report)
    console.print(format_report(report), highlight=False)
    verdict = separates(report, teacher_cfg.report.thresholds)
    console.print("[green]the teacher separates forget from neighbour questions[/]" if verdict.ok
                  else f"[red]the teacher does not separate:[/] {'; '.join(verdict.reasons)}")


@app.command()
@handle_errors
def demo(config: Annotated[str | None, typer.Option(
             help="demo config file, or a preset: demo_fast (TOFU, the default: 30 steps on the top 15 layers), "
                  "demo_attacks (demo_fast plus jailbreak and relearning attacks), demo (TOFU, 60 steps on all "
                  "layers), muse_books, wmdp_cyber (and their _gpu versions)")] = None,
         overrides: Overrides = None,
         baselines: Annotated[str | None, typer.Option(help="'all' or comma-separated method names")] = None
         ) -> None:
    """The whole mission on the embedded model: target, teacher, unlearning, baselines, evaluation."""
    _quiet_libraries()
    from harmonia.config import load_config
    from harmonia.pipelines.demo import run_demo
    from harmonia.pipelines.demo_config import DemoConfig, all_baselines, demo_config_path

    cfg = load_config(DemoConfig, demo_config_path(config), overrides or [])
    chosen = None
    if baselines == "all":
        chosen = all_baselines(cfg)
    elif baselines:
        chosen = [b.strip() for b in baselines.split(",") if b.strip()]
    result = run_demo(cfg, baselines=chosen, log=console.print)
    _print_results(result.results, "harmonia demo")
    console.print("time per stage (s): " + ", ".join(f"{k} {v:.0f}" for k, v in result.timings.items()))
    console.print(f"report: {result.report_html}")


@app.command()
@handle_errors
def methods() -> None:
    """List the registered unlearning methods."""
    from harmonia.methods.base import get_method, list_methods

    for name in list_methods():
        doc = (get_method(name).__doc__ or "").strip().splitlines()[0]
        console.print(f"[bold]{name}[/]  {doc}")


@app.command()
@handle_errors
def ask(question: str, model: Annotated[str, typer.Option(help="model spec")] = "smollm2-135m-instruct",
        system: Annotated[str | None, typer.Option(help="system turn (default: the template's)")] = None,
        max_new_tokens: int = 64) -> None:
    """Answer one question with a model (default: the embedded SmolLM2-135M-Instruct)."""
    _quiet_libraries()
    from harmonia.evaluation.generation import generate
    from harmonia.models import load_model
    from harmonia.models.chat import render_prompt

    loaded = load_model(model)
    prompt = render_prompt(loaded.tokenizer, question, system=system)
    (answer,) = generate(loaded.model, loaded.tokenizer, [prompt], max_new_tokens=max_new_tokens,
                         progress=False)
    console.print(answer, highlight=False)


@data_app.command("build")
@handle_errors
def data_build(config: Path, output: Annotated[Path, typer.Option("-o", "--output", help="JSONL to write")],
               model: Annotated[str, typer.Option(help="tokenizer for prefill tokens and lengths")] =
               "smollm2-135m-instruct") -> None:
    """Loaders + standardisation + anchors + prefill records -> one JSONL that training reads."""
    _quiet_libraries()
    from harmonia.data.build import build_dataset, summarise_records
    from harmonia.data.config import load_data_config
    from harmonia.data.jsonl import write_records
    from harmonia.data.summary import render_summary
    from harmonia.models import load_tokenizer

    tokenizer = load_tokenizer(model)
    records = build_dataset(load_data_config(config), tokenizer=tokenizer)
    write_records(output, records)
    render_summary(summarise_records(records, tokenizer=tokenizer, path=output), console)
    console.print(f"wrote {len(records)} records to {output}")


@data_app.command("inspect")
@handle_errors
def data_inspect(file: Path, model: Annotated[str | None, typer.Option(help="tokenizer for token lengths")] = None
                 ) -> None:
    """Counts per role, source and group, a length histogram and examples of a QA JSONL file."""
    _quiet_libraries()
    from harmonia.data.summary import inspect_dataset, render_summary

    tokenizer = None
    if model:
        from harmonia.models import load_tokenizer

        tokenizer = load_tokenizer(model)
    render_summary(inspect_dataset(file, tokenizer=tokenizer), console)


@app.command()
@handle_errors
def compare(runs: list[Path], output: Annotated[Path | None, typer.Option("-o", "--output",
                                                                          help="write a report here")] = None,
            paired: Annotated[list[str] | None, typer.Option(
                help="metric key (e.g. rougeL_recall/neighbor) or objective (combined, forget_efficacy, "
                     "neighbour_retention, utility, attack_resistance): each run's difference from the first "
                     "run on the examples both scored, with a paired-bootstrap 95% interval")] = None,
            ) -> None:
    """Put evaluated runs side by side: one table (and, with -o, one report with plots)."""
    from harmonia.reports.compare import load_runs, paired_differences
    from harmonia.reports.report import write_report

    loaded = load_runs(runs)  # read once; the figures are drawn only for a report
    _print_results(loaded, f"{len(loaded)} runs")
    for line in paired_differences(loaded, paired or []):
        console.print(line, highlight=False, soft_wrap=True)
    if output is not None:
        paths = write_report(loaded, output, title="harmonia comparison")
        console.print(f"report: {paths.html}")


@app.command()
@handle_errors
def interpolate(start: Annotated[Path, typer.Argument(help="the model training started from (a folder)")],
                trained: Annotated[Path, typer.Argument(help="the trained model (a merged folder)")],
                output: Annotated[Path, typer.Option("-o", "--output", help="folder to write")],
                scale: Annotated[float, typer.Option(help="fraction of the update to keep, in (0, 1]")]) -> None:
    """Keep a fraction of a run's update: start + scale x (trained - start), as train.update_scale does."""
    from harmonia.training.interpolation import interpolate_folders

    moved = interpolate_folders(start, trained, output, scale)
    console.print(f"{output}: {moved} weights at {scale} of their update", highlight=False, soft_wrap=True)


@app.command()
@handle_errors
def serve(model: Annotated[str, typer.Argument(help="model spec")] = "smollm2-135m-instruct",
          host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve a model behind an OpenAI-compatible /v1/chat/completions endpoint."""
    _quiet_libraries()
    from harmonia.models.server import serve as serve_model

    console.print(f"serving {model} at http://{host}:{port}/v1 (Ctrl-C stops)")
    serve_model(model, host=host, port=port)


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="harmonia")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
