"""``dp-fft``: full fine-tuning with DP-SGD (per-example clipping + Gaussian noise, Poisson sampling)."""

from __future__ import annotations

from privtune.training.methods.base import METHODS
from privtune.training.methods.fft import FullFineTuning


@METHODS.register("dp-fft")
class DPFullFineTuning(FullFineTuning):
    name = "dp-fft"
    private = True
    default_lr = 1e-3
