"""Statistics for verdicts: rank correlations, intervals, permutation and equivalence tests.

Everything scipy already does is delegated to it: :func:`spearman` is ``scipy.stats.spearmanr``,
intervals of correlations over many units are ``scipy.stats.bootstrap`` (percentile) and p-values ``scipy.stats.permutation_test``.
Intervals of means and ratios are analytic (Student's t, cluster-robust t, studentized ratio): they
hold their level at the 4–16 units many verdicts stand on, where a percentile bootstrap does not.
What scipy lacks lives here, once:

- :func:`stratified_permutation_test`: permute within groups (heads within their layer), so a
  correlation that exists only *between* groups does not count;
- :func:`cluster_t`: a mean with a cluster-robust interval on G - 1 degrees of freedom;
- :func:`cluster_bootstrap_ci`: resample whole clusters (layers, K/V groups) when units inside a
  cluster are not independent;
- :func:`partial_spearman`: ρ(x, y | z) from rank residuals;
- :func:`tost_correlation` and :func:`tost_mean`: two one-sided tests, the only way this library
  concludes "no relation" or "no difference" (never from p ≥ 0.05);
- :func:`holm`: Holm–Bonferroni adjusted p-values for several comparisons under one claim.

Inputs are anything ``numpy.asarray`` accepts (tensors included); NaNs are dropped pairwise
where a docstring says so. Every random procedure takes a ``seed`` and is reproducible.
"""

from analysis.stats.correlation import (
    Equivalence,
    bootstrap_ci,
    cluster_bootstrap_ci,
    holm,
    layer_share,
    partial_spearman,
    pearson,
    rank_test,
    spearman,
    spearman_stat,
    stratified_permutation_test,
    tost_correlation,
    tost_mean,
)
from analysis.stats.means import (
    Difference,
    cluster_se,
    cluster_t,
    mcnemar_greater,
    mean_ci,
    paired,
    proportion_ci,
    ratio_ci,
    t_interval,
)

__all__ = [
    "spearman",
    "spearman_stat",
    "pearson",
    "bootstrap_ci",
    "rank_test",
    "stratified_permutation_test",
    "cluster_bootstrap_ci",
    "partial_spearman",
    "Equivalence",
    "tost_correlation",
    "tost_mean",
    "holm",
    "layer_share",
    "t_interval",
    "mean_ci",
    "cluster_se",
    "cluster_t",
    "ratio_ci",
    "proportion_ci",
    "Difference",
    "mcnemar_greater",
    "paired",
]
