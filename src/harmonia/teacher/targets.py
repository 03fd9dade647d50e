"""Distillation targets: which positions are distilled, the teacher's responses, and the Top-K cache.

Positions (METHOD.md Part 3, ``positions`` option):

- ``first``: the position that predicts the first token of the assistant turn (DUET);
- ``response``: every position that predicts a token of the teacher's own greedy response,
  teacher-forced on both sides (the student without the instruction);
- ``prefill``: records whose ``prefill`` already starts the assistant turn (the first k gold
  tokens or an affirmative opener, created by the data layer) are distilled too, at the span
  above taken after the prefill. Without it such records are an error, not silently dropped;
- ``prefix`` (ours, with ``prefill``): prefilled records of the instructed roles are also distilled
  at the positions inside their prefill, each predicting the next token of the started answer
  (teacher-forced): every point where the student decides to go on with a started forget answer or
  to stop, not only where the prefill ends. The position before the prefill's first token is the
  plain record's and is left to it.

Both sides end with the same tokens: the chat template's assistant header, the prefill and the
response ids (tokenised once and appended as ids). So the distilled positions of a record are the
last ``n`` positions of both its student and its teacher sequence, and :func:`gather_positions`
returns them aligned and in the same order on both sides.

The cache holds the teacher's responses and its Top-K (ids and values, descending) per position,
in safetensors files named by a hash of everything that determines them: the teacher's weights
(:func:`weights_fingerprint`), the token ids of every teacher and student input (which covers the
records, the tokenizer, the chat template, the instruction and the demonstrations), and the
settings (mode, amplification, response length, K). Any change gives a new key, so a stale entry is never
read.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from harmonia.data.schema import QARecord
from harmonia.data.tokens import encode_plain
from harmonia.errors import ConfigError, DataError
from harmonia.io import atomic_path, harmonia_home
from harmonia.methods.base import Example, masked_logits
from harmonia.methods.losses import TopK, gather_positions, teacher_topk
from harmonia.teacher.config import Position
from harmonia.teacher.context import TeacherContext
from harmonia.teacher.decoding import Amplification, greedy_ids
from harmonia.training.batching import collate

log = logging.getLogger(__name__)

# Part of every cache key: bumped when a kind's computation changes its numbers, so a cache written
# by older code is recomputed instead of reused. Top-K 2 (session 7): records batched by length,
# which moves values by up to 1.5e-4 and reorders near-equal ids; a demo run on version-1 Top-K
# gave a different prefilling row (docs/demo.md). The responses' tokens did not change.
CACHE_VERSIONS = {"responses": 1, "topk": 2}


# ---------------------------------------------------------------------------------------------
# Targets and their features
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistillTarget:
    """One record's distillation target: both prompts, the response ids and how many positions.

    The distilled positions predict ``response[:n]``; with span ``first`` and no response,
    ``n`` is 1 and the single position predicts the first answer token. Before them, ``n_prefix``
    positions inside the prefill (both prompts end with it) predict its tokens 2 .. n_prefix + 1.
    """

    record_id: str
    role: str
    student_prompt: tuple[int, ...]
    teacher_prompt: tuple[int, ...]
    response: tuple[int, ...]
    n_positions: int
    n_prefix: int = 0

    @property
    def n_distilled(self) -> int:
        """Every distilled position: the prefix ones, then the response span's."""
        return self.n_prefix + self.n_positions


def span_of(record: QARecord, positions: Sequence[Position]) -> Literal["first", "response"]:
    """The span distilled for ``record`` under the position set ``positions``."""
    if record.prefill and "prefill" not in positions:
        raise ConfigError(
            f"record '{record.id}' has a prefill but the method's positions {list(positions)} "
            "do not include 'prefill'; add it or drop the prefill records"
        )
    return "response" if "response" in positions else "first"


