"""What every DP engine refuses in a model, or verifies on its first forward pass, before any clipped sum is formed.

The sensitivity bound of DP-SGD holds when example ``i``'s contribution to the step is ``clip_C(grad L_i)`` and
nothing else. Two things in a model break it without any error from autograd:

* a layer whose output for one example depends on the others in the batch (BatchNorm in training mode normalises by
  batch statistics, trainable or frozen): then ``grad L_i`` depends on other examples, and removing one example
  changes every other example's gradient. Running statistics (BatchNorm, InstanceNorm with
  ``track_running_stats``) are also averages over private examples, updated without noise and saved with the model.
  :func:`refuse_example_mixing` refuses these layers, as Opacus' ``ModuleValidator`` does.
* a trainable parameter that enters the computation outside the module that owns it (``h @ emb.weight.T``): every
  engine captures per-example gradients through the modules it hooks, so that part of the gradient is dropped from
  the sum (``bk``, ``hooks``) or from the norm (``ghost``). :class:`OwnerUseCheck` watches the first forward pass in
  training mode (a ``TorchFunctionMode`` sees every operation on a parameter) and refuses the model. A weight tied
  through modules (an ``nn.Linear`` head whose ``weight`` *is* the embedding's) is used inside an owner both times
  and is handled by the engines.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from privtune.errors import TrainingError, fmt

if TYPE_CHECKING:
    from torch.utils.hooks import RemovableHandle


def refuse_example_mixing(model: nn.Module) -> None:
    """Refuse layers that mix examples or keep statistics of the batch, trainable or frozen (the trainer puts the
    model in training mode at every step)."""
    for name, mod in model.named_modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            raise TrainingError(fmt(name or type(mod).__name__, "free of layers that mix examples in a DP run",
                                    type(mod).__name__,
                                    "In training mode it normalises each example by statistics of the whole batch, "
                                    "trainable or frozen, which breaks the per-example sensitivity bound. Replace it "
                                    "with GroupNorm or LayerNorm."))
        if isinstance(mod, nn.modules.instancenorm._InstanceNorm) and mod.track_running_stats:
            raise TrainingError(fmt(name or type(mod).__name__, "free of running statistics in a DP run",
                                    f"{type(mod).__name__}(track_running_stats=True)",
                                    "Its running statistics average private examples without noise and are saved "
                                    "with the model. Set track_running_stats=False or use GroupNorm."))


def outside_use_error(name: str, found: str) -> TrainingError:
    return TrainingError(fmt(name, "used only through the module that owns it in a DP run", found,
                             "The DP engine captures per-example gradients through modules, so this part of the "
                             "gradient would escape clipping. Call the module instead (tie a head as "
                             "`head.weight = emb.weight` and call `head(h)`), or freeze the parameter."))


class _Watch(TorchFunctionMode):
    """Records operations that put a watched parameter into the autograd graph while none of its owners runs."""

    def __init__(self, check: OwnerUseCheck):
        super().__init__()
        self.check = check

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if torch.is_grad_enabled():
            self.check.seen(func, tree_flatten((args, kwargs))[0], out)
        return out


class OwnerUseCheck:
    """Verifies, on the first forward pass with gradients in training mode, that every trainable parameter enters
    the autograd graph only while a module that owns it (directly) runs; raises :class:`TrainingError` otherwise.
    Removes its hooks after that pass, or on :meth:`close`."""

    def __init__(self, model: nn.Module, params: list[nn.Parameter]):
        watched = {id(p) for p in params}
        self.owners: dict[int, set[int]] = {}
        self.names: dict[int, str] = {}
        owner_modules: dict[int, nn.Module] = {}
        for mname, mod in model.named_modules(remove_duplicate=False):
            for pname, p in mod._parameters.items():
                if p is not None and id(p) in watched:
                    self.owners.setdefault(id(p), set()).add(id(mod))
                    self.names.setdefault(id(p), f"{mname}.{pname}" if mname else pname)
                    owner_modules[id(mod)] = mod
        self.running: Counter[int] = Counter()
        self.outside: dict[int, str] = {}
        self.mode: _Watch | None = None
        self.handles: list[RemovableHandle] = [model.register_forward_pre_hook(self._start),
                                               model.register_forward_hook(self._finish, always_call=True)]
        for mod in owner_modules.values():
            self.handles.append(mod.register_forward_pre_hook(self._enter, prepend=True))
            self.handles.append(mod.register_forward_hook(self._leave, always_call=True))

    # -- hooks ------------------------------------------------------------------------------------------------------
    def _start(self, module: nn.Module, args: Any) -> None:
        if self.mode is None and module.training and torch.is_grad_enabled():
            self.mode = _Watch(self)
            self.mode.__enter__()

    def _finish(self, module: nn.Module, args: Any, out: Any) -> None:
        if self.mode is None:
            return
        self.mode.__exit__(None, None, None)
        self.mode = None
        self.close()  # checked once: the structure of the forward pass does not change from step to step
        if self.outside:
            pid, op = next(iter(self.outside.items()))
            raise outside_use_error(self.names[pid], f"`{op}` on it outside that module")

    def _enter(self, module: nn.Module, args: Any) -> None:
        self.running[id(module)] += 1

    def _leave(self, module: nn.Module, args: Any, out: Any) -> None:
        self.running[id(module)] -= 1

    # -- called by the mode ----------------------------------------------------------------------------------------
    def seen(self, func: Any, inputs: list[Any], out: Any) -> None:
        for t in inputs:
            owners = self.owners.get(id(t)) if isinstance(t, torch.Tensor) else None
            if owners is None or any(self.running[m] > 0 for m in owners) or id(t) in self.outside:
                continue
            # metadata (shape, dtype) and detached copies carry no gradient: only graph-connected results count
            if any(isinstance(o, torch.Tensor) and o.grad_fn is not None for o in tree_flatten(out)[0]):
                self.outside[id(t)] = _op_name(func)

    def close(self) -> None:
        if self.mode is not None:
            self.mode.__exit__(None, None, None)
            self.mode = None
        for h in self.handles:
            h.remove()
        self.handles = []


def _op_name(func: Any) -> str:
    name = getattr(func, "__name__", str(func))
    if name == "__get__":  # a tensor property such as `.T`
        name = getattr(getattr(func, "__self__", None), "__name__", name)
    return name
