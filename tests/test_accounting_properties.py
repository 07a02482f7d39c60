"""Property tests: ε falls with σ and rises with steps and q; δ(ε) falls with ε.

Certified accountants are checked over a broad range. The Edgeworth estimate is an asymptotic series that is
not monotone far outside its range (e.g. σ 0.5, q 0.15, 6000 steps, δ 4e-7 gives ε in the thousands and falls
with more steps), so it is checked where its skewness is small, which is where it is meant to be used.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from privtune.accounting import Ledger, get_accountant
from privtune.accounting.edgeworth import ledger_cumulants, skewness

EXAMPLES = int(os.environ.get("PRIVTUNE_HYPOTHESIS_EXAMPLES", "12"))  # raise for a deeper search (150 passes)
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
log_sigma = st.floats(min_value=-0.3, max_value=0.7)      # σ in [0.5, 5]
log_rate = st.floats(min_value=-3.0, max_value=-1.0)      # q in [0.001, 0.1]
steps = st.integers(min_value=1, max_value=3000)
log_delta = st.floats(min_value=-9.0, max_value=-3.0)
bump = st.floats(min_value=1.02, max_value=2.0)


def eps(name, sigma, q, n, delta):
    return get_accountant(name).epsilon(Ledger.of(noise_multiplier=sigma, sample_rate=q, steps=n),
                                        delta=delta).epsilon


@SETTINGS
@given(st.sampled_from(["rdp", "pld"]), log_sigma, log_rate, steps, log_delta, bump)
def test_certified_epsilon_is_monotone(name, ls, lq, n, ld, k):
    sigma, q, delta = 10 ** ls, 10 ** lq, 10 ** ld
    e = eps(name, sigma, q, n, delta)
    tol = 1e-9 * max(1.0, e)
    assert eps(name, sigma * k, q, n, delta) <= e + tol
    assert eps(name, sigma, q, int(n * k) + 1, delta) >= e - tol
    assert eps(name, sigma, min(1.0, q * k), n, delta) >= e - tol
    assert eps(name, sigma, q, n, delta * k) <= e + tol


@SETTINGS
@given(st.sampled_from(["rdp", "pld", "edgeworth"]), log_sigma, log_rate, steps, st.floats(0.1, 10.0), bump)
def test_delta_falls_with_epsilon(name, ls, lq, n, e, k):
    acc = get_accountant(name)
    ledger = Ledger.of(noise_multiplier=10 ** ls, sample_rate=10 ** lq, steps=n)
    if name == "edgeworth":
        assume(skewness(*ledger_cumulants(ledger)) < 0.3)
    assert acc.delta(ledger, epsilon=e * k) <= acc.delta(ledger, epsilon=e) + 1e-15


@SETTINGS
@given(log_sigma, log_rate, st.integers(min_value=100, max_value=20000), log_delta, bump)
def test_edgeworth_is_monotone_where_it_applies(ls, lq, n, ld, k):
    sigma, q, delta = 10 ** ls, 10 ** lq, 10 ** ld
    ledger = Ledger.of(noise_multiplier=sigma, sample_rate=q, steps=n)
    assume(skewness(*ledger_cumulants(ledger)) < 0.3)
    e = eps("edgeworth", sigma, q, n, delta)
    assert eps("edgeworth", sigma * k, q, n, delta) <= e + 1e-9
    assert eps("edgeworth", sigma, q, int(n * k) + 1, delta) >= e - 1e-9
