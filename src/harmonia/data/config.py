"""The data build, described by one pydantic model (``extra='forbid'``: a typo is an error).

A ``DataConfig`` lists the sources (loader, path, role, selection), then how to standardise
them, mine anchors, add prefill-augmented records and cap lengths. Paths follow
:mod:`harmonia.data.paths`: ``pkg:...`` is inside the package resources, other relative paths are
relative to the config file's folder, and ``${NAME}`` in a source's ``path`` is an environment
variable (an unset one is an error naming the source and the variable). A source without
``path`` uses the data shipped with harmonia where there is some (TOFU, MMLU subset, WMDP-Cyber
dev); MUSE, TruthfulQA and custom files always need a path.

Example (YAML)::

    sources:
      - {loader: tofu, role: forget, authors: [198, 199]}
      - {loader: tofu, role: retain, authors: "190-195"}
      - {loader: mmlu, role: general, subjects: [computer_security], limit: 20, sample: random}
      - {loader: generic, role: retain, path: my.jsonl, fields: {question: prompt, answer: response}}
    prefill: {ks: [2, 5, 10]}
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from harmonia.data.anchors import AnchorMethod
from harmonia.data.loaders.generic import FileFormat
from harmonia.data.paths import expand_variables, resolve_path, unset_variables
from harmonia.data.schema import Role
from harmonia.data.standardise import MCQStyle, Unit
from harmonia.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Source(_Strict):
    """Fields every source has. ``limit`` keeps ``limit`` records (passages, for text sources),
    the first ones or a seeded random sample, drawn among the records of at most ``max_tokens``
    (question + prefill + answer after standardisation; a small model's preset can then keep a
    fixed number of short WMDP questions); ``calibration`` marks teacher-calibration data
    (``metadata["calibration"] = True``), which must not overlap the evaluated entities;
    ``in_target: false`` keeps a source out of the target's knowledge stage
    (``metadata["in_target"] = False``): calibration entities the model need not know first, which
    widen calibration without retraining the target."""

    DEFAULT_PATH: ClassVar[str | None] = None
    TEXT: ClassVar[bool] = False

    name: str | None = None
    role: Role
    path: str | None = None
    limit: int | None = Field(default=None, ge=1)
    sample: Literal["first", "random"] = "first"
    max_tokens: int | None = Field(
        default=None, ge=1, description="keep only records this short (model tokens) before the limit is drawn"
    )
    calibration: bool = False
    in_target: bool = Field(True, description="the target's and reference's knowledge stage trains on it")

    @property
    def is_text(self) -> bool:
        """True when the source yields documents that text->QA conversion turns into records."""
        return self.TEXT

    @model_validator(mode="after")
    def _has_path(self) -> _Source:
        if self.path is None and self.DEFAULT_PATH is None:
            raise ValueError(
                f"loader '{getattr(self, 'loader', '?')}' needs a 'path' (no data shipped for it)"
            )
        return self


def _parse_indices(value: Any) -> Any:
    """``[198, 199]``, ``"190-195"`` or ``[180, "182-184"]`` -> a sorted list of ints."""
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    out: set[int] = set()
    for item in items:
        if isinstance(item, str) and "-" in item.strip().lstrip("-"):
            lo, hi = (int(x) for x in item.split("-", 1))
            if lo > hi:
                raise ValueError(f"empty range '{item}'")
            out.update(range(lo, hi + 1))
        else:
            out.add(int(item))
    return sorted(out)


class TofuSource(_Source):
    """A TOFU split (``path`` is the TOFU folder or a split file); ``authors`` selects authors by index."""

    DEFAULT_PATH: ClassVar[str | None] = "pkg:data/tofu"
    loader: Literal["tofu"]
    split: str = "full"
    authors: list[int] | None = None
    full_path: str | None = None

    _parse_authors = field_validator("authors", mode="before")(_parse_indices)


class MuseSource(_Source):
    """MUSE-Books from a user-given folder (the text is not shipped). raw/privleak are text sources."""

    loader: Literal["muse"]
    subset: Literal["knowmem", "verbmem", "raw", "privleak"] = "knowmem"
    split: str = "forget"
    raw_format: Literal["auto", "json", "txt"] = "auto"

    @property
    def is_text(self) -> bool:
        return self.subset in ("raw", "privleak")


class WmdpSource(_Source):
    DEFAULT_PATH: ClassVar[str | None] = "pkg:data/wmdp_cyber/cyber_questions_dev.json"
    loader: Literal["wmdp"]
    group: str = "cyber"


class MmluSource(_Source):
    DEFAULT_PATH: ClassVar[str | None] = "pkg:data/mmlu"
    loader: Literal["mmlu"]
    split: Literal["dev", "test"] = "test"
    subjects: list[str] | None = None


class TruthfulQASource(_Source):
    loader: Literal["truthfulqa"]
    mcq: bool = False


class GenericSource(_Source):
    """A JSON/JSONL/CSV file read through a field mapping (see harmonia.data.loaders.generic)."""

    loader: Literal["generic"]
    fields: dict[str, str | list[str]]
    format: FileFormat | None = None
    records_key: str | None = None
    source: str = "custom"


class TextSource(_Source):
    """A plain text file, converted to QA by the configured text->QA mode."""

    TEXT: ClassVar[bool] = True
    loader: Literal["text"]
    split: Literal["file", "paragraph", "line"] = "file"
    source: str = "text"
    group: str = ""


_LOADERS = ("tofu", "muse", "wmdp", "mmlu", "truthfulqa", "generic", "text")
SourceConfig = Annotated[
    TofuSource | MuseSource | WmdpSource | MmluSource | TruthfulQASource | GenericSource | TextSource,
    Field(discriminator="loader"),
]


class HttpBackendConfig(_Strict):
    """An OpenAI-compatible endpoint. The key is read from the environment variable ``api_key_env``."""

    base_url: str
    model: str
    api_key_env: str | None = None
    timeout: float = Field(default=120.0, gt=0)
    max_tokens: int = Field(default=512, ge=1)
    temperature: float = Field(default=0.0, ge=0)
    max_workers: int = Field(default=4, ge=1)


class LocalBackendConfig(_Strict):
    model: str = "smollm2-135m-instruct"
    max_new_tokens: int = Field(default=512, ge=1)
    batch_size: int = Field(default=8, ge=1)


class StandardiseConfig(_Strict):
    """MCQ -> QA and raw text -> QA (see harmonia.data.standardise)."""

    mcq_to_qa: bool = True
    mcq_style: MCQStyle = "letter_text"
    text_mode: Literal["offline", "local", "http"] = "offline"
    unit: Unit = "words"
    prefix_length: int = Field(default=48, ge=1)
    continuation_length: int = Field(default=48, ge=1)
    passage_length: int = Field(default=200, ge=1)
    pairs_per_passage: int = Field(default=3, ge=1)
    prompt_template: str = "pkg:data/prompts/text_to_qa.txt"
    local: LocalBackendConfig = Field(default_factory=LocalBackendConfig)
    http: HttpBackendConfig | None = None

    @model_validator(mode="after")
    def _backend_given(self) -> StandardiseConfig:
        if self.text_mode == "http" and self.http is None:
            raise ValueError("text_mode 'http' needs an 'http' block (base_url, model)")
        return self


class AnchorConfig(_Strict):
    enabled: bool = True
    method: AnchorMethod = "auto"


class PrefillConfig(_Strict):
    """Prefill augmentation. k counts tokens of the model's tokenizer (``tokenizer: model``, the
    build must be given it) or words (``tokenizer: whitespace``)."""

    enabled: bool = True
    ks: list[int] = Field(default_factory=lambda: [2, 5, 10])
    openers: bool = True
    openers_file: str = "pkg:data/prefill_openers.txt"
    openers_per_record: int = Field(default=1, ge=1)
    roles: list[Role] = Field(default_factory=lambda: ["forget"])
    tokenizer: Literal["model", "whitespace"] = "model"

    @field_validator("ks")
    @classmethod
    def _positive(cls, ks: list[int]) -> list[int]:
        if any(k < 1 for k in ks):
            raise ValueError("every k must be >= 1")
        return sorted(set(ks))


class MaxLengthConfig(_Strict):
    """Cap on question + prefill + answer length; ``tokens`` needs the model's tokenizer."""

    chars: int | None = Field(default=None, ge=1)
    tokens: int | None = Field(default=None, ge=1)
    on_overflow: Literal["error", "drop"] = "error"


