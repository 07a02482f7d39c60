"""Per-layer rules of the book-keeping engine (:mod:`privtune.training.dp.bk`).

For a linear layer ``y_t = W a_t + b`` of an example with inputs ``a`` (T x d) and output gradients ``g`` (T x p),
the example's weight gradient is ``G = g^T a`` (p x d). Three ways to use it, chosen per layer from its shapes:

``keep``   instantiate ``G`` for every example (cost ``T d p``, memory ``d p``) and keep it: its norm is direct and
           the clipped sum is ``sum_i c_i G_i``. Cheapest in time *and* memory when ``d p <= T (d + p)`` (LoRA
           factors, narrow layers, short sequences).
``ghost``  ``||G||_F^2 = sum_{t,s} (a_t . a_s)(g_t . g_s) = <a a^T, g g^T>`` (Li et al. 2022; cost ``T^2 (d + p)``)
           without instantiating ``G``; keep ``a`` and ``g`` and form the clipped sum as one matrix product
           ``(c * g)^T a`` over the whole micro-batch (book-keeping, Bu et al. 2023).
``inst``   instantiate ``G`` for the norm only, then as ``ghost``. Never cheaper than one of the other two (it
           costs ``T d p`` more than ``keep``); selectable to test and to measure.

Autograd computes only input gradients for these layers (the patched forward is a custom autograd function whose
backward returns no weight gradient), so the DP step costs one backward pass plus the norms. Embeddings use the
rows of their index (the norm sums the output gradients of equal tokens); LayerNorm and other small layers with
trainable parameters keep their own autograd and have their per-example gradients formed in a hook on their
output gradient (LayerNorm in closed form, anything else by ``torch.func`` per-example vector-Jacobian products).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from privtune.errors import TrainingError

if TYPE_CHECKING:
    from privtune.training.dp.bk import BookKeepingEngine

STRATEGIES = ("auto", "keep", "ghost", "inst")
#: bound (elements) on the per-example products materialised at once; larger batches are processed in chunks
CHUNK_ELEMENTS = 1 << 24


def choose(T: int, d: int, p: int, strategy: str = "auto") -> str:
    """The cheapest way to handle a ``d -> p`` linear layer on sequences of ``T`` positions (see the module doc)."""
    if strategy != "auto":
        return strategy
    # keep costs T d p (it replaces the weight gradient); ghost adds T^2 (d + p) to it. Keep also stores less
    # exactly when d p <= T (d + p), and ghost is cheaper than instantiation exactly when it is not: two cases.
    return "keep" if d * p <= T * (d + p) else "ghost"


def per_example_products(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``G_i = g_i^T a_i`` for every example: (B, p, d), in float32 (activations may be bf16 under autocast)."""
    return torch.bmm(g.transpose(1, 2).float(), a.float())


def per_example_sqnorm_of_products(a: torch.Tensor, g: torch.Tensor, *, ghost: bool) -> torch.Tensor:
    """``||g_i^T a_i||_F^2`` per example, by ghost norm or instantiation, in chunks of examples."""
    B, T, d = a.shape
    p = g.shape[2]
    per = T * T if ghost else d * p
    step = max(1, CHUNK_ELEMENTS // max(1, per))
    out = []
    for i in range(0, B, step):
        ai, gi = a[i:i + step].float(), g[i:i + step].float()
        if ghost:
            out.append((torch.bmm(ai, ai.transpose(1, 2)) * torch.bmm(gi, gi.transpose(1, 2))).sum((1, 2)))
        else:
            out.append(per_example_products(ai, gi).square().sum((1, 2)))
    return torch.cat(out)


def _as_btd(x: torch.Tensor, B: int, what: str) -> torch.Tensor:
    if x.dim() == 0 or x.shape[0] != B:
        raise TrainingError(f"per-example gradients must have one row per example ({B}). Found an input of shape "
                            f"{tuple(x.shape)} at {what}: a layer sees an input shared by the whole batch (e.g. "
                            "position ids built once per batch). Freeze that layer or use dp-lora.")
    return x.reshape(B, -1, x.shape[-1])


class Rule:
    """Handles the trainable parameters of one module: attach (patch forward or hook), backward, detach."""

    def __init__(self, engine: BookKeepingEngine, module: nn.Module, name: str):
        self.engine, self.module, self.name = engine, module, name

    def attach(self) -> None:
        raise NotImplementedError

    def detach(self) -> None:
        if "forward" in self.module.__dict__:
            del self.module.forward

    def params(self) -> list[nn.Parameter]:
        return [p for p in self.module.parameters(recurse=False) if p.requires_grad]


# -- linear layers ------------------------------------------------------------------------------------------------
class _LinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, rule):  # type: ignore[override]
        ctx.rule = rule
        ctx.save_for_backward(x, weight)
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        x, w = ctx.saved_tensors
        gx = g.matmul(w.to(g.dtype)) if ctx.needs_input_grad[0] else None
        if ctx.rule.engine.collecting:
            ctx.rule.backward(x.detach(), g.detach())
            return gx, None, None, None
        # a backward pass outside the engine (e.g. a user's own loss): plain linear-layer gradients
        g2, x2 = g.reshape(-1, g.shape[-1]), x.reshape(-1, x.shape[-1])
        gw = g2.t().matmul(x2.to(g2.dtype)).to(w.dtype) if ctx.needs_input_grad[1] else None
        gb = g2.sum(0) if ctx.needs_input_grad[2] else None
        return gx, gw, gb, None


