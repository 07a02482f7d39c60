"""``dp-lora``: LoRA adapters trained with DP-SGD (Yu et al. 2022): only adapter gradients are clipped and noised.

Order matters: the adapters are inserted first, then the DP engine attaches its hooks to the wrapped model, then
the optimizer is built over the wrapped model's trainable parameters. The trainer checks after the first step that
this held (per-example gradients produced and clipped, adapters moved).
"""

from __future__ import annotations

from privtune.training.methods.base import METHODS
from privtune.training.methods.lora import LoRA


@METHODS.register("dp-lora")
class DPLoRA(LoRA):
    name = "dp-lora"
    private = True
    default_lr = 5e-3
