"""The ``harmonia`` command line: a thin layer over the library; each command is a few lines."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from harmonia.errors import HarmoniaError

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


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="harmonia")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
