"""Rank correlations, their intervals and permutation tests, equivalence tests and Holm's correction."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import stats as sps


def _pair(x, y, min_n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Flattened float arrays of equal length with pairs containing a NaN dropped."""
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"Need paired samples of equal length, got {x.shape} and {y.shape}.")
    ok = ~(np.isnan(x) | np.isnan(y))
    x, y = x[ok], y[ok]
    if len(x) < min_n:
        raise ValueError(f"Need at least {min_n} complete pairs, got {len(x)}.")
    return x, y


def _correlation(scipy_fn, x, y) -> float:
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(scipy_fn(x, y).statistic)


def spearman(x, y) -> float:
    """Spearman's ρ (average ranks for ties; NaN when either side is constant)."""
    return _correlation(sps.spearmanr, x, y)


def pearson(x, y) -> float:
    """Pearson's r (NaN when either side is constant)."""
    return _correlation(sps.pearsonr, x, y)


def spearman_stat(x, y, axis=-1):
    """Vectorised Spearman ρ along ``axis`` (for scipy's resampling functions)."""
    rx = sps.rankdata(x, axis=axis)
    ry = sps.rankdata(y, axis=axis)
    rx = rx - rx.mean(axis=axis, keepdims=True)
    ry = ry - ry.mean(axis=axis, keepdims=True)
    den = np.sqrt((rx**2).sum(axis=axis) * (ry**2).sum(axis=axis))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(axis=axis) / den


def bootstrap_ci(
    data: Sequence,
    statistic: Callable,
    n_boot: int = 2000,
    seed: int = 0,
    paired: bool = True,
    level: float = 0.95,
) -> tuple[float, float]:
    """A percentile bootstrap interval of ``statistic(*data, axis=-1)`` (``scipy.stats.bootstrap``).

    ``data`` is a tuple of samples; ``paired=True`` resamples them together (for correlations).
    """
    data = tuple(np.asarray(d, dtype=float).ravel() for d in data)
    with warnings.catch_warnings():  # degenerate resamples (e.g. a constant one) give NaN: dropped below
        warnings.simplefilter("ignore")
        res = sps.bootstrap(
            data,
            statistic,
            n_resamples=n_boot,
            paired=paired,
            vectorized=True,
            method="percentile",
            confidence_level=level,
            rng=np.random.default_rng(seed),
        )
    dist = np.asarray(res.bootstrap_distribution, dtype=float).ravel()
    dist = dist[~np.isnan(dist)]
    if len(dist) == 0:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    lo, hi = np.percentile(dist, [100 * alpha, 100 * (1 - alpha)])
    return float(lo), float(hi)


def rank_test(x, y, n_boot: int = 2000, n_perm: int = 2000, seed: int = 0) -> dict[str, float]:
    """Spearman ρ over complete pairs with a 95% percentile bootstrap interval (pairs resampled)
    and a two-sided permutation p-value (``scipy.stats.permutation_test``, pairings permuted).
    Bootstrap resamples whose ρ is undefined (a constant side) are dropped. When a side is
    constant, ρ, its interval and p are all NaN.

    Returns ``{"rho", "ci_low", "ci_high", "p_perm", "n"}``.
    """
    x, y = _pair(x, y)
    rho = spearman(x, y)
    if math.isnan(rho):
        return {"rho": rho, "ci_low": rho, "ci_high": rho, "p_perm": rho, "n": len(x)}
    lo, hi = bootstrap_ci((x, y), spearman_stat, n_boot, seed)
    perm = sps.permutation_test(
        (x, y),
        spearman_stat,
        permutation_type="pairings",
        vectorized=True,
        n_resamples=n_perm,
        alternative="two-sided",
        rng=np.random.default_rng(seed),
    )
    return {"rho": rho, "ci_low": lo, "ci_high": hi, "p_perm": float(perm.pvalue), "n": len(x)}


