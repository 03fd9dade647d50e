"""Fine-tune or unlearn from a run configuration: records -> method -> engine -> run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harmonia.data.schema import QARecord
from harmonia.io import write_text_atomic
from harmonia.methods.base import build_params, get_method
from harmonia.models import load_model
from harmonia.pipelines.config import RunConfig
from harmonia.pipelines.fingerprint import cache_path, cached_model_run, finished_model, weights_settings
from harmonia.pipelines.records import load_run_records
from harmonia.training.engine import Engine, TrainResult


def target_run_dir(cfg: RunConfig, records: list[QARecord], model_path: str) -> Path:
    """The cached run folder of a fine-tuned target, keyed by what determines it: base weights,
    data and training settings."""
    return cache_path(lambda key: cached_model_run(cfg.name, key), model_path, cfg.model, records,
                      weights_settings(cfg.train), cfg.method)


def run_training(cfg: RunConfig, *, resume: bool = False, cache_targets: bool = False,
                 records: list[QARecord] | None = None, context_extras: dict[str, Any] | None = None,
                 log: Any = print) -> TrainResult:
    """Train ``cfg.method`` on the configured records; returns where the model landed.

    With ``cache_targets`` (``harmonia finetune``) the run directory is keyed by a hash of model,
    data and config under ``$HARMONIA_HOME/targets``, and an existing finished run is reused.
    """
    loaded = load_model(cfg.model.spec, dtype=cfg.model.dtype, trust_remote_code=cfg.model.trust_remote_code)
    if records is None:
        records = load_run_records(cfg.data_file, cfg.data, loaded.tokenizer)
    if cfg.train.output_dir is not None:
        run_dir = Path(cfg.train.output_dir)
    elif cache_targets:
        run_dir = target_run_dir(cfg, records, loaded.path)
    else:
        run_dir = Path("runs") / cfg.name
    if cache_targets and finished_model(run_dir) and not resume:
        log(f"target already prepared: {run_dir / 'model'} (cached)")
        return TrainResult(run_dir=run_dir, steps=0, model_dir=run_dir / "model")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    method_cls = get_method(cfg.method.name)
    params = build_params(method_cls, cfg.method.params)
    engine = Engine(cfg.train, method_cls, params, loaded.model, loaded.tokenizer, run_dir,
                    context_extras=context_extras)
    result = engine.train(records, resume=resume)
    log(f"trained {result.steps} steps in {result.seconds:.0f} s -> {result.model_dir}")
    return result
