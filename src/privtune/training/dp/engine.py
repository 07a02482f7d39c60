"""The interface between the trainer and a per-example gradient engine.

DP-SGD (Abadi et al. 2016) with expected batch size ``B``, clipping norm ``C`` and noise multiplier ``sigma``
updates with

    g = ( sum_{i in batch} clip_C(g_i) + N(0, sigma^2 C^2 I) ) / B,     clip_C(g) = g * min(1, C / ||g||_2)

where ``g_i`` is the gradient of example ``i``'s loss with respect to all trainable parameters jointly (one norm
per example, across parameters). An engine computes the first sum, micro-batch by micro-batch; the trainer adds
the noise once per logical batch. Engines differ only in *how* (materialised per-example gradients, ghost norms,
...), so every engine must match the brute-force reference (tests/test_dp_engines.py).

User-level DP (``--privacy-unit user``): :meth:`DPEngine.accumulate` takes ``groups``, the user of each example
(``0 .. G-1`` within the micro-batch, every record of a sampled user in the same micro-batch). The clipped unit is
then the user's summed gradient, ``sum_u clip_C(sum_{i in u} g_i)``: every engine groups its per-example
quantities by user *before* the norm, in the same backward pass (tests/test_dp_user_level.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
import contextlib
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Iterator

from privtune.errors import TrainingError
from privtune.registry import Registry
from privtune.training.dp.checks import OwnerUseCheck, refuse_example_mixing

if TYPE_CHECKING:
    import torch
    from torch import nn

#: Clipping uses ``C / (||g_i|| + EPS)`` as Opacus does, so that a zero gradient is not divided by zero.
EPS = 1e-6


@dataclass
class ClipStats:
    """What clipping did in one logical batch (for the guards and the run record, not released)."""

    n: int = 0                 # per-example gradients produced
    n_clipped: int = 0         # with ||g_i|| > C
    norm_sum: float = 0.0      # sum of ||g_i|| before clipping
    norm_max: float = 0.0
    clipped_norm_max: float = 0.0  # max ||clip_C(g_i)|| = min(norm_max, C): <= C by construction, no check

    def add(self, norms: torch.Tensor, coef: torch.Tensor, max_grad_norm: float) -> None:
        norms = norms.detach().float()
        self.n += int(norms.numel())
        self.n_clipped += int((norms > max_grad_norm).sum())
        self.norm_sum += float(norms.sum())
        if norms.numel():
            self.norm_max = max(self.norm_max, float(norms.max()))
            self.clipped_norm_max = max(self.clipped_norm_max, float((norms * coef.detach().float()).max()))

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "n_clipped": self.n_clipped, "mean_norm": self.norm_sum / self.n if self.n else None,
                "max_norm": self.norm_max, "clipped_norm_max": self.clipped_norm_max}


class DPEngine(ABC):
    """Accumulates ``sum_i clip_C(g_i)`` over the micro-batches of one logical batch.

    Lifecycle: ``__init__(model, max_grad_norm=C)`` attaches to the *final* model (after any adapter wrapping),
    refuses layers that mix examples and watches the first training forward pass for parameters used outside their
    modules (:mod:`privtune.training.dp.checks`); per micro-batch the trainer runs the forward pass on
    :attr:`module` and calls :meth:`accumulate` with the per-example losses; at the end of the logical batch
    :meth:`take_sum` returns one tensor per trainable parameter (zeros for an empty batch) and resets.
    :meth:`close` detaches.
    """

    name: ClassVar[str] = ""

    def __init__(self, model: nn.Module, *, max_grad_norm: float):
        if not max_grad_norm > 0:
            raise TrainingError(f"`max_grad_norm` must be > 0. Found {max_grad_norm!r}.")
        self.model = model
        self.max_grad_norm = float(max_grad_norm)
        self.params: list[nn.Parameter] = unique_trainable(model)
        if not self.params:
            raise TrainingError("`model` must have trainable parameters for DP training. Found none. "
                                "Apply the method (e.g. LoRA) before attaching the DP engine.")
        refuse_example_mixing(model)
        self._use_check = OwnerUseCheck(model, self.params)
        self._sum: list[torch.Tensor] | None = None
        self.stats = ClipStats()

    @property
    def module(self) -> nn.Module:
        """The module to call for the forward pass (the model itself for hook-based engines)."""
        return self.model

    @abstractmethod
    def accumulate(self, loss_per_example: torch.Tensor, groups: torch.Tensor | None = None) -> None:
        """Backpropagate the micro-batch's per-example losses and add their clipped gradients to the sum.

        ``groups`` (user-level DP): a long tensor with the user ``0 .. G-1`` of each example; the clipped unit is
        then each user's summed gradient. None: every example is its own unit."""

    def _add(self, grads: list[torch.Tensor]) -> None:
        if self._sum is None:
            self._sum = [g.detach().to(p.dtype).clone() for g, p in zip(grads, self.params)]
        else:
            for s, g in zip(self._sum, grads):
                s.add_(g.detach().to(s.dtype))

    def take_sum(self) -> tuple[list[torch.Tensor], ClipStats]:
        """The clipped sum of this logical batch (zeros if it was empty) and its clip statistics; then reset."""
        import torch

        out = self._sum if self._sum is not None else [torch.zeros_like(p) for p in self.params]
        stats = self.stats
        self._sum, self.stats = None, ClipStats()
        return out, stats

    def close(self) -> None:
        """Remove hooks and attributes added to the model (engines extend this and call it)."""
        self._use_check.close()


