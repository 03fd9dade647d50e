"""Build the unified QA dataset from a DataConfig: load, standardise, cap, anchor, prefill.

Order is deterministic: sources in config order, records in file order (or a seeded sample of
it), then the prefill-augmented copies (gold prefixes record by record, k ascending, then
openers). Ids are unique across the dataset: two sources selecting the same data is an error.
:func:`inspect_dataset` (from :mod:`harmonia.data.summary`) summarises a built file.
"""

from __future__ import annotations

import logging
import os
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from harmonia.data.anchors import pair_anchors
from harmonia.data.config import (
    DataConfig,
    GenericSource,
    MmluSource,
    MuseSource,
    TextSource,
    TofuSource,
    TruthfulQASource,
    WmdpSource,
    parse_data_config,
    source_label,
)
from harmonia.data.generators import LocalModelGenerator, OpenAICompatibleGenerator, QAGenerator
from harmonia.data.jsonl import check_length, record_length
from harmonia.data.loaders import (
    load_generic,
    load_mmlu,
    load_muse_knowmem,
    load_muse_privleak,
    load_muse_raw,
    load_muse_verbmem,
    load_text,
    load_tofu,
    load_truthfulqa,
    load_wmdp,
)
from harmonia.data.prefill import gold_prefix_records, load_openers, opener_records
from harmonia.data.schema import QARecord
from harmonia.data.standardise import (
    Passage,
    continuation_passages,
    continuation_records,
    generated_records,
    generation_passages,
    load_prompt_template,
    standardise_mcq,
)
from harmonia.data.summary import DatasetSummary, inspect_dataset, render_summary, summarise_records
from harmonia.data.tokens import WhitespaceTokenizer
from harmonia.errors import ConfigError, DataError

__all__ = [
    "DatasetSummary",
    "build_dataset",
    "inspect_dataset",
    "load_source",
    "render_summary",
    "summarise_records",
]

log = logging.getLogger(__name__)


class _Context:
    """What the sources of one build share: the config, the tokenizer, one lazily made generator."""

    def __init__(self, cfg: DataConfig, tokenizer: Any, generator: QAGenerator | None) -> None:
        self.cfg = cfg
        self.tokenizer = tokenizer
        self._generator = generator

    @property
    def generator(self) -> QAGenerator:
        if self._generator is None:
            self._generator = make_generator(self.cfg)
        return self._generator


def make_generator(cfg: DataConfig) -> QAGenerator:
    """The text->QA generator the config asks for (``text_mode`` local or http)."""
    std = cfg.standardise
    if std.text_mode == "http":
        http = std.http
        assert http is not None  # the config validator guarantees it
        api_key = None
        if http.api_key_env:
            api_key = os.environ.get(http.api_key_env)
            if not api_key:
                raise ConfigError(
                    f"standardise.http.api_key_env: environment variable {http.api_key_env} is not set"
                )
        return OpenAICompatibleGenerator(
            http.base_url,
            http.model,
            api_key,
            http.timeout,
            max_tokens=http.max_tokens,
            temperature=http.temperature,
            max_workers=http.max_workers,
        )
    if std.text_mode == "local":
        return LocalModelGenerator(
            std.local.model, max_new_tokens=std.local.max_new_tokens, batch_size=std.local.batch_size
        )
    raise ConfigError(f"standardise.text_mode '{std.text_mode}' uses no generator")


def _select(items: Sequence[Any], src: Any, label: str, seed: int) -> list[Any]:
    if src.limit is None or src.limit >= len(items):
        return list(items)
    if src.sample == "first":
        return list(items[: src.limit])
    keep = sorted(random.Random(f"{seed}:{label}").sample(range(len(items)), src.limit))
    return [items[i] for i in keep]


