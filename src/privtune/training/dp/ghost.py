"""``ghost``: ghost clipping (Li et al. 2022; Bu et al. 2023) via Opacus' fast-gradient-clipping hooks.

A first backward pass computes each example's gradient norm without materialising per-example gradients (for a
linear layer ``||sum_t a_t b_t^T||_F^2 = sum_{t,s} (a_t.a_s)(b_t.b_s)``); a second backward pass of
``sum_i c_i L_i`` with ``c_i = min(1, C / ||g_i||)`` yields the clipped sum directly. Memory stays close to
non-private training; time is about two backward passes. Tied weights (Gemma's LM head) are not supported by Opacus'
ghost norms: use ``hooks`` there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from privtune.errors import TrainingError
from privtune.training.dp.engine import ENGINES, DPEngine, quiet_backward_hooks
from privtune.training.dp.samplers import check_private_trainable, register_extra_grad_samplers

if TYPE_CHECKING:
    import torch
    from torch import nn


@ENGINES.register("ghost")
class GhostEngine(DPEngine):
    name = "ghost"

    def __init__(self, model: nn.Module, *, max_grad_norm: float):
        super().__init__(model, max_grad_norm=max_grad_norm)
        from opacus.grad_sample import GradSampleHooksFastGradientClipping

        register_extra_grad_samplers()
        check_private_trainable(model)
        if len(self.params) != sum(p.requires_grad for _, p in model.named_parameters(remove_duplicate=False)):
            raise TrainingError("`--dp-engine ghost` must not be used with tied trainable weights. Found a model "
                                "whose LM head shares the embedding matrix. Use --dp-engine hooks.")
        self._hooks = GradSampleHooksFastGradientClipping(model, batch_first=True, loss_reduction="sum",
                                                          strict=False, max_grad_norm=self.max_grad_norm,
                                                          use_ghost_clipping=True)

    def accumulate(self, loss_per_example: torch.Tensor) -> None:
        import torch

        self._hooks.enable_hooks()
        with quiet_backward_hooks():
            loss_per_example.sum().backward(retain_graph=True)
        norms = self._hooks.get_norm_sample()
        coef = self._hooks.get_clipping_coef()
        for p in self.params:
            p.grad = None
        self._hooks.disable_hooks()
        with quiet_backward_hooks():
            (loss_per_example * coef.detach().to(loss_per_example.dtype)).sum().backward()
        self._hooks.enable_hooks()
        self._add([p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params])
        self.stats.add(norms, coef, self.max_grad_norm)
        for p in self.params:
            p.grad = None
            p.grad_sample = None
            if hasattr(p, "_norm_sample"):
                del p._norm_sample

    def close(self) -> None:
        super().close()
        self._hooks.cleanup()
