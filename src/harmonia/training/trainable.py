"""Which parameters train: LoRA adapters, the top N decoder layers, or everything."""

from __future__ import annotations

import re
from typing import Any

from harmonia.config import TrainConfig
from harmonia.errors import ConfigError

_LAYER_INDEX = re.compile(r"\.layers\.(\d+)\.")


def num_decoder_layers(model: Any) -> int:
    indices = {int(m.group(1)) for name, _ in model.named_parameters() if (m := _LAYER_INDEX.search(name))}
    if not indices:
        raise ConfigError("train.train_top_layers: this model has no '.layers.N.' parameters")
    return max(indices) + 1


def apply_trainable(model: Any, cfg: TrainConfig) -> Any:
    """Wrap with LoRA and/or freeze all but the top layers; returns the model to train."""
    if cfg.lora is not None:
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model

        layers = None
        if cfg.train_top_layers:
            n = num_decoder_layers(model)
            layers = list(range(max(n - cfg.train_top_layers, 0), n))
        peft_cfg = PeftLoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                                  target_modules=cfg.lora.target_modules, layers_to_transform=layers,
                                  task_type="CAUSAL_LM")
        return get_peft_model(model, peft_cfg)
    if cfg.train_top_layers:
        n = num_decoder_layers(model)
        first = max(n - cfg.train_top_layers, 0)
        for name, param in model.named_parameters():
            m = _LAYER_INDEX.search(name)
            # The final norm sits above the top layer, so it trains with it; embeddings do not
            # (they are tied to the LM head in small models and carry every token's meaning).
            param.requires_grad = bool(m and int(m.group(1)) >= first) or name.endswith("model.norm.weight")
    return model


def trainable_parameter_count(model: Any) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
