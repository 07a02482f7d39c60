"""``hooks``: materialise per-example gradients with Opacus' grad-sample hooks, then clip and sum.

Memory grows with ``batch x trainable parameters`` (one gradient per example per parameter); time is one backward
pass plus an einsum per layer. Best when few parameters are trainable (LoRA) or sequences are long relative to
layer width.

User-level: the per-example gradients of one user are summed (``index_add`` over the batch axis) before the norm;
memory adds ``users x trainable parameters``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from privtune.errors import TrainingError
from privtune.training.dp.engine import ENGINES, EPS, DPEngine, check_groups, group_sum, quiet_backward_hooks
from privtune.training.dp.samplers import check_private_trainable, register_extra_grad_samplers

if TYPE_CHECKING:
    import torch
    from torch import nn


_STALE = ("The DP hooks are bound to other modules than the ones being trained: attach the DP engine after "
          "wrapping the model (LoRA) and build the optimizer last.")


@ENGINES.register("hooks")
class HooksEngine(DPEngine):
    name = "hooks"

    def __init__(self, model: nn.Module, *, max_grad_norm: float):
        super().__init__(model, max_grad_norm=max_grad_norm)
        from opacus.grad_sample import GradSampleHooks

        register_extra_grad_samplers()
        check_private_trainable(model)
        # strict=False: Opacus' own check rejects every buffer; check_private_trainable rejects the harmful ones.
        self._hooks = GradSampleHooks(model, batch_first=True, loss_reduction="sum", strict=False)
        self._names = {id(p): n for n, p in model.named_parameters()}

    def accumulate(self, loss_per_example: torch.Tensor, groups: torch.Tensor | None = None) -> None:
        import torch

        n = loss_per_example.shape[0]
        units = check_groups(groups, n)
        try:
            with quiet_backward_hooks():
                loss_per_example.sum().backward()
        except ValueError as e:  # Opacus: a hooked layer saw no forward pass (hooks on modules no longer used)
            if "activations" not in str(e):
                raise
            raise TrainingError(_STALE) from None
        missing = [self._names.get(id(p), "?") for p in self.params if getattr(p, "grad_sample", None) is None]
        if missing:
            raise TrainingError(f"per-example gradients must exist for every trainable parameter. Found none for "
                                f"{len(missing)} of {len(self.params)} (e.g. {missing[0]}). {_STALE}")
        grads = [p.grad_sample if isinstance(p.grad_sample, torch.Tensor) else torch.cat(p.grad_sample)
                 for p in self.params]
        bad = [self._names.get(id(p), "?") for p, g in zip(self.params, grads) if g.shape[0] != n]
        if bad:
            raise TrainingError(f"per-example gradients must have one row per example ({n}). Found another "
                                f"batch dimension for {bad[0]}: a layer sees an input shared by the whole batch "
                                "(e.g. position ids built once per batch). Freeze that layer or use dp-lora.")
        if groups is not None:  # one gradient per user: the sum of its examples' gradients
            grads = [group_sum(g, groups, units) for g in grads]
        norms = torch.stack([g.reshape(units, -1).norm(2, dim=1) for g in grads], dim=1).norm(2, dim=1)
        coef = (self.max_grad_norm / (norms + EPS)).clamp(max=1.0)
        self._add([torch.einsum("i,i...->...", coef.to(g.dtype), g) for g in grads])
        self.stats.add(norms, coef, self.max_grad_norm)
        for p in self.params:
            p.grad_sample = None
            p.grad = None

    def close(self) -> None:
        super().close()
        self._hooks.cleanup()