def _within(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Ranks within each group, centred on the group's mean rank."""
    out = np.empty(len(values))
    for g in np.unique(groups):
        m = groups == g
        r = sps.rankdata(values[m])
        out[m] = r - r.mean()
    return out


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    den = math.sqrt(float((a**2).sum() * (b**2).sum()))
    return float((a * b).sum() / den) if den > 0 else float("nan")


def stratified_permutation_test(x, y, groups, n_perm: int = 2000, seed: int = 0) -> dict[str, float]:
    """Spearman ρ *within* groups, with y permuted only inside each group.

    Each group's values are ranked among themselves and centred, and the centred ranks are
    correlated over all units: only how units are ordered inside their group counts, never how
    groups differ. ``groups`` labels each unit (e.g. a head's layer). Pairs with a NaN are dropped.
    Returns ``{"rho", "p_perm", "n", "n_groups"}``.
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    groups = np.asarray(groups).ravel()
    if not (x.shape == y.shape == groups.shape):
        raise ValueError(f"x, y and groups must have equal length, got {x.shape}, {y.shape}, {groups.shape}.")
    ok = ~(np.isnan(x) | np.isnan(y))
    x, y, groups = x[ok], y[ok], groups[ok]
    if len(x) < 3:
        raise ValueError(f"Need at least 3 complete pairs, got {len(x)}.")
    rx, ry = _within(x, groups), _within(y, groups)
    rho = _corr(rx, ry)
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    hits = 0
    for _ in range(n_perm):
        perm = np.arange(len(ry))
        for idx in members:
            perm[idx] = rng.permutation(idx)
        hits += abs(_corr(rx, ry[perm])) >= abs(rho) - 1e-12
    return {"rho": rho, "p_perm": (1 + hits) / (n_perm + 1), "n": len(x), "n_groups": len(members)}


def cluster_bootstrap_ci(
    x,
    y,
    clusters,
    statistic: Callable[[np.ndarray, np.ndarray], float] = spearman,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """A percentile interval of ``statistic(x, y)`` resampling whole clusters with replacement.

    Units in one cluster (heads of one layer, query heads sharing a K/V group) are not
    independent; resampling them one by one makes an interval too narrow.
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    clusters = np.asarray(clusters).ravel()
    ok = ~(np.isnan(x) | np.isnan(y))
    x, y, clusters = x[ok], y[ok], clusters[ok]
    members = [np.flatnonzero(clusters == c) for c in np.unique(clusters)]
    if len(members) < 2:
        raise ValueError(f"A cluster bootstrap needs at least 2 clusters, got {len(members)}.")
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
        v = statistic(x[idx], y[idx])
        if not math.isnan(v):
            boots.append(v)
    if not boots:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    lo, hi = np.quantile(boots, [alpha, 1 - alpha])
    return float(lo), float(hi)


def partial_spearman(x, y, z) -> float:
    """Spearman ρ(x, y | z): the correlation of the rank residuals after regressing out z's ranks
    (triples with a NaN dropped)."""
    x, y, z = (np.asarray(v, dtype=float).ravel() for v in (x, y, z))
    ok = ~(np.isnan(x) | np.isnan(y) | np.isnan(z))
    rx, ry, rz = (sps.rankdata(v[ok]) for v in (x, y, z))
    design = np.stack([rz, np.ones_like(rz)], 1)

    def resid(a: np.ndarray) -> np.ndarray:
        return a - design @ np.linalg.lstsq(design, a, rcond=None)[0]

    return _corr(resid(rx), resid(ry))


@dataclass(frozen=True)
class Equivalence:
    """The result of a two one-sided tests (TOST) procedure."""

    estimate: float
    margin: float
    p: float
    """The larger of the two one-sided p-values; equivalence is concluded when ``p < alpha``."""
    equivalent: bool
    alpha: float = 0.05


def tost_correlation(r: float, n: int, margin: float = 0.1, alpha: float = 0.05, rank: bool = True) -> Equivalence:
    """Whether a correlation lies inside ``(-margin, margin)``: TOST on Fisher's z.

    The standard error of ``atanh(r)`` is ``1/sqrt(n - 3)`` for Pearson's r and
    ``sqrt(1.06/(n - 3))`` for Spearman's ρ (Fieller, Hartley & Pearson 1957; ``rank=True``).
    """
    if not 0 < margin < 1:
        raise ValueError(f"The equivalence margin must lie in (0, 1), got {margin}.")
    if n < 4:
        raise ValueError(f"TOST on a correlation needs n >= 4, got {n}.")
    se = math.sqrt((1.06 if rank else 1.0) / (n - 3))
    zr, zm = math.atanh(max(min(r, 1 - 1e-12), -1 + 1e-12)), math.atanh(margin)
    p_lower = sps.norm.sf((zr + zm) / se)  # H0: r <= -margin
    p_upper = sps.norm.cdf((zr - zm) / se)  # H0: r >= +margin
    p = float(max(p_lower, p_upper))
    return Equivalence(float(r), margin, p, p < alpha, alpha)


def tost_mean(x, margin: float, alpha: float = 0.05) -> Equivalence:
    """Whether the mean of ``x`` (e.g. paired differences) lies inside ``(-margin, margin)``:
    two one-sided t-tests."""
    x = np.asarray(x, dtype=float).ravel()
    x = x[~np.isnan(x)]
    if margin <= 0:
        raise ValueError(f"The equivalence margin must be positive, got {margin}.")
    if len(x) < 2:
        raise ValueError(f"TOST on a mean needs at least 2 values, got {len(x)}.")
    lower = sps.ttest_1samp(x, -margin, alternative="greater").pvalue
    upper = sps.ttest_1samp(x, margin, alternative="less").pvalue
    p = float(max(lower, upper))
    return Equivalence(float(x.mean()), margin, p, p < alpha, alpha)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input order (compare each with alpha)."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p)
    adjusted = np.empty(len(p))
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def layer_share(x) -> float:
    """The share of a ``[layer, head]`` array's variance that lies between layers (η²: variance
    of the layer means over the total variance); 1 when every head of a layer has one value."""
    x = np.asarray(x, dtype=float)
    total = x.var()
    return float(x.mean(1).var() / total) if total > 0 else float("nan")
