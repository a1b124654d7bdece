"""Seed 003's claims as verdicts: each a stated rule applied to our measurements and intervals.

:func:`verdicts` gives them all, in the seed's order, from the runners' results; the functions
before it are one claim each, on plain numbers, so each rule can be tested on inputs whose answer
is known.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import pandas as pd

from analysis import hooks, stats
from analysis.studies.variance.blocks import linearity_verdicts, replacement_verdicts
from analysis.studies.variance.config import VarianceConfig
from analysis.studies.variance.results import Directions, Exits, Linearity, Quantization
from analysis.studies.variance.seed import claim_of, seed_of
from analysis.studies.verdicts import MIN_UNITS, ONE_SIDED, Verdict, combine, difference_verdict

EASY_BAND = (0.2, 0.4)
""""About 30%" read as the band 20-40%."""


def every_setting(
    claim: str, diffs: Mapping[Any, stats.Difference], what: str, seed=None, setting: str = "setting"
) -> Verdict:
    """A claim that must hold at every setting (bit width, ablation depth), each a paired comparison
    ``diffs[setting]`` (:func:`analysis.stats.paired`) whose estimate must exceed 0.

    Reproduced when the 95% interval lies above 0 at *every* setting (an intersection-union test:
    each setting at its own level, so no correction is needed and the least favourable setting
    decides); not reproduced when at some setting the Holm-adjusted (:func:`analysis.stats.holm`)
    one-sided p of the reverse is below 0.025; else inconclusive, and always when a setting stands
    on fewer than :data:`MIN_UNITS` units. ``ours`` is the least favourable setting's estimate."""
    if not diffs:
        raise ValueError("every_setting needs at least one setting.")
    items = list(diffs.items())

    def low(d: stats.Difference) -> float:
        return -math.inf if math.isnan(d.low) else d.low

    worst_key, worst = min(items, key=lambda kv: low(kv[1]))
    holm = stats.holm([1.0 if math.isnan(d.p_reverse) else d.p_reverse for _, d in items])
    few = [k for k, d in items if d.n < MIN_UNITS or math.isnan(d.estimate) or math.isnan(d.low)]
    if few:
        verdict = "inconclusive"
    elif all(d.low > 0 for _, d in items):
        verdict = "reproduced"
    elif min(holm) < ONE_SIDED:
        verdict = "not reproduced"
    else:
        verdict = "inconclusive"
    evidence = "; ".join(
        f"{setting} {k}: {what} = {d.estimate:.4g} [{d.low:.4g}, {d.high:.4g}] over {d.n} {d.unit}, "
        f"Holm p(reverse) = {h:.3g}"
        for (k, d), h in zip(items, holm)
    )
    if few:
        evidence += f"; fewer than {MIN_UNITS} units at {setting} {', '.join(map(str, few))}"
    return Verdict(
        claim,
        verdict,
        f"reproduced if the 95% interval lies above 0 at every {setting}; not reproduced if at some {setting} "
        f"the Holm-adjusted one-sided p of the reverse is below {ONE_SIDED}; else inconclusive (and always "
        f"with fewer than {MIN_UNITS} units at a {setting})",
        evidence,
        seed,
        worst.estimate,
        worst.low,
        worst.high,
    )


