"""Model loading by one spec string, chat formatting, and LoRA."""

from harmonia.models.loading import EMBEDDED_MODEL, LoadedModel, load_model, load_tokenizer

__all__ = ["EMBEDDED_MODEL", "LoadedModel", "load_model", "load_tokenizer"]
