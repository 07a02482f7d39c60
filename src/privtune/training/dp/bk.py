"""``bk``: book-keeping DP-SGD in one backward pass (Bu, Wang, Zha and Karypis 2023), with per-layer ghost norms.

One backward pass of ``sum_i L_i`` runs through layers whose forward privtune replaces by autograd functions that
compute the input gradient only; each layer, as its output gradient ``g`` arrives, adds its share of every
example's squared gradient norm (by the cheaper of a ghost norm or per-example instantiation, chosen per layer from
its shapes: :mod:`privtune.training.dp.layers`) and keeps what the clipped sum needs (the per-example gradients, or
the layer input ``a`` and ``g``). After the pass the clipping coefficients ``c_i = min(1, C / (||g_i|| + eps))`` are
known and the clipped sum ``sum_i c_i g_i`` is formed directly: for a linear weight one matrix product
``(c * g)^T a`` over the micro-batch, the product autograd would have formed without clipping. Frozen layers
(LoRA's base) get no per-example work at all.

Cost: the non-private step plus the norms (``T^2 (d + p)`` per example for a ghost layer, nothing extra for a kept
one); memory: the output gradients of the ghost layers are kept to the end of the backward pass. A parameter used
more than once in a forward pass needs the norm of its *total* per-example gradient. A tied embedding and LM head
(:func:`tied_sqnorm`) gets it from the two uses' norms and their cross term, evaluated at the example's own tokens,
so no vocabulary x width gradient is formed per example (on a 262k-token vocabulary that would be 0.7 GB per
example); any other repeated use (a module called twice) has its per-example gradients instantiated after the pass
from what each use kept, and summed. Outside
:meth:`accumulate` (a user's own backward pass) the patched layers behave as plain ones.

User-level (``groups``): the norm is that of each user's summed gradient, in the same single pass. Kept
per-example gradients are summed per user; a ghost layer's ``a`` and ``g`` are regrouped so that a user's
examples form one long sequence (:func:`~privtune.training.dp.engine.regroup`: the ghost norm then includes the
cross terms ``<a_i a_j^T, g_i g_j^T>`` between the user's examples, at cost ``(L T)^2 (d + p)`` per user of ``L``
examples); embedding rows are merged per (user, token), and a tied embedding / LM head's cross term pairs each
example's head gradient with its user's embedding rows. The clipped sum uses each example's user coefficient.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from privtune.errors import TrainingError
from privtune.training.dp.checks import outside_use_error
from privtune.training.dp.engine import (ENGINES, EPS, DPEngine, Regrouping, check_groups, group_sum,
                                         quiet_backward_hooks, unique_trainable)
from privtune.training.dp.layers import STRATEGIES, EmbeddingRule, LinearRule, Rule, make_rule, to_per_example
from privtune.training.dp.samplers import check_private_trainable

if TYPE_CHECKING:
    from torch import nn


_STALE = ("The DP hooks are bound to other modules than the ones being trained: attach the DP engine after "
          "wrapping the model (LoRA) and build the optimizer last.")


@ENGINES.register("bk")
class BookKeepingEngine(DPEngine):
    name = "bk"

    def __init__(self, model: nn.Module, *, max_grad_norm: float, strategy: str = "auto"):
        super().__init__(model, max_grad_norm=max_grad_norm)
        if strategy not in STRATEGIES:
            raise TrainingError(f"`strategy` must be one of {', '.join(STRATEGIES)}. Found {strategy!r}.")
        check_private_trainable(model)
        self.strategy = strategy
        self._index = {id(p): i for i, p in enumerate(self.params)}
        self._names = {id(p): n for n, p in model.named_parameters()}
        self.rules: list[Rule] = []
        for name, mod in model.named_modules():
            if any(p.requires_grad for p in mod.parameters(recurse=False)):
                rule = make_rule(self, mod, name)
                rule.attach()
                self.rules.append(rule)
        # parameters whose captured uses give autograd no gradient at all (their rules' backward returns none): any
        # .grad they get in accumulate's backward pass comes from a use outside their module
        self._no_autograd = {id(p) for r in self.rules if isinstance(r, (LinearRule, EmbeddingRule))
                             for p in r.params()}
        self.batch_size = 0
        self.groups: torch.Tensor | None = None  # user of each example (user-level DP), else None
        self.regrouping: Regrouping | None = None  # how a user's examples form one sequence (ghost norms)
        self.units = 0                           # clipped units in the micro-batch: examples, or users
        self.group_len = 1                       # most examples of one user in the micro-batch
        self.collecting = False  # True only inside accumulate's backward pass: the rules hand their work here
        self._uses = {}

    # -- called by the layer rules ----------------------------------------------------------------------------------
    def use(self, p: nn.Parameter, kind: str, payload: Any, *, sq: torch.Tensor | None = None) -> None:
        """One use of ``p`` in the forward pass: its per-example gradients in the form ``kind`` (``ps``: a tensor
        ``(B, *p.shape)``; ``ag``: a linear layer's ``(a, g)``; ``rows``: embedding rows) and, unless ``ps``, their
        per-example squared norms ``sq``."""
        i = self._index.get(id(p))
        if i is None:
            raise TrainingError(_STALE)
        self._uses.setdefault(i, []).append((kind, payload, sq))

    # -- the DPEngine interface -----------------------------------------------------------------------------------
    def accumulate(self, loss_per_example: torch.Tensor, groups: torch.Tensor | None = None) -> None:
        if [id(p) for p in unique_trainable(self.model)] != list(self._index):  # e.g. LoRA applied after attaching
            raise TrainingError(_STALE)
        self.batch_size = n = int(loss_per_example.shape[0])
        self.units = units = check_groups(groups, n)
        self.groups = None if groups is None else groups.to(loss_per_example.device)
        self.regrouping = None if self.groups is None else Regrouping.of(self.groups, units)
        self.group_len = 1 if self.regrouping is None or n == 0 else self.regrouping.length
        self._uses: dict[int, list[tuple[str, Any, torch.Tensor | None]]] = {}
        for p in self.params:
            p.grad = None
        self.collecting = True
        try:
            with quiet_backward_hooks():
                loss_per_example.sum().backward()
            self.collecting = False
            leaked = [p for p in self.params if id(p) in self._no_autograd and p.grad is not None]
            if leaked:
                raise outside_use_error(self._names.get(id(leaked[0]), "?"), "a gradient from outside that module")
            missing = [self._names.get(id(p), "?") for i, p in enumerate(self.params) if i not in self._uses]
            if missing:
                raise TrainingError(f"per-example gradients must exist for every trainable parameter. Found none for "
                                    f"{len(missing)} of {len(self.params)} (e.g. {missing[0]}). {_STALE}")
            sq = torch.zeros(units, dtype=torch.float32, device=loss_per_example.device)
            work: list[tuple[int, str, Any]] = []
            for i, uses in self._uses.items():
                tied = tied_sqnorm(uses, self.groups, units) if len(uses) > 1 else None
                if tied is not None:  # embedding + LM head: norms of the sums without (B, V, d) tensors
                    sq += tied
                    work.extend((i, kind, payload) for kind, payload, _ in uses)
                    continue
                if len(uses) > 1:  # a parameter used more than once: the norm of the summed per-example gradients
                    shape = self.params[i].shape
                    ps = sum(to_per_example(kind, payload, n, shape) for kind, payload, _ in uses)
                    uses = [("ps", ps, None)]
                kind, payload, s = uses[0]
                if s is None:  # per-example gradients kept: summed per user first (user-level)
                    x = payload.reshape(n, -1)
                    sq += (x if self.groups is None else group_sum(x, self.groups, units)).square().sum(1)
                else:          # the rules' squared norms are per unit already
                    sq += s
                work.append((i, kind, payload))
            self._uses = {}
            norms = sq.sqrt()
            coef = (self.max_grad_norm / (norms + EPS)).clamp(max=1.0)
            coef_ex = coef if self.groups is None else coef[self.groups]  # each example gets its user's factor
            if self._sum is None:
                self._sum = [torch.zeros_like(p) for p in self.params]
            for i, kind, payload in work:
                _contract(self._sum[i], kind, payload, coef_ex)
            self.stats.add(norms, coef, self.max_grad_norm)
        finally:
            self.collecting = False
            self.groups = self.regrouping = None
            self._uses = {}
            for p in self.params:  # layers with their own autograd (LayerNorm, ...) also accumulated .grad
                p.grad = None

    def close(self) -> None:
        super().close()
        for rule in self.rules:
            rule.detach()
        self.rules = []


def tied_sqnorm(uses: list[tuple[str, Any, torch.Tensor | None]], groups: torch.Tensor | None = None,
                units: int | None = None) -> torch.Tensor | None:
    """``||E_u + H_u||^2`` per clipped unit (an example, or with ``groups`` a user of ``units``) for a weight used by
    an embedding (``E_i``: rows at example ``i``'s tokens) and by a linear layer (``H_i = g_i^T a_i``, e.g. a tied
    LM head), from the two uses' own squared norms (per unit) and their cross term ``<E_u, H_u> = sum_{j in u}
    sum_v <E_u[v], H_j[v]>`` over the unit's tokens ``v`` only, where ``H_j[v] = sum_t g_j[t, v] a_j[t]``: nothing
    of size vocabulary x width per example is formed. None for any other combination of uses (the caller
    instantiates)."""
    if sorted(k for k, _, _ in uses) != ["ag", "rows"] or any(s is None for _, _, s in uses):
        return None
    by_kind = {k: (payload, s) for k, payload, s in uses}
    (idx, rows, example), s_rows = by_kind["rows"]
    (a, g), s_ag = by_kind["ag"]
    B = a.shape[0]
    unit_of = torch.arange(B, device=rows.device) if groups is None else groups.to(rows.device)
    row_unit = unit_of[example]
    cross = torch.zeros(B if units is None else units, dtype=torch.float32, device=rows.device)
    for j in range(B):
        sel = row_unit == unit_of[j]            # the rows of example j's unit (its own, or its user's examples')
        if sel.any():
            r, v = rows[sel].float(), idx[sel]
            # sum_v <E_u[v], H_j[v]> = sum_t sum_v g_j[t, v] <a_j[t], E_u[v]>
            cross[unit_of[j]] += ((a[j].float() @ r.t()) * g[j][:, v].float()).sum()
    return s_rows.float() + s_ag.float() + 2 * cross


def _contract(out: torch.Tensor, kind: str, payload: Any, coef: torch.Tensor) -> None:
    """Add ``sum_i c_i g_i`` of one use of a parameter to ``out`` (in place)."""
    c = coef.to(out.dtype)
    if kind == "ps":       # per-example gradients (B, *shape)
        out.view(-1).addmv_(payload.reshape(payload.shape[0], -1).t().to(out.dtype), c)
    elif kind == "ag":     # linear weight: (c * g)^T a = g^T (c * a) over the micro-batch; scale the narrower
        a, g = payload
        c3 = c.view(-1, 1, 1)
        if a.shape[-1] < g.shape[-1]:
            a, g = a.to(out.dtype) * c3, g.to(out.dtype)
        else:
            a, g = a.to(out.dtype), g.to(out.dtype) * c3
        out.addmm_(g.reshape(-1, g.shape[-1]).t(), a.reshape(-1, a.shape[-1]))
    elif kind == "rows":   # embedding: rows of per-example gradients at their token ids
        idx, rows, example = payload
        out.index_add_(0, idx, (rows * c[example].unsqueeze(1)).to(out.dtype))
    else:  # pragma: no cover - internal
        raise AssertionError(kind)