class DataConfig(_Strict):
    """The whole data build. Load it from YAML with :func:`load_data_config`."""

    sources: list[SourceConfig] = Field(min_length=1)
    standardise: StandardiseConfig = Field(default_factory=StandardiseConfig)
    anchors: AnchorConfig = Field(default_factory=AnchorConfig)
    prefill: PrefillConfig = Field(default_factory=PrefillConfig)
    max_length: MaxLengthConfig = Field(default_factory=MaxLengthConfig)
    seed: int = 0

    _base_dir: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _authors_disjoint(self) -> DataConfig:
        """An author may serve one purpose only: forget, neighbour, retain or calibration."""
        owner: dict[int, str] = {}
        for i, src in enumerate(self.sources):
            if isinstance(src, TofuSource) and src.authors is not None:
                label = (
                    f"{source_label(i, src)} (role {src.role}{', calibration' if src.calibration else ''})"
                )
                for a in src.authors:
                    if a in owner:
                        raise ValueError(f"TOFU author {a} is in both {owner[a]} and {label}")
                    owner[a] = label
        return self

    @property
    def base_dir(self) -> Path | None:
        return self._base_dir

    def with_base_dir(self, base_dir: str | Path | None) -> DataConfig:
        """A copy whose relative paths resolve against ``base_dir`` (the config file's folder)."""
        copy = self.model_copy(deep=True)
        copy._base_dir = Path(base_dir) if base_dir is not None else None
        return copy

    def resolve(self, spec: str | Path) -> Path:
        return resolve_path(spec, self._base_dir)

    def source_path(self, src: _Source) -> Path:
        """Where a source's data is; ``${NAME}`` in its ``path`` is read from the environment."""
        spec = src.path if src.path is not None else src.DEFAULT_PATH
        assert spec is not None  # _Source._has_path guarantees one of them
        if missing := unset_variables(spec):
            label = next((source_label(i, s) for i, s in enumerate(self.sources) if s is src), "source")
            raise ConfigError(
                f"data source '{label}': key 'path' is '{spec}', but the environment variable(s) "
                f"{', '.join(missing)} are not set; export {missing[0]}=<folder of that data> "
                "or write the path into the data config"
            )
        return self.resolve(expand_variables(spec))


def source_label(index: int, src: _Source) -> str:
    """How messages name a source: its ``name``, else ``<loader>[index]``."""
    return src.name or f"{getattr(src, 'loader', 'source')}[{index}]"


def load_data_config(path: str | Path) -> DataConfig:
    """Read a data config from YAML (the whole file, or its ``data:`` section); errors name file and key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if isinstance(raw, dict) and "sources" not in raw and isinstance(raw.get("data"), dict):
        raw = raw["data"]
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with 'sources'")
    return parse_data_config(raw, origin=str(path)).with_base_dir(path.parent)


def parse_data_config(raw: dict[str, Any], *, origin: str = "data config") -> DataConfig:
    """Validate a mapping as a DataConfig, turning pydantic errors into a ConfigError naming the key."""
    try:
        return DataConfig.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = err["loc"]
            # drop the discriminator tag pydantic inserts after a source's index ("sources.0.tofu.authors")
            loc = [
                p for j, p in enumerate(loc) if not (j > 0 and isinstance(loc[j - 1], int) and p in _LOADERS)
            ]
            key = ".".join(str(p) for p in loc) or "(top level)"
            lines.append(f"{origin}: key '{key}': {err['msg']}")
        raise ConfigError("\n".join(lines)) from None
