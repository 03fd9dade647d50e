"""Model presets: hub ids and the settings each family needs (dtype, LoRA targets, system turn).

A preset name is a valid model spec (``harmonia unlearn run.yaml model.spec=llama-3.2-3b-instruct``).
Presets name hub ids, so they need the network (or a local Hugging Face cache) the first time.

The chat templates differ in how they treat a missing system turn, which matters because the
teacher's instruction lives there and the student sees the template's default:

- SmolLM2 injects "You are a helpful AI assistant named SmolLM, trained by Hugging Face";
- Llama 3.x always writes a system turn with "Cutting Knowledge Date" / "Today Date" lines and
  appends a given system message after them;
- Qwen2.5 injects "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";
- Zephyr writes no system turn unless one is given.

``harmonia.models.chat.render_prompt`` always goes through the tokenizer's own template, so each
family gets its own behaviour; ``tests/test_models.py`` checks it on the tokenizers available
offline (the embedded SmolLM2). The others are documented here, not tested, because their
tokenizer files cannot be fetched in this offline environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Preset:
    hub_id: str
    dtype: str = "bfloat16"
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    default_system: str = "none"
    notes: str = ""
    accelerate: str = "configs/accelerate/ddp.yaml"
    tags: tuple[str, ...] = field(default_factory=tuple)


PRESETS: dict[str, Preset] = {
    "llama-3.2-1b-instruct": Preset("meta-llama/Llama-3.2-1B-Instruct", default_system="date header",
                                    notes="gated on the hub: accept the licence and log in first"),
    "llama-3.2-3b-instruct": Preset("meta-llama/Llama-3.2-3B-Instruct", default_system="date header",
                                    notes="MUSE-Books model of the method's predecessor (DUET)"),
    "qwen2.5-0.5b-instruct": Preset("Qwen/Qwen2.5-0.5B-Instruct", default_system="Qwen identity"),
    "qwen2.5-1.5b-instruct": Preset("Qwen/Qwen2.5-1.5B-Instruct", default_system="Qwen identity"),
    "qwen2.5-3b-instruct": Preset("Qwen/Qwen2.5-3B-Instruct", default_system="Qwen identity"),
    "qwen2.5-7b-instruct": Preset("Qwen/Qwen2.5-7B-Instruct", default_system="Qwen identity",
                                  accelerate="configs/accelerate/fsdp.yaml"),
    "zephyr-7b-beta": Preset("HuggingFaceH4/zephyr-7b-beta", default_system="none",
                             notes="WMDP-Cyber model of the method's predecessor (DUET)",
                             accelerate="configs/accelerate/fsdp.yaml"),
}


def preset_hub_id(spec: str) -> str | None:
    preset = PRESETS.get(spec.lower())
    return preset.hub_id if preset is not None else None
