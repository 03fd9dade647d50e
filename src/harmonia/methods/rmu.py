"""RMU, Representation Misdirection for Unlearning (Li et al. 2024, WMDP, arXiv 2403.03218).

On forget data, one decoder layer's output activations are pulled toward a fixed random
direction ``steering_coeff * u/||u||`` (scrambling what later layers read there); on retain
data they are held at the frozen model's activations, with weight ``alpha`` (here
``retain_weight``). Only a few named weights train. Paper defaults for zephyr-7b: layer 7,
parameters ``mlp.down_proj`` of layers 5-7, steering coefficient 6.5, alpha 1200; both scale
with the model's activation norms, so tune them for other models.

Adaptive RMU (Dang et al. 2025, arXiv 2408.06223) sets the control vector's norm from the model
instead: ``adaptive_scale`` (their beta, 5 in their code) times the frozen model's mean activation
norm at the steered layer on the forget records, measured once before training. At 6.5 the
paper's fixed coefficient is a few percent of the norms of a 135M model's middle layers (~190 at
layer 17 of SmolLM2-135M): the forget term then asks for near-zero activations, which the retain
term (x1200) forbids, and nothing is unlearnt (docs/demo.md).

Layer and parameters are chosen by name pattern (a regular expression matching the end of a
dotted module/parameter name), not position, so the same config works under LoRA or DDP
wrappers, whose names add a prefix. The activations are captured by a forward hook.

Positions: WMDP applies both terms to every token of a raw-text passage. Our records are
chat-formatted, and the template's header (system turn, ``user`` tag) is the same token prefix
in every record, so its activations are identical in forget and retain rows and the two terms
would pull them in opposite directions. ``positions='record'`` (default) therefore uses the
non-padding tokens from the question on (question, prefill, answer and the template tokens
between them); ``'sequence'`` uses all non-padding tokens, as WMDP does.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator, model_validator

from harmonia.data.schema import ROLES, QARecord
from harmonia.errors import ConfigError
from harmonia.methods import losses
from harmonia.methods.base import Example, MethodContext, MethodParams, register_method
from harmonia.methods.encoding import encode_qa
from harmonia.methods.forget_retain import (
    RETAINED,
    Batch,
    ForgetRetainMethod,
    RetainParams,
    reference_batches,
    role_rows,
)
from harmonia.models.chat import render_prompt

ACT_MASK = "act_mask"
log = logging.getLogger(__name__)


class RMUParams(RetainParams):
    steering_coeff: float = Field(6.5, gt=0, description="norm of the control vector (fixed RMU)")
    adaptive_scale: float | None = Field(None, gt=0, description="Adaptive RMU: the control vector's norm is this "
                                         "multiple of the frozen model's mean activation norm on the forget records")
    retain_weight: float = Field(1200.0, ge=0, description="alpha: weight of the retain activation term")
    layer: str = Field(r"model\.layers\.7", description="regex of the decoder layer whose output is steered")
    trainable_params: list[str] = Field(default_factory=lambda: [r"model\.layers\.(5|6|7)\.mlp\.down_proj"],
                                        min_length=1, description="regexes of the parameters that train")
    seed: int = Field(0, description="seed of the control vector")
    positions: Literal["record", "sequence"] = "record"

    @field_validator("layer")
    @classmethod
    def _layer_regex(cls, v: str) -> str:
        _compile(v)
        return v

    @model_validator(mode="after")
    def _one_norm(self) -> RMUParams:
        if self.adaptive_scale is not None and "steering_coeff" in self.model_fields_set:
            raise ValueError("set steering_coeff (fixed RMU) or adaptive_scale (adaptive RMU), not both")
        return self

    @field_validator("trainable_params")
    @classmethod
    def _param_regexes(cls, v: list[str]) -> list[str]:
        for pattern in v:
            _compile(pattern)
        return v


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None


def name_matches(pattern: str, name: str, *, allow_suffix: bool = False) -> bool:
    """Does ``pattern`` match ``name`` whole, after an optional wrapper prefix ending in '.'?

    ``allow_suffix`` also accepts a trailing ``.anything`` (parameters of a matched module, e.g.
    ``.weight`` or LoRA's ``.lora_A.default.weight``).
    """
    tail = r"(?:\..+)?" if allow_suffix else ""
    return re.fullmatch(rf"(?:.+\.)?(?:{pattern}){tail}", name) is not None


def find_module(model: Any, pattern: str) -> torch.nn.Module:
    """The single module of ``model`` whose name matches ``pattern`` (see :func:`name_matches`)."""
    found = [(name, m) for name, m in model.named_modules() if name and name_matches(pattern, name)]
    if len(found) != 1:
        names = ", ".join(n for n, _ in found[:5]) or "none"
        raise ConfigError(f"method 'rmu' param 'layer': {pattern!r} must match exactly one module, "
                          f"matched {len(found)} ({names})")
    return found[0][1]


@contextlib.contextmanager
def captured_output(module: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect ``module``'s output hidden states (first element when it returns a tuple)."""
    outputs: list[torch.Tensor] = []

    def hook(_module: Any, _args: Any, output: Any) -> None:
        outputs.append(output[0] if isinstance(output, tuple) else output)

    handle = module.register_forward_hook(hook)
    try:
        yield outputs
    finally:
        handle.remove()


def template_header(tokenizer: Any) -> list[int]:
    """Token ids of the chat template before the question: the common prefix of two prompts."""
    a, b = (tokenizer(render_prompt(tokenizer, q), add_special_tokens=False)["input_ids"] for q in ("A", "B"))
    return a[: shared_prefix_length(a, b)]


def shared_prefix_length(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


@register_method
class RMU(ForgetRetainMethod):
    """Terms ``rmu_forget`` (MSE to the control vector) and ``rmu_retain`` (MSE to the frozen model).

    Both are mean squared errors over the hidden dimension, summed over positions and divided by
    the number of positions (units ``acts:forget``, ``acts:retained``).
    """

    name = "rmu"
    Params = RMUParams
    roles = ROLES
    default_mix: ClassVar[dict[str, float]] = {"forget": 1.0, "retain": 1.0}
    needs_reference = True
    forget_name = "rmu_forget"
    forget_unit = "acts:forget"
    retain_name = "rmu_retain"
    retain_unit = f"acts:{RETAINED}"

    def __init__(self, params: MethodParams, ctx: MethodContext) -> None:
        super().__init__(params, ctx)
        assert isinstance(params, RMUParams)
        self.rmu = params
        self._header = template_header(ctx.tokenizer) if params.positions == "record" else []
        self._control: torch.Tensor | None = None

    def configure_trainable(self, model: Any) -> None:
        find_module(model, self.rmu.layer)  # fail before training, not at the first step
        for name, param in model.named_parameters():
            if not any(name_matches(p, name, allow_suffix=True) for p in self.rmu.trainable_params):
                # only freeze, never unfreeze: under LoRA the matched base weights stay frozen
                # and their adapters train
                param.requires_grad_(False)
        if not any(param.requires_grad for param in model.parameters()):
            raise ConfigError(f"method 'rmu' param 'trainable_params': {self.rmu.trainable_params} match no "
                              "trainable parameter (check the names, train.lora and train.train_top_layers)")

    def control_vector(self, hidden: int) -> torch.Tensor:
        """The run's fixed control vector ``[hidden]`` (float32, CPU), drawn on first use."""
        if self._control is None:
            if self.rmu.adaptive_scale is not None:
                raise RuntimeError("adaptive RMU: prepare() measures the control vector's norm before training")
            self._control = self._draw(hidden, self.rmu.steering_coeff)
        return self._control

    def _draw(self, hidden: int, norm: float) -> torch.Tensor:
        return losses.rmu_control_vector(hidden, norm, torch.Generator().manual_seed(self.rmu.seed))

    def prepare(self, records: list[QARecord]) -> list[QARecord]:
        records = super().prepare(records)
        if self.rmu.adaptive_scale is not None:
            norm, hidden = self.forget_activation_norm([r for r in records if r.role == "forget"])
            self._control = self._draw(hidden, self.rmu.adaptive_scale * norm)
            log.info("adaptive RMU: forget activation norm %.4g at %s, control norm %.4g",
                     norm, self.rmu.layer, self.rmu.adaptive_scale * norm)
        return records

    @torch.no_grad()
    def forget_activation_norm(self, forget: list[QARecord]) -> tuple[float, int]:
        """Mean L2 norm of the frozen model's steered-layer activations over the positions of the
        forget records that the forget term reads, and the hidden size."""
        if not forget:
            raise ConfigError("adaptive RMU measures its control norm on forget records; there are none")
        total, count, hidden = 0.0, 0, 0
        examples = {r.id: self.encode_record(r) for r in forget}
        for reference, _, batch in reference_batches(self.ctx, examples):
            acts = self.activations(reference, batch)
            mask = batch[ACT_MASK].bool()
            total += float(acts.float().norm(dim=-1)[mask].double().sum())
            count, hidden = count + int(mask.sum()), acts.shape[-1]
        return total / count, hidden

    def encode_record(self, record: QARecord) -> Example:
        example = encode_qa(record, self.ctx)
        ids = example["input_ids"]
        # skip only the header tokens this record really starts with
        start = shared_prefix_length(ids, self._header)
        example[ACT_MASK] = [0] * start + [1] * (len(ids) - start)
        return example

    def units(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = super().units(batch)
        positions = batch[ACT_MASK].sum(dim=1)
        out["acts:forget"] = positions[role_rows(batch["role_id"], ("forget",))].sum()
        if self.retain_roles:
            out[f"acts:{RETAINED}"] = positions[role_rows(batch["role_id"], self.retain_roles)].sum()
        return out

    def activations(self, model: Any, rows: Batch) -> torch.Tensor:
        """Output hidden states ``[B, T, H]`` of the steered layer on ``rows``."""
        with captured_output(find_module(model, self.rmu.layer)) as outputs:
            model(input_ids=rows["input_ids"], attention_mask=rows["attention_mask"], use_cache=False)
        if len(outputs) != 1:
            raise RuntimeError(f"layer {self.rmu.layer!r} ran {len(outputs)} times in one forward pass")
        return outputs[0]

    def forget_sum(self, model: Any, rows: Batch) -> torch.Tensor:
        acts = self.activations(model, rows)
        target = self.control_vector(acts.shape[-1]).to(acts.device)
        return losses.activation_mse_sum(acts, target, rows[ACT_MASK].bool())

    def retain_sum(self, model: Any, rows: Batch) -> torch.Tensor:
        acts = self.activations(model, rows)
        with self.ctx.reference_model() as reference:
            frozen = self.activations(reference, rows)
        return losses.activation_mse_sum(acts, frozen, rows[ACT_MASK].bool())
