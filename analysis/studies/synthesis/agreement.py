"""How well each signal predicts the oracle, and how far signals agree with each other.

A signal and an oracle are both ``[layer, kind]`` maps. Their agreement is a rank correlation
(Spearman's ρ or Kendall's τ_b) over the layers *within each kind*, averaged over the kinds both
cover: pooled over kinds, any signal that sizes an MLP above an attention layer would "predict"
that MLPs cost more, which says nothing about where in depth to compress. Against a block oracle
(the cost of dropping whole layers) a signal enters as its block values
(:meth:`~analysis.studies.synthesis.signals.Signal.block_values`).

Intervals resample whole layers (a layer's attention and MLP together) with replacement, the same
draws for every signal (:func:`draws`), so two signals' correlations can also be compared draw by
draw (:func:`difference`).
"""

from __future__ import annotations

import warnings
from typing import Mapping

import numpy as np
import pandas as pd
from jaxtyping import Float, Int
from scipy.stats import rankdata

from analysis.components import KINDS
from analysis.studies.synthesis.signals import Signal

STATS = ("spearman", "kendall")


def draws(n_layers: int, n_boot: int, seed: int = 0) -> Int[np.ndarray, "boot layer"]:
    """``n_boot`` resamples of the layers (row 0 is the identity: the point estimate)."""
    rng = np.random.default_rng(seed)
    return np.vstack([np.arange(n_layers), rng.integers(0, n_layers, (n_boot, n_layers))])


def _spearman(x: Float[np.ndarray, "b n"], y: Float[np.ndarray, "b n"]) -> Float[np.ndarray, " b"]:
    rx, ry = rankdata(x, axis=1), rankdata(y, axis=1)
    rx, ry = rx - rx.mean(1, keepdims=True), ry - ry.mean(1, keepdims=True)
    den = np.sqrt((rx**2).sum(1) * (ry**2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(1) / den, np.nan)


def _kendall(x: Float[np.ndarray, "b n"], y: Float[np.ndarray, "b n"]) -> Float[np.ndarray, " b"]:
    """Kendall's τ_b per row (ties in either variable handled as scipy's ``kendalltau`` does)."""
    sx = np.sign(x[:, :, None] - x[:, None, :])
    sy = np.sign(y[:, :, None] - y[:, None, :])
    iu = np.triu_indices(x.shape[1], 1)
    sx, sy = sx[:, iu[0], iu[1]], sy[:, iu[0], iu[1]]
    den = np.sqrt((sx != 0).sum(1) * (sy != 0).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (sx * sy).sum(1) / den, np.nan)


def _columns(signal: Signal, block: bool) -> dict[str, np.ndarray]:
    if block:
        return {"block": signal.block_values()}
    return {k: v for k in KINDS if (v := signal.kind_values(k)) is not None}


def correlation_draws(
    signal: Signal, target: Signal, idx: Int[np.ndarray, "boot layer"], stat: str = "spearman"
) -> Float[np.ndarray, " boot"]:
    """The within-kind correlation of ``signal`` with ``target`` averaged over shared kinds, per
    resample of ``idx`` (row 0: the estimate). A ``target`` at block level compares block values."""
    fn = {"spearman": _spearman, "kendall": _kendall}[stat]
    block = target.level == "block"
    a, b = _columns(signal, block), _columns(target, block)
    shared = [k for k in a if k in b]
    if not shared:
        raise ValueError(f"{signal.name} and {target.name} share no component kind.")
    per_kind = np.stack([fn(a[k][idx], b[k][idx]) for k in shared])
    with warnings.catch_warnings():  # a constant map has no rank correlation: NaN where every kind is
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(per_kind, 0)


def interval(d: Float[np.ndarray, " boot"], level: float = 0.95) -> tuple[float, float, float]:
    """``(estimate, low, high)`` from :func:`correlation_draws`: a percentile interval of the resamples."""
    boots = d[1:][~np.isnan(d[1:])]
    if len(boots) == 0:
        return float(d[0]), float("nan"), float("nan")
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return float(d[0]), float(lo), float(hi)


def prediction(
    signals: Mapping[str, Signal], oracles: Mapping[str, Signal], n_boot: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """A row per (signal, oracle): Spearman ρ and Kendall τ_b with layer-cluster intervals."""
    n = next(iter(oracles.values())).scores.values.shape[0]
    idx = draws(n, n_boot, seed)
    rows = []
    for oname, target in oracles.items():
        for sname, s in signals.items():
            row = {"signal": sname, "oracle": oname}
            for stat in STATS:
                est, lo, hi = interval(correlation_draws(s, target, idx, stat))
                row |= {stat: est, f"{stat} low": lo, f"{stat} high": hi}
            rows.append(row)
    return pd.DataFrame(rows)


def difference(
    a: Signal, b: Signal, target: Signal, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """ρ(a, target) − ρ(b, target) with a paired layer-cluster interval (the same resamples)."""
    idx = draws(target.scores.values.shape[0], n_boot, seed)
    return interval(correlation_draws(a, target, idx) - correlation_draws(b, target, idx), level)


def matrix(signals: Mapping[str, Signal]) -> pd.DataFrame:
    """Spearman ρ between every two signals (within kind, averaged over shared kinds)."""
    names = list(signals)
    n = next(iter(signals.values())).scores.values.shape[0]
    idx = np.arange(n)[None]
    m = [[float(correlation_draws(signals[a], signals[b], idx)[0]) for b in names] for a in names]
    return pd.DataFrame(m, index=names, columns=names)