def positions_problem(positions: Sequence[Position]) -> str | None:
    """What is wrong with a ``positions`` list (None if nothing): the one rule the method's params
    validate and :func:`build_targets` checks for callers that build targets without them."""
    if not set(positions) & {"first", "response"}:
        return "positions must include 'first' or 'response' (the span distilled per record)"
    if "prefix" in positions and "prefill" not in positions:
        return "positions 'prefix' distils inside the prefilled records: it needs 'prefill' too"
    return None


def check_positions(positions: Sequence[Position]) -> None:
    if problem := positions_problem(positions):
        raise ConfigError(problem)


def make_target(
    record: QARecord,
    student_prompt: list[int],
    teacher_prompt: list[int],
    response: list[int],
    span: Literal["first", "response"],
    max_length: int,
    n_prefix: int = 0,
) -> DistillTarget:
    """The target of one record; the response is cut so the student sequence fits ``max_length``."""
    if len(student_prompt) > max_length:
        raise DataError(
            None,
            f"the prompt has {len(student_prompt)} tokens, more than train.max_length = {max_length}",
            record=record.id,
            field="question",
        )
    if span == "first":
        response = []
    # the sequence holds the prompt and response[:n-1], so it fits when n <= max_length - prompt + 1
    n = min(len(response), max_length - len(student_prompt) + 1) if response else 1
    return DistillTarget(
        record_id=record.id,
        role=record.role,
        student_prompt=tuple(student_prompt),
        teacher_prompt=tuple(teacher_prompt),
        response=tuple(response[:n]),
        n_positions=n,
        n_prefix=n_prefix,
    )


def _side(prompt: Sequence[int], target: DistillTarget) -> tuple[list[int], list[int]]:
    ids = [*prompt, *target.response[: target.n_positions - 1]]
    mask = [0] * (len(ids) - target.n_distilled) + [1] * target.n_distilled
    return ids, mask


def distill_features(target: DistillTarget, *, teacher: bool = True) -> Example:
    """Student features (``input_ids``, ``attention_mask``, ``distill_mask``) and, with ``teacher``,
    the teacher's (``teacher_input_ids``, ``teacher_attention_mask``, ``teacher_distill_mask``)."""
    ids, mask = _side(target.student_prompt, target)
    out: Example = {"input_ids": ids, "attention_mask": [1] * len(ids), "distill_mask": mask}
    if teacher:
        t_ids, t_mask = _side(target.teacher_prompt, target)
        out.update(teacher_input_ids=t_ids, teacher_attention_mask=[1] * len(t_ids), teacher_distill_mask=t_mask)
    return out


def build_targets(
    tokenizer: Any,
    context: TeacherContext,
    records: Sequence[QARecord],
    responses: dict[str, list[int]] | None,
    positions: Sequence[Position],
    max_length: int,
) -> dict[str, DistillTarget]:
    """Targets of every record; ``responses`` maps record ids to response ids (span ``response``)."""
    check_positions(positions)
    out = {}
    for record in records:
        span = span_of(record, positions)
        student = encode_plain(tokenizer, context.plain_prompt(tokenizer, record))
        teacher = encode_plain(tokenizer, context.teacher_prompt(tokenizer, record))
        response = [] if span == "first" or responses is None else responses[record.id]
        n_prefix = 0
        if "prefix" in positions and record.prefill and context.instructed(record.role):
            n_prefix = prefill_length(tokenizer, context, record, student, teacher) - 1
        out[record.id] = make_target(record, student, teacher, response, span, max_length, n_prefix)
    return out


def prefill_length(
    tokenizer: Any, context: TeacherContext, record: QARecord, student: list[int], teacher: list[int]
) -> int:
    """How many of the student prompt's last tokens are the prefill's, checked to be the teacher's too."""
    bare = encode_plain(tokenizer, context.plain_prompt(tokenizer, record.model_copy(update={"prefill": ""})))
    n = len(student) - len(bare)
    if n < 1 or student[: len(bare)] != bare or teacher[-n:] != student[-n:]:
        raise DataError(
            None,
            "the prefill's tokens differ from the ends of the student and teacher prompts (a token "
            "merged across the assistant header?): positions 'prefix' cannot place them",
            record=record.id,
            field="prefill",
        )
    return n


