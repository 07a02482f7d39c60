"""``fft``: full fine-tuning — every parameter trains (tied weights once)."""

from __future__ import annotations

from typing import Any

from torch import nn

from privtune.training.methods.base import METHODS, Method


@METHODS.register("fft")
class FullFineTuning(Method):
    name = "fft"
    default_lr = 5e-4

    def prepare(self, model: nn.Module, *, cfg: Any, task: str) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(True)
        return model
