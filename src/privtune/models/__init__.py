"""Base models: the embedded default (a small GPT-NeoX privtune pre-trains itself), any Hugging Face model by hub id
or local directory, and tiny random models for tests."""

from privtune.models.loading import LoadedModel, load_model, lora_target_modules, resolve_device

__all__ = ["LoadedModel", "load_model", "lora_target_modules", "resolve_device"]