def _documents(cfg: DataConfig, src: Any) -> tuple[list[str], str, str, str]:
    """(documents, source, group, id prefix) of a text source."""
    path = cfg.source_path(src)
    if isinstance(src, MuseSource):
        if src.subset == "raw":
            docs = load_muse_raw(path, split=src.split, fmt=src.raw_format)
        else:
            docs = load_muse_privleak(path, split=src.split)
        return docs, "muse_books", f"{src.subset}_{src.split}", f"muse_books/{src.subset}/{src.split}"
    assert isinstance(src, TextSource)
    return load_text(path, split=src.split), src.source, src.group or path.stem, f"{src.source}/{path.stem}"


def _text_records(ctx: _Context, src: Any, label: str) -> list[QARecord]:
    cfg, std = ctx.cfg, ctx.cfg.standardise
    docs, source, group, id_prefix = _documents(cfg, src)
    if std.unit == "tokens" and ctx.tokenizer is None:
        raise ConfigError(f"{label}: standardise.unit 'tokens' needs the model's tokenizer")
    passages: list[Passage]
    if std.text_mode == "offline":
        passages = continuation_passages(
            docs,
            prefix_length=std.prefix_length,
            continuation_length=std.continuation_length,
            unit=std.unit,
            tokenizer=ctx.tokenizer,
        )
        passages = _select(passages, src, label, cfg.seed)
        records = continuation_records(
            passages, role=src.role, source=source, group=group, id_prefix=id_prefix
        )
    else:
        passages = generation_passages(
            docs, length=std.passage_length, unit=std.unit, tokenizer=ctx.tokenizer
        )
        passages = _select(passages, src, label, cfg.seed)
        template = load_prompt_template(cfg.resolve(std.prompt_template))
        records, report = generated_records(
            passages,
            ctx.generator,
            template=template,
            pairs_per_passage=std.pairs_per_passage,
            role=src.role,
            source=source,
            group=group,
            id_prefix=id_prefix,
        )
        log.info("%s: %s", label, report.summary())
    if not records:
        raise DataError(cfg.source_path(src), f"{label}: the text is too short to make any passage")
    return records


def _record_source(cfg: DataConfig, src: Any) -> list[QARecord]:
    path = cfg.source_path(src)
    if isinstance(src, TofuSource):
        file = path / f"{src.split}.json" if path.is_dir() else path
        full = cfg.resolve(src.full_path) if src.full_path else None
        return load_tofu(file, role=src.role, authors=src.authors, full_path=full)
    if isinstance(src, MuseSource):
        loader = load_muse_knowmem if src.subset == "knowmem" else load_muse_verbmem
        return loader(path, role=src.role, split=src.split)
    if isinstance(src, WmdpSource):
        return load_wmdp(path, role=src.role, group=src.group)
    if isinstance(src, MmluSource):
        return load_mmlu(path, role=src.role, split=src.split, subjects=src.subjects)
    if isinstance(src, TruthfulQASource):
        return load_truthfulqa(path, role=src.role, mcq=src.mcq, seed=cfg.seed)
    if isinstance(src, GenericSource):
        return load_generic(
            path,
            role=src.role,
            fields=src.fields,
            source=src.source,
            fmt=src.format,
            records_key=src.records_key,
        )
    raise TypeError(f"unknown source type {type(src).__name__}")


def load_source(
    cfg: DataConfig, index: int, *, tokenizer: Any = None, generator: QAGenerator | None = None
) -> list[QARecord]:
    """The standardised, selected records of ``cfg.sources[index]`` (no anchors, no prefill)."""
    return _load_source(_Context(cfg, tokenizer, generator), index)


def _load_source(ctx: _Context, index: int) -> list[QARecord]:
    cfg = ctx.cfg
    src = cfg.sources[index]
    label = source_label(index, src)
    if src.is_text:
        records = _text_records(ctx, src, label)
    else:
        records = _record_source(cfg, src)
        if cfg.standardise.mcq_to_qa:
            records = standardise_mcq(records, style=cfg.standardise.mcq_style)
        if src.max_tokens is not None:
            records = _short_records(records, src.max_tokens, ctx.tokenizer, label)
        records = _select(records, src, label, cfg.seed)
    for record in records:
        if src.calibration:
            record.metadata["calibration"] = True
        if not src.in_target:
            record.metadata["in_target"] = False
    return records


