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
