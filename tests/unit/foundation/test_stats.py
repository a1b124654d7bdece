"""analysis.stats against scipy, closed forms and constructed data whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from analysis import stats


def test_spearman_and_pearson_equal_scipy():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=50), rng.normal(size=50)
    y[:10] = x[:10]
    assert stats.spearman(x, y) == pytest.approx(sps.spearmanr(x, y).statistic, rel=1e-12)
    assert stats.pearson(x, y) == pytest.approx(sps.pearsonr(x, y).statistic, rel=1e-12)
    assert np.isnan(stats.spearman(np.ones(5), np.arange(5)))


def test_rank_test_finds_a_monotone_relation_and_not_noise():
    rng = np.random.default_rng(1)
    x = rng.normal(size=80)
    strong = stats.rank_test(x, np.exp(x) + 0.1 * rng.normal(size=80), n_boot=500, n_perm=500)
    assert strong["rho"] > 0.9 and strong["ci_low"] > 0.8 and strong["p_perm"] < 0.01
    null = stats.rank_test(x, rng.normal(size=80), n_boot=500, n_perm=500)
    assert null["ci_low"] < 0 < null["ci_high"] and null["p_perm"] > 0.05
    with pytest.raises(ValueError, match="at least 3"):
        stats.rank_test([1, 2], [1, 2])
    flat = stats.rank_test(np.ones(20), x[:20], n_boot=100, n_perm=100)
    assert all(np.isnan(flat[k]) for k in ("rho", "ci_low", "ci_high", "p_perm"))  # not "significant"


def test_bootstrap_drops_resamples_without_a_value():
    def slope(x, y, axis=-1):  # least-squares slope of y on x: undefined (0/0) where x is constant
        xc = x - x.mean(axis=axis, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (xc * y).sum(axis=axis) / (xc**2).sum(axis=axis)

    x = np.array([0.0] * 6 + [1.0, 2.0])  # many resamples of x are constant: the slope is undefined there
    y = np.arange(8.0)
    lo, hi = stats.bootstrap_ci((x, y), slope, n_boot=300)
    assert not np.isnan(lo) and lo <= hi


def test_stratified_permutation_ignores_between_group_differences():
    rng = np.random.default_rng(2)
    groups = np.repeat(np.arange(10), 9)
    level = rng.normal(size=10)[groups] * 10  # both depend on the group only
    x, y = level + rng.normal(size=90), level + rng.normal(size=90)
    assert stats.rank_test(x, y, n_boot=200, n_perm=200)["rho"] > 0.8  # pooled: strong
    within = stats.stratified_permutation_test(x, y, groups, n_perm=500)
    assert abs(within["rho"]) < 0.3 and within["p_perm"] > 0.05 and within["n_groups"] == 10
    z = rng.normal(size=90)
    related = stats.stratified_permutation_test(z, z + 0.3 * rng.normal(size=90), groups, n_perm=500)
    assert related["rho"] > 0.8 and related["p_perm"] < 0.01


def test_cluster_bootstrap_is_wider_than_the_iid_one_when_clusters_share_noise():
    rng = np.random.default_rng(3)
    clusters = np.repeat(np.arange(8), 20)
    x = rng.normal(size=8)[clusters] + 0.1 * rng.normal(size=160)
    y = rng.normal(size=8)[clusters] + 0.1 * rng.normal(size=160)
    lo_c, hi_c = stats.cluster_bootstrap_ci(x, y, clusters, n_boot=500)
    lo_i, hi_i = stats.bootstrap_ci((x, y), stats.spearman_stat, n_boot=500)
    assert hi_c - lo_c > 2 * (hi_i - lo_i)
    with pytest.raises(ValueError, match="at least 2 clusters"):
        stats.cluster_bootstrap_ci(x, y, np.zeros(160))


def test_partial_spearman_removes_a_common_cause():
    rng = np.random.default_rng(4)
    z = rng.normal(size=300)
    x, y = z + 0.3 * rng.normal(size=300), z + 0.3 * rng.normal(size=300)
    assert stats.spearman(x, y) > 0.7
    assert abs(stats.partial_spearman(x, y, z)) < 0.15


def test_tost_concludes_equivalence_only_with_enough_data():
    assert stats.tost_correlation(0.01, n=2000, margin=0.1).equivalent
    assert not stats.tost_correlation(0.01, n=30, margin=0.1).equivalent  # too few to exclude 0.1
    assert not stats.tost_correlation(0.3, n=2000, margin=0.1).equivalent  # a real relation
    rng = np.random.default_rng(5)
    assert stats.tost_mean(rng.normal(0, 1, 2000), margin=0.2).equivalent
    assert not stats.tost_mean(rng.normal(0.5, 1, 2000), margin=0.2).equivalent
    with pytest.raises(ValueError, match="margin"):
        stats.tost_correlation(0.0, n=100, margin=1.5)


def test_holm_matches_the_step_down_definition():
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])


def test_mean_ci_and_layer_share():
    mean, lo, hi = stats.mean_ci([1.0, 2.0, 3.0, 4.0, float("nan")], n_boot=500)
    assert mean == 2.5 and lo < mean < hi
    assert stats.layer_share(np.array([[1.0, 1.0], [3.0, 3.0]])) == pytest.approx(1.0)
    assert stats.layer_share(np.array([[1.0, 3.0], [1.0, 3.0]])) == pytest.approx(0.0)


def test_paired_mean_difference_is_mean_ci_of_the_differences():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 1.0, 30), rng.normal(0.0, 1.0, 30)
    d = stats.paired(a, b, unit="windows")
    est, lo, hi = stats.mean_ci(a - b)
    assert (d.estimate, d.low, d.high) == pytest.approx((est, lo, hi), rel=1e-12)
    assert d.n == 30 and d.unit == "windows"
    assert d.p == pytest.approx(sps.ttest_1samp(a - b, 0.0, alternative="greater").pvalue, rel=1e-9)
    assert d.p < 0.05 < d.p_reverse


def test_paired_booleans_use_exact_mcnemar():
    a = np.array([True] * 8 + [False] * 2)
    b = ~a
    d = stats.paired(a, b, unit="questions")
    assert d.p == pytest.approx(sps.binomtest(8, 10, 0.5, alternative="greater").pvalue, rel=1e-12)
    assert d.estimate == pytest.approx(0.6, rel=1e-12)


def test_paired_weighted_ratio_is_a_relative_perplexity_change():
    base, tokens = np.full(20, 100.0), np.full(20, 50.0)
    d = stats.paired(base + 50 * np.log(1.5), base, "windows", weights=tokens, transform=lambda x: np.exp(x) - 1)
    assert (d.estimate, d.low, d.high) == pytest.approx((0.5, 0.5, 0.5), rel=1e-9)


def test_paired_clusters_count_clusters_and_widen_the_interval():
    rng = np.random.default_rng(1)
    shift = np.repeat(rng.normal(0, 1, 6), 20)  # six clusters, each with its own offset
    d_units = stats.paired(shift + rng.normal(0, 0.1, 120))
    d_clusters = stats.paired(shift + rng.normal(0, 0.1, 120), cluster=np.repeat(np.arange(6), 20))
    assert d_clusters.n == 6 and d_units.n == 120
    assert d_clusters.high - d_clusters.low > 2 * (d_units.high - d_units.low)


def test_paired_empty_is_undefined_and_proportion_ci_is_wilson():
    d = stats.paired([])
    assert d.n == 0 and np.isnan(d.estimate)
    lo, hi = stats.proportion_ci(3, 10)
    ci = sps.binomtest(3, 10).proportion_ci(method="wilson")
    assert (lo, hi) == pytest.approx((ci.low, ci.high), rel=1e-12)


def test_t_interval_is_scipys_and_holds_its_level_at_small_n():
    x = np.array([0.3, -0.1, 0.8, 0.2, 0.5])
    lo, hi = stats.t_interval(x)
    ref = sps.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sps.sem(x))
    assert (lo, hi) == pytest.approx(ref, rel=1e-12)
    rng = np.random.default_rng(0)
    for n in (4, 6, 8, 12):  # one-sided miss rate of a null mean: nominal 2.5%
        above = sum(stats.mean_ci(rng.normal(0, 1, n))[1] > 0 for _ in range(4000))
        assert above / 4000 < 0.035, n


def test_cluster_t_matches_the_cr1_sandwich_and_counts_clusters():
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(5), [3, 4, 5, 6, 7])
    x = rng.normal(0, 1, len(g)) + np.repeat(rng.normal(0, 1, 5), [3, 4, 5, 6, 7])
    mean, lo, hi, p, n = stats.cluster_t(x, g)
    # the same standard error from an intercept-only OLS with CR1 cluster-robust variance, by hand
    e = x - x.mean()
    meat = sum(e[g == c].sum() ** 2 for c in range(5))
    se = np.sqrt(5 / 4 * meat) / len(x)
    assert n == 5 and mean == pytest.approx(x.mean(), rel=1e-12)
    assert stats.cluster_se(x, g) == pytest.approx((x.mean(), se, 5), rel=1e-12)
    assert (hi - lo) / 2 == pytest.approx(sps.t.ppf(0.975, 4) * se, rel=1e-9)
    assert p == pytest.approx(sps.t.sf(x.mean() / se, 4), rel=1e-9)
    assert np.isnan(stats.cluster_t([1.0, 2.0], [0, 0])[1])  # one cluster: no interval


def test_ratio_ci_is_studentized_and_covers_a_known_ratio():
    rng = np.random.default_rng(5)
    hits = 0
    for _ in range(1000):
        den = rng.integers(20, 60, 10).astype(float)
        num = 0.5 * den + rng.normal(0, 3, 10)
        lo, hi = stats.ratio_ci(num, den)
        hits += lo < 0.5 < hi
    assert 0.92 < hits / 1000 < 0.98
