"""Seed 003's seven claims as verdicts: each a stated rule applied to our measurements and intervals.

:func:`verdicts` gives all seven, in the seed's order, from the runners' results; the functions
before it are one claim each, on plain numbers, so each rule can be tested on inputs whose answer
is known.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from analysis import stats
from analysis.studies.variance.config import VarianceConfig
from analysis.studies.variance.results import Directions, Exits, Quantization
from analysis.studies.variance.seed import SEED_RESULTS
from analysis.studies.verdicts import Verdict, combine, difference_verdict, interval_verdict

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
    b = difference_verdict(
        "predictive directions matter more than variance ones", stats.paired(importance_gap), what="ΔNLL gap (nats)"
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


def direct_beats_factor(window_gap: stats.Difference, amplification: Sequence[float]) -> Verdict:
    """Parts: (a) per-window NLL of factor-then-quantize minus direct quantization at matched bits
    (``window_gap``, :func:`analysis.stats.paired`) is above 0; (b) the mean amplification (product
    error over factor error) is above 1."""
    a = difference_verdict("direct has lower NLL", window_gap, what="NLL gap (nats)")
    m, alo, ahi = stats.mean_ci(amplification)
    b = interval_verdict("errors are amplified", m, alo, ahi, 1.0, ">", len(amplification), what="amplification")
    out = combine(_claim("direct_beats_factor"), [a, b], seed=_seed("direct_beats_factor"))
    return Verdict(
        out.claim,
        out.verdict,
        out.criterion,
        f"{a.evidence}; {b.evidence}",
        out.seed,
        window_gap.estimate,
        window_gap.low,
        window_gap.high,
    )


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


def last_block(rel_delta: stats.Difference, ratio: float) -> Verdict:
    """Relative perplexity increase of the last block replaced at the seed's ratio (:func:`relative_ppl`):
    reproduced if its interval lies below +10%, not reproduced if above."""
    return difference_verdict(
        _claim("last_block"),
        rel_delta,
        SMALL_COST,
        "<",
        seed=_seed("last_block"),
        what=f"relative ΔPPL at {ratio:.0f}x",
    )


def multi_block(rel_delta: stats.Difference, k: int) -> Verdict:
    """Relative perplexity increase with the last ``k`` blocks replaced (:func:`relative_ppl`):
    reproduced ("fails") if its interval lies above +25%, not reproduced if below."""
    return difference_verdict(
        _claim("multi_block"), rel_delta, FAILS, ">", seed=_seed("multi_block"), what=f"relative ΔPPL, last {k} blocks"
    )


def relative_ppl(base_nll: Sequence[float], new_nll: Sequence[float], tokens: Sequence[float]) -> stats.Difference:
    """``PPL_new / PPL_base - 1`` and its 95% interval, resampling windows (paired)."""
    return stats.paired(new_nll, base_nll, "windows", weights=tokens, transform=lambda x: np.exp(x) - 1)


def paired_gap(a: pd.Series, b: pd.Series) -> np.ndarray:
    """Per-window mean NLL of ``a`` minus ``b`` (rows with ``window nll``/``window tokens`` tuples)."""
    na, nb, t = (np.asarray(x, dtype=float) for x in (a["window nll"], b["window nll"], a["window tokens"]))
    return (na - nb) / t


def verdicts(
    cfg: VarianceConfig,
    lin: pd.DataFrame,
    dirs: Directions,
    abl: pd.DataFrame,
    rep: pd.DataFrame,
    quant: Quantization,
    ex: Exits,
) -> list[Verdict]:
    """The seven verdicts, in the seed's order, from the runners' results (``lin``: :func:`linearity`,
    ``abl``: :func:`ablation`, ``rep``: :func:`replacement` of :mod:`~analysis.studies.variance.run`)."""
    k = cfg.k_overlap
    gaps = []
    for layer in sorted(set(abl["layer"]) - {-1}):
        at = abl[(abl["layer"] == layer) & (abl["k"] == k)].set_index("kind")
        if {"gradient", "variance"} <= set(at.index):
            gaps.append(paired_gap(at.loc["gradient"], at.loc["variance"]))
    out = [uncorrelated(dirs.frame["CCA uncorrelated share"], np.concatenate(gaps) if gaps else [np.nan])]
    out.append(r2_level(lin["R² output, clean"]))
    out.append(r2_depth(lin.index, lin["R² update, clean"]))
    ppl = quant.ppl
    mid = 4 if 4 in set(ppl["bits"]) else sorted(set(ppl["bits"]) - {32})[0]
    at = ppl[ppl["bits"] == mid].set_index("scheme")
    amp = quant.amplification
    gap = stats.paired(paired_gap(at.loc["factor"], at.loc["direct"]))
    out.append(direct_beats_factor(gap, amp[amp["bits"] == mid]["amplification"]))
    logit = ex.logit
    out.append(easy_tokens(logit.easy_share, logit.easy_low, logit.easy_high, logit.n, cfg.exit_threshold))
    base = rep[rep["blocks"] == 0].iloc[0]
    one = rep[(rep["blocks"] == 1) & rep["map"].str.startswith("rank")].iloc[0]
    rel = relative_ppl(base["window nll"], one["window nll"], base["window tokens"])
    out.append(last_block(rel, one["compression"]))
    kmax = max(cfg.multi_blocks)
    many = rep[(rep["blocks"] == kmax) & rep["map"].str.startswith("rank")].iloc[0]
    rel = relative_ppl(base["window nll"], many["window nll"], base["window tokens"])
    out.append(multi_block(rel, kmax))
    return out
