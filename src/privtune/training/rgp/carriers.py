"""Gradient carriers of RGP (Yu et al. 2021, "Large Scale Private Learning via Low-rank Reparametrization", ICML).

For a weight matrix ``W`` (``d x p``: ``d`` outputs, ``p`` inputs) the carriers are ``L`` (``d x r``, orthonormal
columns) and ``R`` (``r x p``, orthonormal rows) spanning the top-``r`` singular subspaces of a *target* matrix ``M``
(the historical update of ``W``, or ``W`` itself), found by the power method of the paper's decomposition routine:

    R_0 ~ N(0, 1)^{p x r};   for k = 1..K:   L = orth(M R_{k-1}),   R_k = orth(M^T L);   return L, R_K^T

With the reparametrization ``W = L R + (W - L R).detach()`` the gradients of the loss with respect to the carriers
are ``dL = G R^T`` and ``dR = L^T G`` where ``G`` is the gradient with respect to ``W``; the update of ``W`` is
reconstructed as

    dW = dL R + L dR - L (L^T dL) R

which equals ``L L^T G + G R^T R - L L^T G R^T R``, the projection of ``G`` onto the matrices whose column space lies
in span(L) or whose row space lies in span(R^T) (the second-order term removes the part counted twice). In RGP the
carrier gradients are clipped and noised first, so the reconstruction maps *noisy* carrier gradients to ``W``.
"""

from __future__ import annotations

import torch


def orthonormal_columns(a: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis of the columns of ``a`` (``n x r``, ``n >= r``): the Q factor of its reduced QR.

    Householder QR returns orthonormal columns even when ``a`` is rank-deficient (the missing directions are
    completed), so a degenerate target never yields NaN carriers.
    """
    q, _ = torch.linalg.qr(a, mode="reduced")
    return q


def decompose(target: torch.Tensor, *, rank: int, iters: int,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Carriers ``(L, R)`` of ``target`` (``d x p``) by ``iters`` power iterations from a Gaussian start.

    Computed in float32 on ``target``'s device; ``generator`` (CPU) draws the start, so that the carriers are a
    function of (target, generator state) alone. Returns ``L`` (``d x rank``) and ``R`` (``rank x p``).
    """
    m = target.detach().float()
    d, p = m.shape
    if not 1 <= rank <= min(d, p):
        raise ValueError(f"rank must be in [1, {min(d, p)}] for a {d}x{p} matrix, got {rank}")
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    r = torch.randn(p, rank, generator=generator, dtype=torch.float32).to(m.device)
    for _ in range(iters):
        left = orthonormal_columns(m @ r)
        r = orthonormal_columns(m.T @ left)
    return left, r.T.contiguous()


def reconstruct(grad_left: torch.Tensor, grad_right: torch.Tensor, left: torch.Tensor,
                right: torch.Tensor) -> torch.Tensor:
    """The update of ``W`` from carrier gradients: ``dL R + L dR - L (L^T dL) R`` (``d x p``)."""
    gl_r = grad_left @ right
    return gl_r + left @ grad_right - left @ (left.T @ gl_r)


def project(grad: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """``L L^T G + G R^T R - L L^T G R^T R``: what :func:`reconstruct` returns for exact carrier gradients."""
    pl = left @ (left.T @ grad)
    return pl + (grad @ right.T) @ right - (pl @ right.T) @ right
