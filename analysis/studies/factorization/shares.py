"""The statistics behind the factorization study's verdicts: the share of an above-chance score a
compressed model keeps (a Fieller interval, cluster-robust), linear contrasts over clustered units,
and the per-item probe scores the probe claims pair.

A *kept share* is ``(mean c - k) / (mean b - k)``: of the uncompressed model's margin above chance
``k`` on items ``b``, the part the compressed model keeps on the same items ``c``. It is a ratio of
two means, so its interval is Fieller's: the set of shares ``τ`` for which the linear contrast
``mean(c - τ b - (1 - τ) k)`` is not significantly different from 0 by a cluster-robust t test on
``G - 1`` degrees of freedom (``G`` clusters: facts of one relation, MMLU questions of one subject,
the two answers of one probe question). Deciding ``share < τ`` by that interval is the same as the
exact one-sided t test of the contrast, so it holds its level at the sizes used here; and when the
uncompressed margin itself is not significantly above chance the interval is unbounded, and every
verdict read from it is inconclusive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from analysis import probing, stats

CHANCE = 0.25
"""Chance accuracy of 4-way multiple choice (MMLU, and our fact questions)."""
TOP_LAYERS = 4
"""Probe scores are the mean over the top four layers, as the seed's Tables 3 and 4 report."""


@dataclass(frozen=True)
class Share:
    """A kept share with its Fieller interval (``±inf`` when unbounded) over ``n`` clusters."""

    estimate: float
    low: float
    high: float
    n: int
    base: float
    """The uncompressed score (mean over the items both models have)."""
    comp: float
    """The compressed score on the same items."""
    se: float = float("nan")
    """The delta-method standard error of the share (to compare two shares; ``inf`` when unbounded)."""

    def text(self) -> str:
        return f"{self.estimate:.2f} [{self.low:.2f}, {self.high:.2f}] ({self.base:.3f} -> {self.comp:.3f}, {self.n} clusters)"


def _clusters(x: np.ndarray, clusters) -> np.ndarray:
    return np.arange(len(x)) if clusters is None else np.asarray(clusters).ravel()


def kept_share(base, comp, chance: float, clusters=None, level: float = 0.95) -> Share:
    """The share of ``base``'s margin above ``chance`` that ``comp`` keeps, on the same items (NaN
    pairs dropped), with a cluster-robust Fieller interval (module docstring)."""
    b, c = np.asarray(base, dtype=float).ravel(), np.asarray(comp, dtype=float).ravel()
    if b.shape != c.shape:
        raise ValueError(f"base and comp must pair item by item, got {b.shape} and {c.shape}.")
    g_all = _clusters(b, clusters)
    ok = ~(np.isnan(b) | np.isnan(c))
    b, c, g_all = b[ok] - chance, c[ok] - chance, g_all[ok]
    labels = np.unique(g_all)
    g, n = len(labels), len(b)
    if n == 0:
        return Share(float("nan"), float("nan"), float("nan"), 0, float("nan"), float("nan"))
    B, C = float(b.mean()), float(c.mean())
    est = C / B if B != 0 else float("nan")
    if g < 2:
        return Share(est, float("nan"), float("nan"), g, B + chance, C + chance)
    idx = np.searchsorted(labels, g_all)
    sums = np.stack(
        [np.bincount(idx, weights=c - C, minlength=g), np.bincount(idx, weights=b - B, minlength=g)]
    )  # [2, G]
    V = g / (g - 1) * (sums @ sums.T) / n**2  # cluster-robust covariance of (C, B)
    t2 = sps.t.ppf(0.5 + level / 2, g - 1) ** 2
    a, beta, gamma = B**2 - t2 * V[1, 1], C * B - t2 * V[0, 1], C**2 - t2 * V[0, 0]
    disc = beta**2 - a * gamma
    if a <= 0 or disc < 0:  # the base margin is not significantly above chance: no bounded interval
        lo, hi, se = -math.inf, math.inf, math.inf
    else:
        lo, hi = (beta - math.sqrt(disc)) / a, (beta + math.sqrt(disc)) / a
        se = math.sqrt(max(V[0, 0] - 2 * est * V[0, 1] + est**2 * V[1, 1], 0.0)) / abs(B)
    return Share(est, lo, hi, g, B + chance, C + chance, se)


def contrast_t(x, clusters=None, level: float = 0.95) -> tuple[float, float, float, int]:
    """Mean of ``x`` (NaNs dropped) with a cluster-robust t interval on ``G - 1`` df: ``(mean, lo, hi, G)``
    (:func:`analysis.stats.cluster_t`, each unit its own cluster when ``clusters`` is None)."""
    x = np.asarray(x, dtype=float).ravel()
    est, lo, hi, _, g = stats.cluster_t(x, _clusters(x, clusters), level)
    return est, lo, hi, g


def subject(group: str) -> str:
    """An MMLU item's subject from its id (``"test/anatomy/12"`` -> ``"anatomy"``); other groups are their own cluster."""
    parts = str(group).split("/")
    return parts[1] if len(parts) == 3 else str(group)


def clusters_of(groups: Sequence[str]) -> list[str]:
    """The clusters of probe items: MMLU questions by subject (questions of one subject are not
    independent), every other group by itself."""
    return [subject(g) for g in groups]


def item_hits(res: probing.ProbeResult, kind: str = "mlp", target: str = "task", top: int = TOP_LAYERS) -> np.ndarray:
    """Each probe item's held-out correctness averaged over the top ``top`` layers, ``[n]`` (NaN for an
    item no split tested)."""
    h = res.hits[kind][target]
    return h[max(0, h.shape[0] - top) :].mean(0).numpy()


def named_means(x: np.ndarray, groups: Sequence[str]) -> dict[str, float]:
    """``{group: mean of x over its items}`` (NaNs dropped, groups sorted)."""
    means = pd.DataFrame({"x": x, "g": list(groups)}).dropna().groupby("g")["x"].mean()
    return dict(zip(means.index, means.to_numpy()))


def group_means(x: np.ndarray, groups: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """``x`` averaged within each group (NaNs dropped), and each group's cluster (:func:`clusters_of`)."""
    means = named_means(x, groups)
    return np.array(list(means.values())), clusters_of(list(means))
