"""Seed 003's seven claims as verdicts: each a stated rule applied to our measurements and intervals."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from analysis import stats
from analysis.studies.variance.seed import SEED_RESULTS
from analysis.studies.verdicts import Verdict, combine, interval_verdict

EASY_BAND = (0.2, 0.4)
""""About 30%" read as the band 20-40%."""
R2_LEVEL = 0.9
""""R² about 0.95" read as: mean held-out R² above 0.9."""
SMALL_COST = 0.10
"""A replacement is "cheap" when perplexity rises by less than 10%."""
FAILS = 0.25
"""Replacement "fails" when perplexity rises by more than 25%."""


def _claim(key: str) -> str:
    return SEED_RESULTS[key]["claim"]


def _seed(key: str):
    return SEED_RESULTS[key]["seed"]


def uncorrelated(share_per_layer: Sequence[float], importance_gap: Sequence[float]) -> Verdict:
    """Variance vs predictive directions. Parts: (a) the share of canonical correlations between the
    top-k variance and top-k gradient subspaces that are "uncorrelated", one value per layer, is above
    one half; (b) removing k predictive directions costs more loss than removing k variance ones
    (``importance_gap``: per-window ΔNLL(predictive) - ΔNLL(variance), pooled over ablation layers)."""
    share, lo, hi = stats.mean_ci(share_per_layer)
    a = interval_verdict(
        "most canonical correlations are low", share, lo, hi, 0.5, ">", len(share_per_layer), what="share"
    )
    gap, glo, ghi = stats.mean_ci(importance_gap)
    b = interval_verdict(
        "predictive directions matter more than variance ones",
        gap,
        glo,
        ghi,
        0.0,
        ">",
        len(importance_gap),
        what="ΔNLL gap (nats)",
    )
    out = combine(_claim("uncorrelated"), [a, b], seed=_seed("uncorrelated"))
    return Verdict(out.claim, out.verdict, out.criterion, f"{a.evidence}; {b.evidence}", out.seed, share, lo, hi)


def r2_level(r2_per_block: Sequence[float]) -> Verdict:
    """Mean held-out R² (block input -> output, clean upstream) over blocks, bootstrap over blocks, above 0.9."""
    m, lo, hi = stats.mean_ci(r2_per_block)
    return interval_verdict(
        _claim("r2_gpt2"), m, lo, hi, R2_LEVEL, ">", len(r2_per_block), seed=_seed("r2_gpt2"), what="mean R²"
    )


def r2_depth(depth: Sequence[float], r2: Sequence[float]) -> Verdict:
    """Spearman ρ of held-out R² (of the update) against depth, 95% bootstrap interval, above 0."""
    t = stats.rank_test(depth, r2)
    return interval_verdict(
        _claim("r2_depth"),
        t["rho"],
        t["ci_low"],
        t["ci_high"],
        0.0,
        ">",
        int(t["n"]),
        seed=_seed("r2_depth"),
        what="Spearman ρ(depth, R²)",
    )


def direct_beats_factor(window_gap: Sequence[float], amplification: Sequence[float]) -> Verdict:
    """Parts: (a) per-window NLL of factor-then-quantize minus direct quantization at matched bits is
    above 0; (b) the mean amplification (product error over factor error) is above 1."""
    g, lo, hi = stats.mean_ci(window_gap)
    a = interval_verdict("direct has lower NLL", g, lo, hi, 0.0, ">", len(window_gap), what="NLL gap (nats)")
    m, alo, ahi = stats.mean_ci(amplification)
    b = interval_verdict("errors are amplified", m, alo, ahi, 1.0, ">", len(amplification), what="amplification")
    out = combine(_claim("direct_beats_factor"), [a, b], seed=_seed("direct_beats_factor"))
    return Verdict(out.claim, out.verdict, out.criterion, f"{a.evidence}; {b.evidence}", out.seed, g, lo, hi)


def easy_tokens(share: float, lo: float, hi: float, n: int, threshold: float) -> Verdict:
    """The easy share at a fixed threshold: reproduced if its interval lies inside 20-40%, not
    reproduced if it misses the band entirely, else inconclusive."""
    band_lo, band_hi = EASY_BAND
    if any(math.isnan(v) for v in (share, lo, hi)):
        verdict = "inconclusive"
    elif band_lo <= lo and hi <= band_hi:
        verdict = "reproduced"
    elif hi < band_lo or lo > band_hi:
        verdict = "not reproduced"
    else:
        verdict = "inconclusive"
    return Verdict(
        _claim("easy_tokens"),
        verdict,
        f"reproduced if the 95% interval lies inside [{band_lo}, {band_hi}]; not reproduced if it misses that "
        "band; else inconclusive",
        f"easy share {share:.3f} at confidence ≥ {threshold} over {n} tokens, 95% interval [{lo:.3f}, {hi:.3f}]",
        _seed("easy_tokens"),
        share,
        lo,
        hi,
    )


def last_block(rel_delta: float, lo: float, hi: float, n: int, ratio: float) -> Verdict:
    """Relative perplexity increase of the last block replaced at the seed's ratio: reproduced if
    its interval lies below +10%, not reproduced if above."""
    v = interval_verdict(
        _claim("last_block"),
        rel_delta,
        lo,
        hi,
        SMALL_COST,
        "<",
        n,
        seed=_seed("last_block"),
        what=f"relative ΔPPL at {ratio:.0f}x",
    )
    return v


def multi_block(rel_delta: float, lo: float, hi: float, n: int, k: int) -> Verdict:
    """Relative perplexity increase with the last ``k`` blocks replaced: reproduced ("fails") if its
    interval lies above +25%, not reproduced if below."""
    return interval_verdict(
        _claim("multi_block"),
        rel_delta,
        lo,
        hi,
        FAILS,
        ">",
        n,
        seed=_seed("multi_block"),
        what=f"relative ΔPPL, last {k} blocks",
    )


def ratio_ci(
    base_nll: Sequence[float], new_nll: Sequence[float], tokens: Sequence[float], n_boot: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """``PPL_new / PPL_base - 1`` and its 95% interval, resampling windows (paired)."""
    b, x, t = (np.asarray(v, dtype=float) for v in (base_nll, new_nll, tokens))
    est = math.exp((x.sum() - b.sum()) / t.sum()) - 1
    idx = np.random.default_rng(seed).integers(0, len(b), (n_boot, len(b)))
    boots = np.exp((x[idx].sum(1) - b[idx].sum(1)) / t[idx].sum(1)) - 1
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return float(est), float(lo), float(hi)