class LinearRule(Rule):
    def attach(self) -> None:
        m = self.module
        if not m.weight.requires_grad:
            raise TrainingError(f"`{self.name}` must train its weight if it trains its bias. Found a frozen weight.")
        self.bias = m.bias if m.bias is not None and m.bias.requires_grad else None
        orig = m.forward

        def forward(x: torch.Tensor) -> torch.Tensor:
            if not torch.is_grad_enabled():
                return orig(x)
            return _LinearFn.apply(x, m.weight, m.bias, self)

        m.forward = forward

    def backward(self, x: torch.Tensor, g: torch.Tensor) -> None:
        eng = self.engine
        B = eng.batch_size
        a, gg = _as_btd(x, B, self.name), _as_btd(g, B, self.name)
        T, d, p = a.shape[1], a.shape[2], gg.shape[2]
        w = self.module.weight
        how = choose(T * eng.group_len, d, p, eng.strategy)  # a user's examples form one sequence of L T
        if how == "keep":
            eng.use(w, "ps", per_example_products(a, gg))
        elif eng.groups is None:
            eng.use(w, "ag", (a, gg), sq=per_example_sqnorm_of_products(a, gg, ghost=how == "ghost"))
        else:  # the users' norms, cross terms between a user's examples included
            ua, ug = eng.regrouping(a), eng.regrouping(gg)
            eng.use(w, "ag", (a, gg), sq=per_example_sqnorm_of_products(ua, ug, ghost=how == "ghost"))
        if self.bias is not None:
            eng.use(self.bias, "ps", gg.float().sum(1))


# -- embeddings ---------------------------------------------------------------------------------------------------
class _EmbeddingFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ids, weight, rule):  # type: ignore[override]
        ctx.rule = rule
        ctx.save_for_backward(ids)
        return F.embedding(ids, weight, rule.module.padding_idx)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (ids,) = ctx.saved_tensors
        if ctx.rule.engine.collecting:
            ctx.rule.backward(ids, g.detach())
            return None, None, None
        m = ctx.rule.module
        gw = torch.ops.aten.embedding_backward(g, ids, m.num_embeddings, -1 if m.padding_idx is None
                                               else m.padding_idx, False, False) if ctx.needs_input_grad[1] else None
        return None, gw, None


class EmbeddingRule(Rule):
    """``nn.Embedding`` (and Gemma's scaled embedding, ``y = E[x] * s``: its gradient flows through the product)."""

    def attach(self) -> None:
        m = self.module
        if m.max_norm is not None or m.scale_grad_by_freq or m.sparse:
            raise TrainingError(f"`{self.name}` must be a plain embedding for DP training. Found max_norm, "
                                "scale_grad_by_freq or sparse set (they mix examples or change the weight in place).")
        scale = getattr(m, "embed_scale", None)
        orig = m.forward

        def forward(ids: torch.Tensor) -> torch.Tensor:
            if not torch.is_grad_enabled():
                return orig(ids)
            out = _EmbeddingFn.apply(ids, m.weight, self)
            return out if scale is None else out * scale.to(m.weight.dtype)

        m.forward = forward

    def backward(self, ids: torch.Tensor, g: torch.Tensor) -> None:
        eng = self.engine
        B, V = eng.batch_size, self.module.num_embeddings
        if ids.dim() == 0 or ids.shape[0] != B:
            _as_btd(ids.unsqueeze(-1), B, self.name)
        ids = ids.reshape(B, -1)
        g = g.reshape(B, ids.shape[1], -1).float()
        if self.module.padding_idx is not None:
            g = g * (ids != self.module.padding_idx).unsqueeze(-1).to(g.dtype)
        # rows of the per-example gradients: one per distinct (example, token) pair
        key = (torch.arange(B, device=ids.device).unsqueeze(1) * V + ids).reshape(-1)
        uniq, inv = torch.unique(key, return_inverse=True)
        rows = torch.zeros(uniq.numel(), g.shape[-1], dtype=g.dtype, device=g.device)
        rows.index_add_(0, inv, g.reshape(-1, g.shape[-1]))
        example = torch.div(uniq, V, rounding_mode="floor")
        idx = uniq - example * V
        if eng.groups is None:
            sq = torch.zeros(B, dtype=g.dtype, device=g.device).index_add_(0, example, rows.square().sum(1))
        else:  # rows of the users' summed gradients: one per distinct (user, token) pair
            user = eng.groups[example]
            ukey, uinv = torch.unique(user * V + idx, return_inverse=True)
            urows = torch.zeros(ukey.numel(), g.shape[-1], dtype=g.dtype, device=g.device).index_add_(0, uinv, rows)
            sq = torch.zeros(eng.units, dtype=g.dtype, device=g.device).index_add_(
                0, torch.div(ukey, V, rounding_mode="floor"), urows.square().sum(1))
        eng.use(self.module.weight, "rows", (idx, rows, example), sq=sq)


