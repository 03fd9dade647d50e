"""Where a run's QA records come from: a built JSONL file, or a data config built on the fly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harmonia.data.config import DataConfig
from harmonia.data.schema import QARecord
from harmonia.errors import ConfigError


def load_run_records(data_file: Path | None, data_config: DataConfig | None, tokenizer: Any) -> list[QARecord]:
    if (data_file is None) == (data_config is None):
        raise ConfigError("set exactly one of 'data_file' (a built JSONL) and 'data' (a data config)")
    if data_file is not None:
        from harmonia.data.jsonl import read_records

        return read_records(data_file)
    from harmonia.data.build import build_dataset

    return build_dataset(data_config, tokenizer=tokenizer)
