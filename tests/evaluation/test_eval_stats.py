import numpy as np
import pytest

from privtune.evaluation.stats import quantiles, roc_auc, roc_curve, tpr_at_fpr


def test_auc_counts_pairs_and_half_ties():
    # pairs (m, n): (3,1) (3,2) (2,1) win, (2,2) tie -> (3 + 0.5) / 4
    assert roc_auc(np.array([3.0, 2.0]), np.array([1.0, 2.0])) == pytest.approx(0.875)
    assert roc_auc(np.array([1.0, 1.0]), np.array([1.0])) == pytest.approx(0.5)
    assert roc_auc(np.array([0.0]), np.array([1.0, 2.0])) == 0.0
    assert np.isnan(roc_auc(np.array([]), np.array([1.0])))


def test_auc_equals_brute_force_pair_count():
    rng = np.random.default_rng(0)
    m, n = rng.integers(0, 5, 30).astype(float), rng.integers(0, 5, 40).astype(float)  # many ties
    brute = sum((a > b) + 0.5 * (a == b) for a in m for b in n) / (m.size * n.size)
    assert roc_auc(m, n) == pytest.approx(brute)


def test_roc_curve_and_tpr_at_low_fpr_by_hand():
    members = np.array([0.9, 0.8, 0.3, 0.1])
    nonmembers = np.array([0.7, 0.2, 0.05, 0.0, -1.0])
    fpr, tpr = roc_curve(members, nonmembers)
    # thresholds 0.9, 0.8, 0.7, 0.3, 0.2, 0.1, 0.05, 0.0, -1.0
    assert tpr.tolist() == [0, .25, .5, .5, .75, .75, 1, 1, 1, 1]
    assert fpr.tolist() == pytest.approx([0, 0, 0, .2, .2, .4, .4, .6, .8, 1])
    assert tpr_at_fpr(members, nonmembers, 0.0) == 0.5      # two members above every non-member
    assert tpr_at_fpr(members, nonmembers, 0.01) == 0.5     # resolution 1/5: 1% behaves like 0
    assert tpr_at_fpr(members, nonmembers, 0.2) == 0.75
    assert tpr_at_fpr(members, nonmembers, 0.4) == 1.0


def test_quantiles():
    q = quantiles(np.arange(11.0))
    assert q == {"min": 0.0, "q10": 1.0, "median": 5.0}
    assert quantiles(np.array([])) == {"min": None, "q10": None, "median": None}


# -- bootstrap intervals -------------------------------------------------------------------------------------------
from privtune.evaluation.stats import (bootstrap_ci, bootstrap_indices, percentile_interval,  # noqa: E402
                                       resampled_means, separated)


def test_bootstrap_two_records_by_hand():
    # resamples of records {0, 1}: means 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4 -> the 2.5%/97.5% quantiles
    # are the extremes (computed on the wrong axis, every mean is about 1/2 and the interval collapses)
    assert bootstrap_ci([0.0, 1.0]) == [0.0, 1.0]
    assert bootstrap_ci([0.7, 0.7, 0.7]) == pytest.approx([0.7, 0.7])
    assert bootstrap_ci([]) is None


def test_bootstrap_pools_tokens_within_records():
    # record A: two tokens of NLL 1 (sum 2), record B: one token of NLL 4 -> resamples AA 1, AB 6/3 = 2, BB 4
    idx = bootstrap_indices(2, n_resamples=4000)
    m = resampled_means(np.array([2.0, 4.0]), np.array([2.0, 1.0]), idx)
    assert m.shape == (4000,)
    assert set(np.round(m, 9)) == {1.0, 2.0, 4.0}
    assert m.mean() == pytest.approx(0.25 * 1 + 0.5 * 2 + 0.25 * 4, abs=0.1)   # 2.25 (record means: 2.5)
    assert bootstrap_ci([2.0, 4.0], [2.0, 1.0]) == [1.0, 4.0]


def test_bootstrap_interval_is_over_records_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    widths = {}
    for n in (25, 400):
        x = rng.normal(0.0, 1.0, n)
        lo, hi = bootstrap_ci(x)
        assert lo < x.mean() < hi
        widths[n] = hi - lo
        # the normal-theory width 2 · 1.96 · s / √n, to Monte-Carlo and small-sample error
        assert widths[n] == pytest.approx(2 * 1.96 * x.std() / np.sqrt(n), rel=0.2)
    assert widths[400] < 0.4 * widths[25]


def test_bootstrap_is_reproducible_and_intervals_separate():
    x = np.arange(30.0)
    assert bootstrap_ci(x) == bootstrap_ci(x)
    assert bootstrap_ci(x, seed=1) != bootstrap_ci(x)
    assert separated([0.0, 1.0], [1.5, 2.0]) and separated([1.5, 2.0], [0.0, 1.0])
    assert not separated([0.0, 1.0], [0.9, 2.0]) and not separated(None, [0.0, 1.0])
    assert percentile_interval([np.nan]) is None
