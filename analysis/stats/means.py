"""Means, ratios and paired differences with intervals that hold at small n (t, cluster-robust t,
studentized ratio), proportions, and McNemar."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import stats as sps


def t_interval(x, level: float = 0.95) -> tuple[float, float]:
    """Student's t interval of the mean of ``x`` (NaNs dropped): ``mean ± t_{n-1} · sd/√n``.

    It holds its level at the small n verdicts use (4–16 units), where a percentile bootstrap is
    too narrow (a one-sided false "reproduced" rate of 9.5% at n = 4 against a nominal 2.5%).
    A point when every value is equal; NaN for fewer than two values."""
    x = np.asarray(x, dtype=float).ravel()
    x = x[~np.isnan(x)]
    if len(x) < 2:
        return float("nan"), float("nan")
    if np.ptp(x) == 0:
        return float(x[0]), float(x[0])
    half = sps.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)


def mean_ci(x, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """The mean of ``x`` (NaNs dropped) and its Student's t interval (:func:`t_interval`):
    ``(mean, lo, hi)``. ``n_boot`` and ``seed`` are accepted for callers that pass them; the
    interval is analytic."""
    x = np.asarray(x, dtype=float).ravel()
    x = x[~np.isnan(x)]
    if len(x) == 0:
        raise ValueError("mean_ci needs at least one value that is not NaN.")
    if len(x) == 1 or np.ptp(x) == 0:
        return float(x.mean()), float(x.mean()), float(x.mean())
    lo, hi = t_interval(x, level)
    return float(x.mean()), lo, hi


def cluster_se(x, clusters) -> tuple[float, float, int]:
    """The mean of ``x`` over units (NaNs dropped) and its cluster-robust (CR1) standard error,
    ``sqrt(G/(G-1) · Σ_g (Σ_{i∈g} (x_i - mean))²) / n``: ``(mean, se, G)``. NaN se for fewer than 2 clusters."""
    x = np.asarray(x, dtype=float).ravel()
    clusters = np.asarray(clusters).ravel()
    if x.shape != clusters.shape:
        raise ValueError(f"x and clusters must have equal length, got {x.shape} and {clusters.shape}.")
    ok = ~np.isnan(x)
    x, clusters = x[ok], clusters[ok]
    labels = np.unique(clusters)
    g, n = len(labels), len(x)
    if n == 0:
        return float("nan"), float("nan"), 0
    mean = float(x.mean())
    if g < 2:
        return mean, float("nan"), g
    sums = np.array([(x[clusters == c] - mean).sum() for c in labels])
    return mean, math.sqrt(g / (g - 1) * float((sums**2).sum())) / n, g


def cluster_t(x, clusters, level: float = 0.95) -> tuple[float, float, float, float, int]:
    """The mean of ``x`` over units with its cluster-robust standard error (:func:`cluster_se`) and a t
    interval on ``G - 1`` degrees of freedom, ``G`` the number of clusters: units of one cluster (facts of
    one relation, problems of one task) are not independent. Returns ``(mean, lo, hi, p_greater, G)``,
    ``p_greater`` the one-sided p-value that the mean exceeds 0. NaN interval for fewer than 2 clusters."""
    mean, se, g = cluster_se(x, clusters)
    if g < 2:
        return mean, float("nan"), float("nan"), float("nan"), g
    if se == 0:
        return mean, mean, mean, float(mean <= 0), g
    half = sps.t.ppf(0.5 + level / 2, g - 1) * se
    return mean, mean - half, mean + half, float(sps.t.sf(mean / se, g - 1)), g


def ratio_ci(
    numer, denom, transform: Callable = np.asarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95, minus=None
) -> tuple[float, float]:
    """A studentized interval of ``transform(R)``, ``R = (Σ numer - Σ minus) / Σ denom`` over units
    (e.g. perplexity: ``np.exp`` of Σ window NLL / Σ window tokens). The standard error of ``R`` is
    the ratio estimator's linearisation, ``sd(top_i - R·denom_i) / (√n · mean(denom))``, with a t
    quantile on ``n - 1`` degrees of freedom; ``transform`` (monotone increasing, acting on arrays)
    maps the endpoints. ``n_boot`` and ``seed`` are accepted for callers that pass them."""
    num, den = np.asarray(numer, dtype=float), np.asarray(denom, dtype=float)
    top = num if minus is None else num - np.asarray(minus, dtype=float)
    n = len(top)
    r = top.sum() / den.sum()
    if n < 2:
        return float("nan"), float("nan")
    se = (top - r * den).std(ddof=1) / (math.sqrt(n) * den.mean())
    half = sps.t.ppf(0.5 + level / 2, n - 1) * se
    lo, hi = transform(np.array([r - half, r + half]))
    return float(lo), float(hi)


def proportion_ci(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of ``k`` successes in ``n`` trials (``scipy.stats.binomtest``); NaN for ``n = 0``."""
    if n == 0:
        return float("nan"), float("nan")
    ci = sps.binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


