"""``ghost``: ghost clipping (Li et al. 2022; Bu et al. 2023) via Opacus' fast-gradient-clipping hooks.

A first backward pass computes each example's gradient norm without materialising per-example gradients (for a
linear layer ``||sum_t a_t b_t^T||_F^2 = sum_{t,s} (a_t.a_s)(b_t.b_s)``); a second backward pass of
``sum_i c_i L_i`` with ``c_i = min(1, C / ||g_i||)`` yields the clipped sum directly. Memory stays close to
non-private training; time is about two backward passes. Tied weights (Gemma's LM head) are not supported by Opacus'
ghost norms: use ``hooks`` there.

User-level (``groups``): the first pass computes each *user's* norm. Opacus' ghost norm samplers (linear,
embedding) see the user's examples regrouped into one sequence (:func:`~privtune.training.dp.engine.regroup`), so
their norms include the cross terms between a user's examples; the per-example gradients of the other layers are
summed per user before their norm. The second pass is the same, with each example weighted by its user's
coefficient. The per-engine sampler tables are copies: Opacus' global registries are not touched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from privtune.errors import TrainingError
from privtune.training.dp.engine import (ENGINES, EPS, DPEngine, Regrouping, check_groups, group_sum,
                                         quiet_backward_hooks)
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
        self._groups: torch.Tensor | None = None
        self._regrouping: Regrouping | None = None
        self._units = 0
        self._group_samplers(model)

    # -- user-level: samplers that see users ------------------------------------------------------------------------
    def _group_samplers(self, model: nn.Module) -> None:
        from opacus.grad_sample.functorch import ft_compute_per_sample_gradient

        h = self._hooks
        norm = dict(type(h).NORM_SAMPLERS)
        grad = dict(type(h).GRAD_SAMPLERS)
        for m in model.modules():  # layers Opacus handles by functorch get an explicit (wrapped) entry
            if any(p.requires_grad for p in m.parameters(recurse=False)) and type(m) not in norm \
                    and type(m) not in grad:
                grad[type(m)] = ft_compute_per_sample_gradient
        h.NORM_SAMPLERS = {t: self._grouped_norms(f) for t, f in norm.items()}
        h.GRAD_SAMPLERS = {t: self._grouped_grads(f) for t, f in grad.items()}

    def _grouped_norms(self, fn):
        def wrapped(module, activations, backprops):
            rg = self._regrouping
            if rg is None:
                return fn(module, activations, backprops)
            import torch

            B, G = backprops.shape[0], self._units
            acts = [a if not isinstance(a, torch.Tensor) or a.dim() == 0 or a.shape[0] != B else
                    (rg(a.unsqueeze(-1)).squeeze(-1) if a.dim() == backprops.dim() - 1 else rg(a))
                    for a in activations]
            out = fn(module, acts, rg(backprops))
            # Opacus stacks every parameter's norms over the batch axis: pad the users' norms to B rows
            return {p: torch.cat([ns, ns.new_zeros(B - G)]) for p, ns in out.items()}
        return wrapped

    def _grouped_grads(self, fn):
        def wrapped(module, activations, backprops):
            out = fn(module, activations, backprops)
            if self._groups is None:
                return out
            return {p: group_sum(gs, self._groups, self._units) for p, gs in out.items()}  # rows G.. stay zero
        return wrapped

    def accumulate(self, loss_per_example: torch.Tensor, groups: torch.Tensor | None = None) -> None:
        import torch

        n = int(loss_per_example.shape[0])
        units = check_groups(groups, n)
        self._groups = None if groups is None else groups.to(loss_per_example.device)
        self._regrouping = None if self._groups is None else Regrouping.of(self._groups, units)
        self._units = units
        self._hooks.enable_hooks()
        try:
            with quiet_backward_hooks():
                loss_per_example.sum().backward(retain_graph=True)
            norms = self._hooks.get_norm_sample()[:units]
        finally:
            self._groups = self._regrouping = None
        coef = (self.max_grad_norm / (norms + EPS)).clamp(max=1.0)
        coef_ex = coef if groups is None else coef[groups.to(coef.device)]
        for p in self.params:
            p.grad = None
        self._hooks.disable_hooks()
        with quiet_backward_hooks():
            (loss_per_example * coef_ex.detach().to(loss_per_example.dtype)).sum().backward()
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