# ---------------------------------------------------------------------------------------------
# The teacher's logits at the distilled positions
# ---------------------------------------------------------------------------------------------


def teacher_rows(teacher: Any, batch: dict[str, Tensor], amplification: Amplification | None) -> Tensor:
    """The teacher's logits ``[N, V]`` at the distilled positions of a collated batch.

    With an ``amplification`` (mode ``amplified``) they are amplified against the plain model, i.e. the
    same frozen model run on the student's input. Records whose role uses the plain teacher have
    identical inputs on both sides, so amplification leaves their logits unchanged.
    """
    rows = gather_positions(*masked_logits(teacher, batch, batch["teacher_distill_mask"].bool(), "teacher_"))
    if amplification is None:
        return rows
    plain = gather_positions(*masked_logits(teacher, batch, batch["distill_mask"].bool()))
    return amplification(rows, plain)


def token_slot(row_ids: Tensor, token: int) -> int | None:
    """Where ``token`` is in one row of Top-K ids, or None when it is not there."""
    hit = (row_ids == token).nonzero()
    return int(hit[0, 0]) if hit.numel() else None


def lift_token(top: TopK, token: int, margin: float, rows: int = 1) -> TopK:
    """``top`` with ``token`` made the teacher's top-1 at each of the first ``rows`` positions,
    ``margin`` above the best value there: its value raised if it is in the Top-K, else it replaces
    the K-th entry. Each row stays sorted descending (role K slices the first entries); later
    positions are unchanged."""
    ids, values = top.ids.clone(), top.values.clone()
    for row in range(min(rows, ids.shape[0])):
        best = float(values[row].max())
        slot = token_slot(ids[row], token)
        slot = ids.shape[1] - 1 if slot is None else slot
        ids[row, slot], values[row, slot] = token, best + margin
        order = values[row].argsort(descending=True, stable=True)
        ids[row], values[row] = ids[row, order], values[row, order]
    return TopK(ids, values)


def token_gaps(top: TopK, token: int, rows: int = 1) -> list[float]:
    """At each of the first ``rows`` positions, how far ``token`` is behind the best value of ``top``:
    the best minus its value, or, where it is not in the Top-K, the best minus the K-th value (the
    least it can be behind)."""
    gaps = []
    for row in range(min(rows, top.ids.shape[0])):
        values = top.values[row]
        slot = token_slot(top.ids[row], token)
        behind = values.min() if slot is None else values[slot]
        gaps.append(float(values.max() - behind))
    return gaps


def plain_teacher(target: DistillTarget) -> bool:
    """Whether the teacher sees the student's own input (a role distilled from the plain model)."""
    return target.teacher_prompt == target.student_prompt


@torch.no_grad()
def compute_topk(
    teacher: Any, targets: Sequence[DistillTarget], k: int, *, amplification: Amplification | None,
    batch_size: int = 8,
) -> list[TopK]:
    """The teacher's Top-K (descending) at every distilled position of each target, on the CPU.

    Targets are batched by length, so batches pad little, and apart by teacher input: a record the
    plain model teaches has amplified logits equal to its plain ones (z + alpha (z - z) = z), so
    one forward serves it, where a batch mixed with instructed records would run two.
    """
    device = next(teacher.parameters()).device
    order = sorted(range(len(targets)), key=lambda i: (len(targets[i].teacher_prompt) + targets[i].n_positions, i))
    out: list[TopK | None] = [None] * len(targets)
    for group_amplification, plain in ((None, True), (amplification, False)):
        group = [i for i in order if plain_teacher(targets[i]) == plain]
        for start in range(0, len(group), batch_size):
            part = group[start : start + batch_size]
            features = [distill_features(targets[i]) for i in part]
            batch = {key: v.to(device) for key, v in collate(features).items()}
            top = teacher_topk(teacher_rows(teacher, batch, group_amplification).float(), k)
            ids, values = top.ids.cpu(), top.values.cpu()
            offset = 0
            for i in part:
                n = targets[i].n_distilled
                out[i] = TopK(ids[offset : offset + n], values[offset : offset + n])
                offset += n
    missing = [targets[i].record_id for i, top in enumerate(out) if top is None]
    if missing:
        raise RuntimeError(f"no Top-K computed for targets {missing}")
    return cast(list[TopK], out)