# -- layers with their own autograd: per-example gradients from a hook on the output gradient --------------------
class CaptureRule(Rule):
    """Keeps the module's forward; records its input, and forms per-example gradients when the output gradient
    arrives. Autograd also accumulates the summed gradient into ``.grad``, which the engine discards."""

    def attach(self) -> None:
        self._busy = False  # set while the rule itself runs the module (per-example recomputation)
        self._handle = self.module.register_forward_hook(self._hook)

    def detach(self) -> None:
        self._handle.remove()

    def _hook(self, module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        if self._busy or not torch.is_grad_enabled() or not isinstance(out, torch.Tensor) or not out.requires_grad:
            return
        if len(args) != 1 or not isinstance(args[0], torch.Tensor):
            raise TrainingError(f"`{self.name}` ({type(module).__name__}) must take one tensor input to have "
                                "per-example gradients. Freeze it or use --dp-engine hooks.")
        x = args[0].detach()

        def hook(g: torch.Tensor) -> None:
            if self.engine.collecting:
                self.backward(x, g.detach())

        out.register_hook(hook)

    def backward(self, x: torch.Tensor, g: torch.Tensor) -> None:
        raise NotImplementedError


class LayerNormRule(CaptureRule):
    """``y = xhat * w + b`` with ``xhat`` the normalised input: per-example ``sum_t g_t * xhat_t`` and
    ``sum_t g_t``."""

    def backward(self, x: torch.Tensor, g: torch.Tensor) -> None:
        m, eng = self.module, self.engine
        B = eng.batch_size
        xhat = F.layer_norm(_as_btd(x, B, self.name).float(), m.normalized_shape, None, None, m.eps)
        gg = _as_btd(g, B, self.name).float()
        if m.weight is not None and m.weight.requires_grad:
            eng.use(m.weight, "ps", (gg * xhat).sum(1))
        if m.bias is not None and m.bias.requires_grad:
            eng.use(m.bias, "ps", gg.sum(1))


class FuncRule(CaptureRule):
    """Any other module with one tensor input (RMSNorm variants, ...): per-example gradients by vmapped
    vector-Jacobian products of the module's own forward (recomputed per example)."""

    def backward(self, x: torch.Tensor, g: torch.Tensor) -> None:
        from torch.func import functional_call, grad, vmap

        eng, m = self.engine, self.module
        B = eng.batch_size
        if x.shape[0] != B:
            _as_btd(x, B, self.name)
        names = [n for n, p in m.named_parameters(recurse=False) if p.requires_grad]
        params = {n: getattr(m, n).detach() for n in names}

        def inner(prm: dict[str, torch.Tensor], xi: torch.Tensor, gi: torch.Tensor) -> torch.Tensor:
            return (functional_call(m, prm, (xi.unsqueeze(0),)).float() * gi.unsqueeze(0).float()).sum()

        self._busy = True
        try:
            grads = vmap(grad(inner), in_dims=(None, 0, 0))(params, x, g.detach())
        finally:
            self._busy = False
        for n in names:
            eng.use(getattr(m, n), "ps", grads[n])


def to_per_example(kind: str, payload: Any, B: int, shape: torch.Size) -> torch.Tensor:
    """The per-example gradients ``(B, *shape)`` of one use, whatever form it was kept in."""
    if kind == "ps":
        return payload
    if kind == "ag":
        a, g = payload
        return per_example_products(a, g)
    idx, rows, example = payload  # "rows"
    dense = torch.zeros(B * shape[0], shape[1], dtype=rows.dtype, device=rows.device)
    dense.index_add_(0, example * shape[0] + idx, rows)
    return dense.view(B, *shape)


def make_rule(engine: BookKeepingEngine, module: nn.Module, name: str) -> Rule:
    if type(module) is nn.Linear:
        return LinearRule(engine, module, name)
    if isinstance(module, nn.Embedding) and (type(module) is nn.Embedding or hasattr(module, "embed_scale")):
        return EmbeddingRule(engine, module, name)
    if type(module) is nn.LayerNorm:
        return LayerNormRule(engine, module, name)
    return FuncRule(engine, module, name)