def uncorrelated(cca_gap: stats.Difference, removal: Mapping[int, stats.Difference]) -> Verdict:
    """Variance vs predictive directions, two parts.

    (a) Against the random-subspace baseline: per (layer, window) of held-out text, the mean canonical
    correlation of the top-k variance subspace with a random k-subspace minus that with the top-k
    gradient subspace (``cca_gap``: :func:`analysis.stats.paired` clustered by window) lies above 0:
    predictive directions are *less* correlated with the variance directions than chance. The seed
    gives no share and no margin, so "as uncorrelated as chance" cannot be concluded by equivalence:
    only a clear difference decides; one the other way (more correlated than chance) is "not reproduced".
    (b) Removing k predictive directions costs more loss than removing k variance ones, per window,
    at every ablation depth (:func:`every_setting`; ``removal``: ``{layer: ΔNLL(gradient) - ΔNLL(variance)}``)."""
    a = difference_verdict(
        "the variance subspace is less correlated with the gradient subspace than with a random one",
        cca_gap,
        what="mean canonical correlation, random minus gradient",
    )
    b = every_setting(
        "removing predictive directions costs more than removing variance ones",
        removal,
        "ΔNLL gap (nats/token)",
        setting="layer",
    )
    out = combine(claim_of("uncorrelated"), [a, b], seed=seed_of("uncorrelated"))
    return Verdict(
        out.claim,
        out.verdict,
        f"(a) {a.criterion}; (b) {b.criterion}; {out.criterion}",
        f"(a) {a.verdict}: {a.evidence}; (b) {b.verdict}: {b.evidence}",
        out.seed,
        cca_gap.estimate,
        cca_gap.low,
        cca_gap.high,
    )


def direct_beats_factor(
    window_gap: Mapping[int, stats.Difference],
    weight_gap: Mapping[int, stats.Difference],
    quant_gap: Mapping[int, stats.Difference],
) -> Verdict:
    """Direct RTN against factor-then-quantize at matched bits, at every bit width (:func:`every_setting`):

    (a) ``window_gap[bits]``: per held-out window, the NLL per token of factor-then-quantize minus direct;
    (b) ``weight_gap[bits]``: per block weight (clustered by block), the product's relative error
        against ``W`` minus direct RTN's;
    (c) ``quant_gap[bits]``: per block weight (clustered by block), the product's own quantization error
        (against ``A B``, the truncation taken out) minus direct RTN's: the amplification the seed
        names as the cause. A ratio to the factors' own errors is not judged: it is about √2 by
        construction (:func:`analysis.compress.rotation.amplification`)."""
    a = every_setting("direct RTN has the lower held-out NLL", window_gap, "NLL gap (nats/token)", setting="bits")
    b = every_setting(
        "the factored product is further from W than direct RTN", weight_gap, "error gap vs W", setting="bits"
    )
    c = every_setting(
        "quantizing the factors adds more error than quantizing W", quant_gap, "quantization error gap", setting="bits"
    )
    out = combine(claim_of("direct_beats_factor"), [a, b, c], seed=seed_of("direct_beats_factor"))
    return Verdict(
        out.claim,
        out.verdict,
        f"each part: {a.criterion}; {out.criterion}",
        f"(a) {a.claim}: {a.verdict}: {a.evidence}; (b) {b.claim}: {b.verdict}: {b.evidence}; "
        f"(c) {c.claim}: {c.verdict}: {c.evidence}",
        out.seed,
        a.ours,
        a.ci_low,
        a.ci_high,
    )


def easy_tokens(share: float, lo: float, hi: float, n: int, threshold: float, windows: int) -> Verdict:
    """The easy share at a fixed threshold, its interval resampling ``windows`` (not tokens):
    reproduced if the interval lies inside 20-40%, not reproduced if it misses the band entirely,
    else inconclusive (and always with fewer than :data:`MIN_UNITS` windows)."""
    band_lo, band_hi = EASY_BAND
    few = windows < MIN_UNITS
    if few or any(math.isnan(v) for v in (share, lo, hi)):
        verdict = "inconclusive"
    elif band_lo <= lo and hi <= band_hi:
        verdict = "reproduced"
    elif hi < band_lo or lo > band_hi:
        verdict = "not reproduced"
    else:
        verdict = "inconclusive"
    evidence = (
        f"easy share {share:.3f} at confidence ≥ {threshold} over {n} tokens in {windows} windows, "
        f"95% interval [{lo:.3f}, {hi:.3f}] resampling windows"
    )
    if few:
        evidence += f"; only {windows} windows, fewer than the {MIN_UNITS} a verdict needs"
    return Verdict(
        claim_of("easy_tokens"),
        verdict,
        f"reproduced if the 95% interval (windows resampled) lies inside [{band_lo}, {band_hi}]; not reproduced "
        f"if it misses that band; else inconclusive (and always with fewer than {MIN_UNITS} windows)",
        evidence,
        seed_of("easy_tokens"),
        share,
        lo,
        hi,
    )


