"""``rgp`` and ``dp-rgp``: reparametrized gradient perturbation (Yu et al. 2021, ICML; rank 1 in EW-Tune, Behnia
et al. 2022).

Every step ``t``, each reparametrized weight ``W`` (``d x p``) gets gradient carriers ``L`` (``d x r``) and ``R``
(``r x p``) by ``K`` power iterations (:func:`privtune.training.rgp.decompose`); the forward pass runs
``W = L R + (W - L R).detach()`` — the same function of the input, bit for bit (:class:`~privtune.training.rgp.
RGPLinear`). DP-SGD then treats the carriers as the trainable parameters: per-example gradients of ``L`` and ``R``
(small linear maps, so any DP engine computes them), one clipping norm per example across all carriers and the
classifier head, Gaussian noise ``N(0, sigma^2 C^2)`` on every coordinate of the clipped sum, division by the
expected batch. The noisy carrier gradients are mapped back to ``dW = dL R + L dR - L (L^T dL) R``, and AdamW updates
``W`` (and the head) with it. The privacy analysis is DP-SGD's: one Poisson-subsampled Gaussian mechanism per step,
on the carriers' gradient; the carriers themselves are computed from already-released weights and public
randomness, so they cost nothing.

Choices (the paper leaves them open or the authors' code differs from its text), and why:

- **Carriers from the historical update** (``--rgp-carriers history``, default): the target of the power method is
  ``W_t - W_0``, the update accumulated since the run started (``W_0`` = the base model's weight), as the paper
  motivates (the top subspace of past updates predicts the gradient's; optimal for linear regression). At step 1,
  and for any layer whose update is still zero, the target is ``W_t`` itself. ``--rgp-carriers weight`` always
  decomposes ``W_t``, as the authors' released BERT code does (the setting EW-Tune builds on).
- **Power iterations** ``--power-iters K`` (default 1, the authors' setting) from a fresh Gaussian start each step;
  the start is drawn from a generator seeded by ``(seed, step)``, so carriers are a function of the weights and the
  step alone, and a resumed run recomputes exactly the carriers of an uninterrupted one.
- **Orthonormalisation** by reduced QR (Householder) of ``M R`` then of ``M^T L``: the same subspaces as the
  authors' Gram-Schmidt, numerically stable, and orthonormal even for a rank-deficient target.
- **Which layers**: every linear layer of attention and MLP blocks (the layers LoRA adapts by default: query, key,
  value, attention output, MLP in and out), as the authors reparametrize attention and feed-forward weights.
- **Everything else is frozen**: embeddings, LayerNorm, biases and (BERT) the pooler, as in the authors' code;
  for causal LMs the LM head (often tied to the embeddings) too.
- **The classifier head** (``classifier``/``score`` modules, ``--task classification``) trains in full, not
  reparametrized (it is already low-rank: ``n_classes x hidden``), and its per-example gradient is clipped
  *jointly* with the carriers — one norm per example across carriers and head, so that the sensitivity of the
  whole released gradient is ``C`` and the accountant's analysis holds as is. The authors additionally scale the
  head's per-example gradient by 1/10 before clipping; privtune does not (it is a re-weighting of the clipping
  budget whose value was tuned for their setting), which keeps the head's treatment identical to dp-lora's.
- **Checkpoints** hold the updated tensors (``W`` of every reparametrized layer, the head) and, in ``history``
  mode, the anchors ``W_0``: carriers are recomputed from these at the next step, so resume is exact.
- **Saved model**: the plain Hugging Face model (the carriers are training machinery and are not saved).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from privtune.training.methods.base import METHODS, Method

if TYPE_CHECKING:
    import torch
    from torch import nn

#: modules trained in full for sequence classification (peft's choice for its SEQ_CLS task, the same as dp-lora)
HEAD_NAMES = ("classifier", "score")
ANCHOR = ".anchor"


def carrier_generator(seed: int, step: int) -> "torch.Generator":
    import torch

    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 5, int(step)])
    return torch.Generator().manual_seed(int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)))


@METHODS.register("rgp")
class RGP(Method):
    name = "rgp"
    default_lr = 1e-3

    def __init__(self) -> None:
        self.rank, self.power_iters, self.carriers, self.seed = 1, 1, "history", 0

    # -- set-up -------------------------------------------------------------------------------------------------
    def prepare(self, model: nn.Module, *, cfg: Any, task: str) -> nn.Module:
        from privtune.training.rgp.layers import check_rank, target_linear_layers, wrap

        self.rank, self.power_iters = int(cfg.rgp_rank), int(cfg.rgp_power_iters)
        self.carriers, self.seed = cfg.rgp_carriers, int(cfg.seed)
        names = target_linear_layers(model)
        check_rank(model, names, self.rank)
        for p in model.parameters():
            p.requires_grad_(False)
        if task == "classification":
            for name, p in model.named_parameters():
                if any(part in HEAD_NAMES for part in name.split(".")):
                    p.requires_grad_(True)
        for layer in wrap(model, names, self.rank):
            if self.carriers == "history":
                layer.anchor = layer.base.weight.detach().clone()
        return model

    # -- the step -----------------------------------------------------------------------------------------------
    def before_step(self, model: nn.Module, *, step: int) -> None:
        """Recompute every layer's carriers (see the module docstring)."""
        import torch

        from privtune.training.rgp.carriers import decompose
        from privtune.training.rgp.layers import rgp_layers

        gen = carrier_generator(self.seed, step)
        with torch.no_grad():
            for _, layer in rgp_layers(model):
                w = layer.base.weight
                target = w
                if layer.anchor is not None:
                    delta = w - layer.anchor
                    if bool(delta.any()):
                        target = delta
                left, right = decompose(target, rank=layer.rank, iters=self.power_iters, generator=gen)
                layer.set_carriers(left, right)

    def before_update(self, model: nn.Module) -> None:
        """``W.grad = dL R + L dR - L (L^T dL) R`` from the carriers' (noisy) gradients; carrier gradients cleared."""
        import torch

        from privtune.training.rgp.carriers import reconstruct
        from privtune.training.rgp.layers import rgp_layers

        with torch.no_grad():
            for _, layer in rgp_layers(model):
                gl, gr = layer.left.weight.grad, layer.right.weight.grad
                if gl is None or gr is None:
                    layer.base.weight.grad = None
                    continue
                left, right = layer.left.weight.float(), layer.right.weight.float()
                w = layer.base.weight
                w.grad = reconstruct(gl.float(), gr.float(), left, right).to(w.dtype)
                layer.left.weight.grad = layer.right.weight.grad = None

    # -- what trains, what is saved -----------------------------------------------------------------------------
    def _updated(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        """The tensors the optimizer updates, by name: reparametrized weights, then trainable non-carriers."""
        from privtune.training.rgp.layers import rgp_layers

        out = [(f"{name}.base.weight", layer.base.weight) for name, layer in rgp_layers(model)]
        carriers = {id(p) for _, layer in rgp_layers(model) for p in (layer.left.weight, layer.right.weight)}
        seen = {id(p) for _, p in out}
        for name, p in model.named_parameters():
            if p.requires_grad and id(p) not in carriers and id(p) not in seen:
                seen.add(id(p))
                out.append((name, p))
        return out

    def optimizer_params(self, model: nn.Module) -> list[nn.Parameter]:
        return [p for _, p in self._updated(model)]

    def trainable_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        from privtune.training.rgp.layers import rgp_layers

        state = {n: p.detach().cpu().clone() for n, p in self._updated(model)}
        for name, layer in rgp_layers(model):
            if layer.anchor is not None:
                state[name + ANCHOR] = layer.anchor.detach().cpu().clone()
        return state

    def load_trainable_state(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        import torch

        from privtune.training.rgp.layers import rgp_layers

        tensors = dict(self._updated(model))
        tensors.update({name + ANCHOR: layer.anchor for name, layer in rgp_layers(model) if layer.anchor is not None})
        missing = sorted(set(state) ^ set(tensors))
        if missing:
            raise KeyError(f"checkpoint and model disagree on RGP tensors: {missing[:3]}")
        with torch.no_grad():
            for n, t in state.items():
                tensors[n].copy_(t.to(tensors[n].device))

    def save(self, model: nn.Module, out: Path) -> None:
        from privtune.training.rgp.layers import rewrap, unwrap

        found = unwrap(model)
        try:
            model.save_pretrained(out, safe_serialization=True)
        finally:
            rewrap(model, found)

    def record_fields(self, model: nn.Module) -> dict[str, Any]:
        from privtune.training.rgp.layers import rgp_layers

        layers = list(rgp_layers(model))
        carriers = {id(p) for _, la in layers for p in (la.left.weight, la.right.weight)}
        return {"rgp": {
            "rank": self.rank, "power_iters": self.power_iters, "carriers": self.carriers, "layers": len(layers),
            "carrier_params": sum(la.left.weight.numel() + la.right.weight.numel() for _, la in layers),
            "updated_params": sum(p.numel() for _, p in self._updated(model)),
            "full_params": sorted(n for n, p in model.named_parameters() if p.requires_grad and id(p) not in carriers),
        }}


@METHODS.register("dp-rgp")
class DPRGP(RGP):
    name = "dp-rgp"
    private = True
    default_lr = 1e-3
