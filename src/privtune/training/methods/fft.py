"""``fft``: full fine-tuning — every parameter trains (tied weights once)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from privtune.training.methods.base import METHODS, Method

if TYPE_CHECKING:
    from torch import nn


@METHODS.register("fft")
class FullFineTuning(Method):
    name = "fft"
    default_lr = 5e-4

    def prepare(self, model: nn.Module, *, cfg: Any, task: str) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(True)
        return model
