import math

import numpy as np
import pytest
from scipy import stats

from privtune.errors import ConfigError, DataError
from privtune.evaluation.audit import (AuditSpec, audit_scores, default_guess_counts, epsilon_lower_bound,
                                       one_run_audit, p_value)


def p_value_by_hand(m, r, v, eps, delta):
    """The theorem's bound written out with plain loops."""
    q = math.exp(eps) / (1 + math.exp(eps))
    pmf = lambda k: math.comb(r, k) * q ** k * (1 - q) ** (r - k)  # noqa: E731
    beta = sum(pmf(k) for k in range(v, r + 1))
    alpha = max([sum(pmf(v - j) for j in range(1, i + 1)) / i for i in range(1, v + 1)] or [0])
    return min(1.0, beta + 2 * m * delta * alpha)


@pytest.mark.parametrize("m,r,v,eps,delta", [(10, 10, 10, 1.0, 0.0), (100, 40, 30, 0.7, 1e-3),
                                             (1000, 100, 80, 2.0, 1e-5), (50, 20, 5, 0.3, 1e-2)])
def test_p_value_matches_the_formula(m, r, v, eps, delta):
    got = p_value(m=m, r=r, v=v, epsilon=eps, delta=delta)
    assert got == pytest.approx(p_value_by_hand(m, r, v, eps, delta))


def test_all_correct_pure_dp_has_a_closed_form():
    # P[Bin(r, q) >= r] = q^r = 0.05  =>  q = 0.05^(1/r), eps = ln(q / (1 - q))
    for r in (10, 50):
        q = 0.05 ** (1 / r)
        assert epsilon_lower_bound(m=r, r=r, v=r, delta=0.0) == pytest.approx(math.log(q / (1 - q)), rel=1e-6)


def test_bound_properties():
    assert epsilon_lower_bound(m=100, r=50, v=25, delta=1e-5) == 0.0          # chance-level guessing
    b = [epsilon_lower_bound(m=1000, r=100, v=v, delta=1e-5) for v in (60, 70, 80, 90, 100)]
    assert all(x < y for x, y in zip(b, b[1:]))                                # more correct, larger bound
    assert epsilon_lower_bound(m=1000, r=100, v=90, delta=1e-3) < b[3]         # delta weakens the bound
    eps = b[2]                                                                 # at the bound, p-value = 5%
    assert p_value(m=1000, r=100, v=80, epsilon=eps, delta=1e-5) == pytest.approx(0.05, abs=1e-6)
    with pytest.raises(ConfigError):
        p_value(m=10, r=20, v=5, epsilon=1.0, delta=0.0)


def test_bound_is_valid_for_randomised_response():
    # eps-DP randomised response on each canary: the 95% lower bound exceeds the true eps in about 5% of runs
    rng = np.random.default_rng(0)
    eps, m, runs = 1.0, 200, 200
    q = math.exp(eps) / (1 + math.exp(eps))
    over = 0
    for _ in range(runs):
        v = int(rng.binomial(m, q))
        over += epsilon_lower_bound(m=m, r=m, v=v, delta=0.0) > eps
    assert over / runs < 0.1
    assert stats.binom.sf(over - 1, runs, 0.05) > 1e-3   # consistent with a 5% error rate


def test_one_run_audit_guesses_and_bonferroni():
    inc = np.array([True, False] * 50)
    scores = np.where(inc, 1.0, -1.0) + np.linspace(0, 0.1, 100)
    perfect = one_run_audit(scores, inc, delta=1e-5, certified_epsilon=8.0)
    assert perfect.n_correct == perfect.n_guesses == 100
    level = 1 - 0.05 / len(default_guess_counts(100))
    bound = perfect.epsilon_lower_bound
    assert bound == pytest.approx(epsilon_lower_bound(m=100, r=100, v=100, delta=1e-5, confidence=level))
    # consistency compares the bound with the certified epsilon: at the bound it holds, just below it does not
    # (100 canaries, all guessed right, bound epsilon by about 3 at most: a certified 8 could never be contradicted)
    assert 1.0 < bound < 8.0
    assert one_run_audit(scores, inc, delta=1e-5, certified_epsilon=bound).consistent is True
    assert one_run_audit(scores, inc, delta=1e-5, certified_epsilon=0.99 * bound).consistent is False
    assert len(perfect.tried) == len(default_guess_counts(100))
    flipped = one_run_audit(np.where(inc, -1.0, 1.0), inc, delta=1e-5, certified_epsilon=8.0)
    assert flipped.epsilon_lower_bound == 0.0 and flipped.n_correct == 0
    low = one_run_audit(np.where(inc, 1.0, -1.0), inc, delta=1e-5, certified_epsilon=0.5)
    assert low.consistent is False          # a DP violation would show like this
    d = one_run_audit(np.where(inc, 1.0, -1.0), inc, delta=1e-5).to_dict()
    assert d["consistent"] is None and d["estimate"] is True and "definition" in d
    with pytest.raises(DataError):
        one_run_audit([1.0, np.nan], [True, False], delta=0.0)


def test_audit_spec_and_scores_on_memorised_canaries(toy):
    with pytest.raises(DataError, match="missing"):
        AuditSpec.from_info({"template": "x {secret}"})
    s = audit_scores(toy.ft, toy.base, toy.tokenizer, toy.audit)
    inc = np.array(toy.audit.included)
    assert s[inc].min() > s[~inc].max()
    res = one_run_audit(s, inc, delta=1e-5)
    assert res.epsilon_lower_bound > 0.5 and res.n_correct == res.n_guesses
    same = audit_scores(toy.base, toy.base, toy.tokenizer, toy.audit)
    assert np.allclose(same, 0.0)
