"""A tiny randomly initialised Llama with a real tokenizer: for tests of logic, built in seconds."""

from __future__ import annotations

from typing import Any

import torch


def build_tiny_model(tokenizer: Any, *, seed: int = 0, hidden_size: int = 32, num_layers: int = 2,
                     num_heads: int = 4, intermediate_size: int = 64) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.eval()
    return model