# ---------------------------------------------------------------------------------------------
# Teacher responses
# ---------------------------------------------------------------------------------------------


def gold_response(tokenizer: Any, record: QARecord) -> list[int]:
    """The gold answer's ids plus end-of-turn: distil along the gold path instead of the teacher's."""
    ids = encode_plain(tokenizer, record.answer)
    return [*ids, tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else ids


def refusal_response(tokenizer: Any, context: TeacherContext, record: QARecord) -> list[int]:
    """The teacher's decline sentence as response ids: the plain refusal, or the prefill refusal
    (" - I'm sorry, ...") after a started answer, ended like an answer."""
    ids = encode_plain(tokenizer, context.config.decline_text(bool(record.prefill)))
    return [*ids, tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else ids


def teacher_responses(
    teacher: Any,
    tokenizer: Any,
    context: TeacherContext,
    records: Sequence[QARecord],
    *,
    max_new_tokens: int,
    batch_size: int = 16,
    progress: bool = False,
) -> dict[str, list[int]]:
    """The teacher's greedy response ids per record id, each under its role's context.

    The amplified teacher applies to the instructed roles only; the plain roles are answered by
    the plain model.
    """
    out: dict[str, list[int]] = {}
    instructed = [r for r in records if context.instructed(r.role)]
    plain = [r for r in records if not context.instructed(r.role)]
    if instructed:
        plain_prompts = [context.plain_prompt(tokenizer, r) for r in instructed] if context.amplified else None
        ids = greedy_ids(
            teacher,
            tokenizer,
            [context.instructed_prompt(tokenizer, r) for r in instructed],
            plain_prompts=plain_prompts,
            amplification=context.amplification,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            progress=progress,
        )
        out.update({r.id: i for r, i in zip(instructed, ids, strict=True)})
    if plain:
        ids = greedy_ids(
            teacher,
            tokenizer,
            [context.plain_prompt(tokenizer, r) for r in plain],
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            progress=progress,
        )
        out.update({r.id: i for r, i in zip(plain, ids, strict=True)})
    return out


# ---------------------------------------------------------------------------------------------
# Cache keys and files
# ---------------------------------------------------------------------------------------------


def _normalised_name(name: str) -> str:
    # the same base weights, wrapped by peft or not, must give the same fingerprint
    return name.removeprefix("base_model.model.").replace(".base_layer.", ".")


@torch.no_grad()
def weights_fingerprint(model: Any) -> str:
    """A hash of a model's weights: per parameter its name, shape, dtype, sums and a strided sample.

    Cheap (one pass of sums, no full copy) and sensitive to any fine-tuning. LoRA adapter weights
    are skipped: the teacher is the base model with the adapter disabled.
    """
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        cfg = {
            k: v
            for k, v in config.to_dict().items()
            if k not in ("_name_or_path", "name_or_path", "transformers_version", "_commit_hash")
        }
        h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    for name, param in model.named_parameters():
        if "lora_" in name:
            continue
        flat = param.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 256)][:256].float().cpu()
        stats = torch.stack([flat.double().sum(), flat.double().abs().sum()]).cpu()
        h.update(f"{_normalised_name(name)}|{tuple(param.shape)}|{param.dtype}".encode())
        h.update(stats.numpy().tobytes())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()