def _short_records(records: list[QARecord], max_tokens: int, tokenizer: Any, label: str) -> list[QARecord]:
    if tokenizer is None:
        raise ConfigError(f"{label}: max_tokens counts model tokens; pass the model's tokenizer to build_dataset")
    return [r for r in records if sum(record_length(r, tokenizer).values()) <= max_tokens]


def _cap_lengths(records: list[QARecord], cfg: DataConfig, tokenizer: Any) -> list[QARecord]:
    cap = cfg.max_length
    if cap.chars is None and cap.tokens is None:
        return records
    if cap.tokens is not None and tokenizer is None:
        raise ConfigError("max_length.tokens needs the model's tokenizer")
    kept, dropped = [], Counter()
    for record in records:
        try:
            check_length(record, max_chars=cap.chars, max_tokens=cap.tokens, tokenizer=tokenizer)
        except DataError:
            if cap.on_overflow == "error":
                raise
            dropped[record.role] += 1
            continue
        kept.append(record)
    if dropped:
        log.warning("dropped %d records over max_length: %s", sum(dropped.values()), dict(dropped))
    return kept


def _prefill_tokenizer(cfg: DataConfig, tokenizer: Any) -> Any:
    if cfg.prefill.tokenizer == "whitespace":
        return WhitespaceTokenizer()
    if tokenizer is None:
        raise ConfigError(
            "prefill.ks counts model tokens: pass the model's tokenizer to build_dataset, "
            "or set prefill.tokenizer: whitespace to count words"
        )
    return tokenizer


def build_dataset(
    cfg: DataConfig | Mapping[str, Any], *, tokenizer: Any = None, generator: QAGenerator | None = None
) -> list[QARecord]:
    """All records of the build described by ``cfg`` (see module docstring).

    ``cfg`` may also be a plain mapping (e.g. the ``data:`` section of a run config); its
    relative paths then resolve against the current directory, so prefer
    ``parse_data_config(mapping).with_base_dir(config_folder)``. ``tokenizer`` (the model's) is
    needed when lengths or prefill k are counted in tokens; ``generator`` overrides the text->QA
    backend the config names.
    """
    if not isinstance(cfg, DataConfig):
        cfg = parse_data_config(dict(cfg))
    ctx = _Context(cfg, tokenizer, generator)
    records: list[QARecord] = []
    origin: dict[str, str] = {}
    for index, src in enumerate(cfg.sources):
        label = source_label(index, src)
        for record in _load_source(ctx, index):
            if record.id in origin:
                raise DataError(
                    str(cfg.source_path(src)),
                    f"duplicate record id: sources {origin[record.id]} and {label} select the same data",
                    record=record.id,
                    field="id",
                )
            origin[record.id] = label
            records.append(record)
    records = _cap_lengths(records, cfg, tokenizer)
    roles = Counter(r.role for r in records)
    if cfg.anchors.enabled and roles["forget"]:
        if not roles["neighbor"]:
            raise ConfigError(
                "anchors are enabled but no source has role 'neighbor'; add one or set anchors.enabled: false"
            )
        records = pair_anchors(records, method=cfg.anchors.method)
    if cfg.prefill.enabled:
        targets = [r for r in records if r.role in cfg.prefill.roles]
        augmented: list[QARecord] = []
        if cfg.prefill.ks and targets:
            augmented += gold_prefix_records(targets, _prefill_tokenizer(cfg, tokenizer), cfg.prefill.ks)
        if cfg.prefill.openers and targets:
            openers = load_openers(cfg.resolve(cfg.prefill.openers_file))
            augmented += opener_records(
                targets, openers, per_record=cfg.prefill.openers_per_record, seed=cfg.seed
            )
        records += augmented
    return records
