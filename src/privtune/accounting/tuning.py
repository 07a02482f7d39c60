"""Numerical settings of the accountants, in one place.

Every figure below trades accuracy for time; each was measured on a grid of (σ, q, steps, δ) against a 20×
finer computation (see docs/accounting.md, "Numerical settings"). Change them here, nowhere else.

PLD (dp-accounting, pessimistic). The privacy-loss grid spacing Δ is set from the scale of one step's privacy
loss, s(σ, q) = q·sqrt(exp(1/σ²) − 1) (the standard deviation of the likelihood ratio Q/P under P, i.e. the
square root of the χ² divergence; a fixed Δ is far too coarse when each step leaks little, e.g. σ 3, q 0.001).
We take Δ = 2^⌊log2(c·s)⌋ with c = PLD_RELATIVE_DISCRETIZATION, clipped to [PLD_MIN_DISCRETIZATION,
PLD_MAX_DISCRETIZATION]. With c = 0.1 the pessimistic ε is within about 7e-4 relative of the exact value on
the measured grid, and 10^4 steps cost about 50 ms. Rounding Δ down to a power of two keeps ε monotone: a
larger σ or smaller q never gets a coarser grid, and on a dyadic refinement the pessimistic rounding can only
fall.

PRV (Gopi et al. 2021, via Opacus' implementation). ``eps_error`` is the additive slack of the certified upper
bound ε_upper = ε_estimate + eps_error (plus the δ slack ``delta_error = PRV_DELTA_ERROR_FRACTION·δ``); the
discretisation mesh is eps_error / sqrt(steps·log(12/delta_error)/2), so the cost grows as 1/eps_error. 0.01
is Opacus' default.

RDP (dp-accounting). Orders of dp-accounting's default grid (1.1…10.9 by 0.1, 11…63, 128, 256, 512, 1024); ε
is the minimum over orders of the Balle et al. (2020) conversion, so adding orders can only tighten it.

Edgeworth. Default order, quadrature and root-finding settings.
"""

from __future__ import annotations

import math
from typing import Iterable

PLD_RELATIVE_DISCRETIZATION = 0.1
PLD_MIN_DISCRETIZATION = 2.0 ** -30
PLD_MAX_DISCRETIZATION = 2.0 ** -8
PLD_MAX_GRID_POINTS = 2 ** 21   # memory guard: σ 0.01, q 0.5, 100 steps would otherwise need 7 GB and 75 s
PLD_MAX_COARSE_DISCRETIZATION = 2.0 ** 6  # nats: coarser grids are refused (dp-accounting overflows ~700)

PRV_EPS_ERROR = 0.01
PRV_DELTA_ERROR_FRACTION = 1e-3
PRV_MAX_GRID_POINTS = 2 ** 21   # beyond this eps_error is raised (and reported): about a second at most
PRV_MAX_LOSS = 500.0            # nats: the widest loss domain [−L, L] PRV accepts (e^700 overflows)

RDP_ORDERS: tuple[float, ...] = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(11, 64))
                                      + [128, 256, 512, 1024])

EDGEWORTH_DEFAULT_ORDER = 1   # EW-Tune's accountant (Behnia et al. 2022); orders 2 and 3 on request
EDGEWORTH_MAX_QUADRATURE_POINTS = 2 ** 21   # trapezoid points; reached only for σ < ~0.0015
EDGEWORTH_ROOT_XTOL = 1e-10


def privacy_loss_scale(noise_multiplier: float, sample_rate: float) -> float:
    """s(σ, q) = q·sqrt(exp(1/σ²) − 1): the χ²-divergence scale of one subsampled Gaussian step (capped for
    σ→0)."""
    return sample_rate * math.sqrt(math.expm1(min(1.0 / noise_multiplier ** 2, 700.0)))


def pld_discretization(entries: Iterable[tuple[float, float, int]]) -> float:
    """Δ for a ledger with the given (σ, q, steps) entries (see the module docstring).

    The finest Δ any entry needs, unless the composed loss would span more than PLD_MAX_GRID_POINTS grid
    points. Its span is estimated from the exact cumulants of the loss (see edgeworth.py): K1_Q − K1_P +
    20·(sd_Q + sd_P), plus ℓ_max = 1/(2σ²) + 10/σ, the largest one-step loss dp-accounting keeps. Past the
    budget Δ is coarsened (still pessimistic, so still an upper bound; this happens only for ledgers whose ε
    is in the hundreds, where the extra slack is negligible relative to ε).
    """
    from privtune.accounting.edgeworth import cumulants  # lazy: edgeworth imports this module

    entries = list(entries)
    scale = min(privacy_loss_scale(s, q) for s, q, _ in entries)
    delta = 2.0 ** math.floor(math.log2(max(PLD_RELATIVE_DISCRETIZATION * scale, PLD_MIN_DISCRETIZATION)))
    delta = min(max(delta, PLD_MIN_DISCRETIZATION), PLD_MAX_DISCRETIZATION)
    k1_p = k1_q = k2_p = k2_q = 0.0
    for s, q, n in entries:
        c = cumulants(s, q)
        k1_p, k1_q, k2_p, k2_q = k1_p + n * c.p[0], k1_q + n * c.q[0], k2_p + n * c.p[1], k2_q + n * c.q[1]
    loss_max = max(0.5 / s ** 2 + 10.0 / s for s, _, _ in entries)
    span = k1_q - k1_p + 20 * (math.sqrt(k2_q) + math.sqrt(k2_p)) + loss_max
    return max(delta, 2.0 ** math.ceil(math.log2(span / PLD_MAX_GRID_POINTS)))