ENGINES: Registry[type[DPEngine]] = Registry("--dp-engine")


def get_engine(name: str) -> type[DPEngine]:
    return ENGINES.get(name)


@contextlib.contextmanager
def quiet_backward_hooks() -> Iterator[None]:
    """Opacus' full backward hooks warn when a module's inputs need no gradient (frozen embeddings under LoRA):
    expected here, and nothing the user can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Full backward hook is firing.*")
        yield


def check_groups(groups: torch.Tensor | None, n: int) -> int:
    """The number of units in a micro-batch of ``n`` examples: ``n``, or the users ``0 .. G-1`` of ``groups``
    (each must own at least one example)."""
    import torch

    if groups is None:
        return n
    if groups.dim() != 1 or groups.shape[0] != n or groups.dtype != torch.long:
        raise TrainingError(f"`groups` must be a long tensor with one user per example ({n}). Found "
                            f"{groups.dtype} of shape {tuple(groups.shape)}.")
    if n == 0:
        return 0
    g = int(groups.max()) + 1
    if int(groups.min()) < 0 or int(torch.bincount(groups, minlength=g).min()) == 0:
        raise TrainingError("`groups` must number the users of a micro-batch 0 .. G-1, each owning an example.")
    return g


def group_sum(x: torch.Tensor, groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """``(G, ...)``: the rows of ``x`` (one per example) summed per user."""
    import torch

    out = torch.zeros((n_groups, *x.shape[1:]), dtype=x.dtype, device=x.device)
    return out.index_add_(0, groups.to(x.device), x)


@dataclass(frozen=True)
class Regrouping:
    """Where each example of a micro-batch goes when its user's examples are concatenated along the sequence axis
    (:func:`regroup`): computed once per micro-batch (one ``bincount``/``argsort`` and one device sync) and applied
    to every layer's activations and output gradients."""

    groups: torch.Tensor     # (B,) each example's user, 0 .. G-1
    rank: torch.Tensor       # (B,) the example's position among its user's examples
    n_groups: int            # G
    length: int              # L: the most examples one user has

    @classmethod
    def of(cls, groups: torch.Tensor, n_groups: int) -> "Regrouping":
        import torch

        counts = torch.bincount(groups, minlength=n_groups)
        order = torch.argsort(groups, stable=True)
        start = torch.cumsum(counts, 0) - counts
        rank = torch.empty_like(groups)
        rank[order] = torch.arange(groups.shape[0], device=groups.device) - start[groups[order]]
        return cls(groups, rank, n_groups, int(counts.max()) if groups.numel() else 0)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, ...)`` -> ``(G, L*T, ...)``, zero padded; ``(B, d)`` is read as ``T = 1``."""
        import torch

        y = x.unsqueeze(1) if x.dim() == 2 else x
        out = torch.zeros((self.n_groups, self.length, *y.shape[1:]), dtype=x.dtype, device=x.device)
        out[self.groups.to(x.device), self.rank.to(x.device)] = y
        return out.reshape(self.n_groups, self.length * y.shape[1], *y.shape[2:])


def regroup(x: torch.Tensor, groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Concatenate each user's examples along the sequence axis: ``(B, T, ...)`` -> ``(G, L*T, ...)`` with ``L``
    the most examples of one user (zero padding; ``(B, d)`` is read as ``T = 1``). For a layer whose per-example
    gradient is a sum over positions (linear, embedding, LayerNorm), the per-example gradient of a regrouped row
    is the user's summed gradient, so ghost norms of regrouped inputs are the users' norms, cross terms
    included: ``||sum_{i in u} g_i^T a_i||^2 = <A_u A_u^T, G_u G_u^T>`` with ``A_u``, ``G_u`` the user's rows
    stacked. Engines build one :class:`Regrouping` per micro-batch and apply it layer after layer."""
    return Regrouping.of(groups.to(x.device), n_groups)(x)


def unique_trainable(model: nn.Module) -> list[nn.Parameter]:
    """Trainable parameters, each once (tied weights appear once)."""
    seen: set[int] = set()
    out = []
    for p in model.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out