class KeyBuilder:
    """Incremental sha256 over JSON-able parts, so long id lists need no big intermediate string."""

    def __init__(self, kind: str) -> None:
        self._h = hashlib.sha256(f"{kind}|v{CACHE_VERSIONS[kind]}".encode())

    def add(self, *parts: Any) -> KeyBuilder:
        for part in parts:
            self._h.update(json.dumps(part, sort_keys=True, default=str).encode())
            self._h.update(b"\x00")
        return self

    def hexdigest(self) -> str:
        return self._h.hexdigest()[:32]


def responses_key(
    fingerprint: str,
    tokenizer: Any,
    context: TeacherContext,
    records: Sequence[QARecord],
    *,
    max_new_tokens: int,
) -> str:
    """Key of the teacher's responses: weights, every input's ids, mode, amplification and length."""
    amplification = context.amplification
    key = KeyBuilder("responses").add(
        fingerprint, context.config.mode, context.config.alpha, max_new_tokens, tokenizer.eos_token_id
    )
    if amplification is not None and amplification.plausibility:
        key.add("plausibility", amplification.plausibility)
    for r in records:
        plain = encode_plain(tokenizer, context.plain_prompt(tokenizer, r))
        teacher = encode_plain(tokenizer, context.teacher_prompt(tokenizer, r))
        key.add(r.id, r.role, teacher, plain if context.amplified else None)
    return key.hexdigest()


def topk_key(fingerprint: str, targets: Sequence[DistillTarget], k: int, amplification: Amplification | None) -> str:
    """Key of the Top-K targets: weights, both sides' ids and positions, K and amplification."""
    key = KeyBuilder("topk").add(fingerprint, k, *(amplification.key() if amplification else (None,)))
    for t in targets:
        key.add(
            t.record_id,
            t.teacher_prompt,
            t.student_prompt if amplification is not None else None,
            t.response,
            t.n_positions,
        )
        if t.n_prefix:  # added only when set: the keys of every cache written without it stay valid
            key.add("prefix", t.n_prefix)
    return key.hexdigest()


def default_cache_dir() -> Path:
    return harmonia_home() / "teacher_cache"


class TargetCache:
    """Ragged per-record tensors in one safetensors file per key, written atomically."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def path(self, kind: str, key: str) -> Path:
        return self.root / f"{kind}-{key}.safetensors"

    def save(self, kind: str, key: str, record_ids: Sequence[str], rows: dict[str, Sequence[Tensor]]) -> Path:
        """Store ``rows[name][i]`` for record ``record_ids[i]`` (all names share the row lengths)."""
        lengths = [len(t) for t in next(iter(rows.values()))]
        tensors: dict[str, Tensor] = {}
        for name, values in rows.items():
            if [len(t) for t in values] != lengths or len(values) != len(record_ids):
                raise ValueError(f"cache rows '{name}' do not match the records")
            tensors[name] = torch.cat(list(values)).contiguous()
        tensors["offsets"] = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.long)
        dest = self.path(kind, key)
        with atomic_path(dest) as tmp:
            save_file(
                tensors,
                str(tmp),
                metadata={"key": key, "kind": kind, "record_ids": json.dumps(list(record_ids))},
            )
        return dest

    def load(self, kind: str, key: str, record_ids: Sequence[str]) -> dict[str, list[Tensor]] | None:
        """The rows stored under ``key``, or None when absent or written for other records."""
        path = self.path(kind, key)
        if not path.is_file():
            return None
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            if meta.get("key") != key or json.loads(meta.get("record_ids", "[]")) != list(record_ids):
                log.warning("ignoring teacher cache file %s: written for other records", path)
                return None
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118 (not a dict)
        offsets = tensors.pop("offsets").tolist()
        return {name: [t[a:b] for a, b in _pairs(offsets)] for name, t in tensors.items()}


def _pairs(offsets: list[int]) -> Iterator[tuple[int, int]]:
    return itertools.pairwise(offsets)
