"""Fine-tuning: methods (fft, lora, dp-fft, dp-lora), the shared trainer, checkpoints and run directories.

    from privtune.training import train, resume, load_trained
    run = train(data="data/cs", method="dp-lora", model="embedded", epsilon=8, out="runs/dp-lora")
    trained = load_trained("runs/dp-lora")          # .model, .tokenizer, .record, .load_base()

Names are imported lazily so that ``privtune --help`` does not import torch.
"""

from __future__ import annotations

from typing import Any

from privtune.training.config import TrainConfig

_LAZY = {"train": "run", "resume": "run", "load_trained": "run", "read_record": "run", "RunResult": "run",
         "TrainedRun": "run", "METHODS": "methods", "get_method": "methods", "ENGINES": "dp"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(name)


__all__ = ["TrainConfig", *_LAZY]