def paired_gap(a: pd.Series, b: pd.Series) -> np.ndarray:
    """Per-window mean NLL of ``a`` minus ``b`` (rows with ``window nll``/``window tokens`` tuples)."""
    na, nb, t = (np.asarray(x, dtype=float) for x in (a["window nll"], b["window nll"], a["window tokens"]))
    return (na - nb) / t


NO_UNITS = stats.Difference(math.nan, math.nan, math.nan, math.nan, 0, "units")
"""What a part stands on when its measurement is missing (a result cached before it existed)."""


def direction_inputs(dirs: Directions) -> tuple[stats.Difference, dict[int, stats.Difference]]:
    """:func:`uncorrelated`'s inputs from :func:`~analysis.studies.variance.directions`: the CCA gap
    (random minus gradient) over (layer, window) units clustered by window, and per ablation depth
    the per-window ΔNLL of removing the gradient directions minus the variance ones."""
    if dirs.windows is None or dirs.removal is None:
        return NO_UNITS, {-1: NO_UNITS}
    u = dirs.windows
    cca_gap = stats.paired(u["CCA random"], u["CCA gradient"], unit="windows", cluster=u["window"])
    r = dirs.removal
    removal = {}
    for layer in sorted(set(r["layer"]) - {-1}):
        at = r[r["layer"] == layer].set_index("kind")
        removal[int(layer)] = stats.paired(paired_gap(at.loc["gradient"], at.loc["variance"]), unit="windows")
    return cca_gap, removal


def quantization_inputs(quant: Quantization) -> tuple[dict[int, stats.Difference], ...]:
    """:func:`direct_beats_factor`'s inputs per bit width from
    :func:`~analysis.studies.variance.quantization`: factor minus direct NLL per window; per block
    weight (clustered by block) the product's error against ``W``, and against ``A B``, minus direct's."""
    ppl, amp = quant.ppl, quant.amplification
    windows, vs_w, own = {}, {}, {}
    for bits in sorted(set(ppl["bits"]) - {32}):
        at = ppl[ppl["bits"] == bits].set_index("scheme")
        windows[int(bits)] = stats.paired(paired_gap(at.loc["factor"], at.loc["direct"]), unit="windows")
    for bits in sorted(set(amp["bits"])):
        a = amp[amp["bits"] == bits]
        block = a["weight"].map(hooks.layer_of)
        vs_w[int(bits)] = stats.paired(a["product vs W"], a["direct"], unit="blocks", cluster=block)
        own[int(bits)] = stats.paired(a["product"], a["direct"], unit="blocks", cluster=block)
    return windows, vs_w, own


def verdicts(
    cfg: VarianceConfig,
    lin: Linearity,
    dirs: Directions,
    abl: pd.DataFrame,
    rep: pd.DataFrame,
    quant: Quantization,
    ex: Exits,
) -> list[Verdict]:
    """Every verdict, in the seed's order, from the runners' results (``lin``: :func:`linearity`,
    ``abl``: :func:`ablation`, ``rep``: :func:`replacement` of :mod:`~analysis.studies.variance.run`).
    ``abl`` is the chapter's grid on few windows; the variance-vs-predictive verdict reads the same
    removal scored on more windows (``dirs.removal``)."""
    out = [uncorrelated(*direction_inputs(dirs))]
    out += linearity_verdicts(lin)
    out.append(direct_beats_factor(*quantization_inputs(quant)))
    logit = ex.logit
    out.append(
        easy_tokens(logit.easy_share, logit.easy_low, logit.easy_high, logit.n, cfg.exit_threshold, logit.windows)
    )
    out += replacement_verdicts(rep)
    return out