@dataclass(frozen=True)
class Difference:
    """``a - b`` compared unit by unit (:func:`paired`): the estimate, its interval, a one-sided p that
    ``a > b``, and how many units of what kind stood behind it."""

    estimate: float
    low: float
    high: float
    p: float
    """One-sided p-value of ``a > b`` (exact McNemar for booleans, else a paired t-test; NaN when undefined)."""
    n: int
    unit: str = "units"
    level: float = 0.95
    p_reverse: float = float("nan")
    """One-sided p-value of ``a < b``, by the same test."""


def mcnemar_greater(a: Sequence[bool], b: Sequence[bool]) -> float:
    """One-sided exact McNemar p-value that ``a`` is right more often than ``b`` on the same items."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    k, n = int((a & ~b).sum()), int((a ^ b).sum())
    return 1.0 if n == 0 else float(sps.binomtest(k, n, 0.5, alternative="greater").pvalue)


def _one_sided(d: np.ndarray, alternative: str) -> float:
    if len(d) == 0:
        return float("nan")
    if np.ptp(d) == 0:
        return float(d[0] <= 0) if alternative == "greater" else float(d[0] >= 0)
    return float(sps.ttest_1samp(d, 0.0, alternative=alternative).pvalue)


def paired(
    a,
    b=None,
    unit: str = "units",
    cluster=None,
    weights=None,
    transform: Callable | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> Difference:
    """``a - b`` paired unit by unit (``b=None``: ``a`` already holds the differences), as a :class:`Difference`.

    - default: the mean difference with a Student's t interval over units (:func:`mean_ci`);
    - ``weights`` (e.g. tokens per window, with ``a``/``b`` summed losses per window): the ratio
      ``(Σa - Σb) / Σ weights`` with a studentized interval (:func:`ratio_ci`), then ``transform`` of
      it, a monotone array function (``lambda x: np.exp(x) - 1`` gives a relative perplexity change);
    - ``cluster`` (one label per unit): the mean difference with a cluster-robust t interval and p
      (:func:`cluster_t`); ``n`` then counts clusters.

    Intervals are analytic, so ``n_boot`` and ``seed`` no longer change them.
    """
    x = np.asarray(a)
    binary = x.dtype == bool and (b is None or np.asarray(b).dtype == bool)
    d = x.astype(float) - (0.0 if b is None else np.asarray(b, dtype=float))
    if binary and b is not None:
        p, p_rev = mcnemar_greater(a, b), mcnemar_greater(b, a)
    else:
        p, p_rev = _one_sided(d, "greater"), _one_sided(d, "less")
    if len(d) == 0:
        return Difference(float("nan"), float("nan"), float("nan"), p, 0, unit, level, p_rev)
    if weights is not None:
        f = transform or np.asarray
        xa, xb = x.astype(float), np.zeros(len(d)) if b is None else np.asarray(b, dtype=float)
        est = float(f((xa.sum() - xb.sum()) / np.asarray(weights, dtype=float).sum()))
        lo, hi = ratio_ci(xa, weights, f, n_boot, seed, level, minus=xb)
        return Difference(est, lo, hi, p, len(d), unit, level, p_rev)
    if cluster is not None:
        est, lo, hi, p, g = cluster_t(d, cluster, level)
        _, _, _, p_rev, _ = cluster_t(-d, cluster, level)
        return Difference(est, lo, hi, p, g, unit, level, p_rev)
    est, lo, hi = mean_ci(d, n_boot, seed, level)
    return Difference(est, lo, hi, p, len(d), unit, level, p_rev)
