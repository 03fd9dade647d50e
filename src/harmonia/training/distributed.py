"""Frozen models (reference, teacher copy) under the distributed engines accelerate drives.

A frozen copy must be sharded like the student: under DeepSpeed ZeRO-3 and FSDP a full replica on
every GPU is what the user left one GPU to avoid. With LoRA none of this is needed: the teacher is
the student's own base weights with the adapter disabled.
"""

from __future__ import annotations

import copy
from typing import Any

from accelerate.utils import DistributedType


def prepare_frozen(accelerator: Any, model: Any) -> Any:
    """Place (and, where the student is sharded, shard) a frozen model for inference."""
    model.eval().requires_grad_(False)
    kind = accelerator.distributed_type
    if kind == DistributedType.DEEPSPEED:
        return _deepspeed_inference(accelerator, model)
    if kind == DistributedType.FSDP:
        if getattr(accelerator, "is_fsdp2", False):
            return _fsdp2_inference(model)
        # FSDP1: accelerate wraps any model with the run's FSDP plugin; frozen weights shard too.
        return accelerator.prepare_model(model)
    return model.to(accelerator.device)


def _deepspeed_inference(accelerator: Any, model: Any) -> Any:
    """Wrap with a DeepSpeed engine without an optimiser, reusing the run's ZeRO stage 3 sharding."""
    import deepspeed

    config = copy.deepcopy(accelerator.state.deepspeed_plugin.deepspeed_config)
    config.pop("optimizer", None)
    config.pop("scheduler", None)
    if config.get("zero_optimization", {}).get("stage") != 3:
        # Stages 1-2 shard optimiser state only, which a frozen model does not have.
        config["zero_optimization"] = {"stage": 0}
    engine, *_ = deepspeed.initialize(model=model, config=config)
    engine.eval()
    return engine


def _fsdp2_inference(model: Any) -> Any:
    from torch.distributed.fsdp import fully_shard

    for layer in _decoder_layers(model):
        fully_shard(layer)
    fully_shard(model)
    return model


def _decoder_layers(model: Any) -> list[Any]:
    base = getattr(model, "model", model)
    layers = getattr(base, "layers", None)
    if layers is None:
        raise ValueError("cannot find the decoder layers (model.model.layers) to shard the frozen copy")
    return list(layers)
