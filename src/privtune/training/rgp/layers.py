"""The reparametrized linear layer of RGP and the functions that put it into (and take it out of) a model.

:class:`RGPLinear` wraps a ``nn.Linear`` ``y = x W^T + b`` and, in training mode, computes

    y = x W^T + b + left(right(x)) - stopgrad_params(left(right(x)))

where ``left`` (weight ``L``, ``d x r``) and ``right`` (weight ``R``, ``r x p``) are bias-free ``nn.Linear`` carriers
and the subtracted term is the same product with ``L`` and ``R`` detached. Its value is *bit-identical* to the
layer's own output (the two carrier terms are the same operations on the same numbers and cancel exactly), and its
gradients are those of ``W = L R + (W - L R).detach()``: the input gradient is ``dy W`` (``W`` itself, not
``W + L R``), and ``L`` and ``R`` receive ``G R^T`` and ``L^T G``. Because the carriers are ordinary linear modules,
any per-example gradient engine (Opacus hooks, ghost clipping) handles them unchanged. In evaluation mode the layer
is the plain linear map.
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from privtune.errors import ConfigError, fmt


class RGPLinear(nn.Module):
    """``base`` (frozen, updated by the optimizer from reconstructed gradients) plus rank-``r`` carriers."""

    def __init__(self, base: nn.Linear, rank: int):
        super().__init__()
        self.base = base
        d, p = base.weight.shape
        kw = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.left = nn.Linear(rank, d, bias=False, **kw)
        self.right = nn.Linear(p, rank, bias=False, **kw)
        with torch.no_grad():
            self.left.weight.zero_()
            self.right.weight.zero_()
        # W_0, the reference of the historical update W_t - W_0 (set by the method; not part of the saved model)
        self.register_buffer("anchor", None, persistent=False)

    @property
    def rank(self) -> int:
        return self.left.weight.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if not self.training:
            return y
        carried = self.left(self.right(x))
        constant = F.linear(F.linear(x, self.right.weight.detach()), self.left.weight.detach())
        return y + (carried - constant)

    def set_carriers(self, left: torch.Tensor, right: torch.Tensor) -> None:
        with torch.no_grad():
            self.left.weight.copy_(left.to(self.left.weight.dtype))
            self.right.weight.copy_(right.to(self.right.weight.dtype))


def target_linear_layers(model: nn.Module) -> list[str]:
    """Full names of the layers RGP reparametrizes: every linear layer of attention and MLP blocks — the layers
    LoRA adapts by default (:func:`privtune.models.loading.lora_target_modules`), never heads or embeddings."""
    from privtune.models.loading import lora_target_modules

    targets = lora_target_modules(model)
    out = []
    for name, mod in model.named_modules():
        if not any(name == t or name.endswith("." + t) for t in targets):
            continue
        if type(mod) is not nn.Linear:
            raise ConfigError(fmt("--method", "rgp/dp-rgp on a model whose block layers are nn.Linear", name,
                                  f"`{name}` is a {type(mod).__name__}; use dp-lora or dp-fft for this model."))
        out.append(name)
    return out


def check_rank(model: nn.Module, names: list[str], rank: int) -> None:
    """``rank`` must not exceed the smaller dimension of any reparametrized weight."""
    for name in names:
        d, p = model.get_submodule(name).weight.shape
        if rank > min(d, p):
            raise ConfigError(fmt("--rank", f"at most {min(d, p)}, the smaller dimension of the {d}x{p} weight of "
                                            f"`{name}`", rank, "Lower --rank."))


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def wrap(model: nn.Module, names: list[str], rank: int) -> list[RGPLinear]:
    layers = []
    for name in names:
        layer = RGPLinear(model.get_submodule(name), rank)
        _set(model, name, layer)
        layers.append(layer)
    return layers


def rgp_layers(model: nn.Module) -> Iterator[tuple[str, RGPLinear]]:
    for name, mod in model.named_modules():
        if isinstance(mod, RGPLinear):
            yield name, mod


def unwrap(model: nn.Module) -> list[tuple[str, RGPLinear]]:
    """Put the plain linear layers back (for ``save_pretrained``); returns what :func:`rewrap` needs."""
    found = list(rgp_layers(model))
    for name, layer in found:
        _set(model, name, layer.base)
    return found


def rewrap(model: nn.Module, found: list[tuple[str, RGPLinear]]) -> None:
    for name, layer in found:
        _set(model, name, layer)
