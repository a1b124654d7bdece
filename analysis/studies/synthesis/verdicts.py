"""The synthesis chapter's three questions, judged by code. None is a seed's claim: no seed compares
signals against one oracle, so each is marked "(ours, not the seed's)".

1. :func:`beats_uniform`: does any signal's allocation beat uniform compression at matched size?
2. :func:`beats_published`: does any signal choose better layers to remove than both ShortGPT's
   Block Influence and Gromov et al.'s angular distance?
3. :func:`cheapest_near_best`: does the cheapest signal predict the oracle within ``margin`` of the best?

Questions 1 and 2 share one rule (:func:`any_beats`). A candidate (a signal under one operation)
*wins* when its allocation has lower held-out NLL than the reference at every budget: each budget
is a one-sided paired t test over the eval windows, and a candidate's p is the largest over its
budgets (an intersection-union test, which needs no correction across budgets). The candidates'
p-values are Holm-adjusted (:func:`analysis.stats.holm`): "reproduced" if some candidate's adjusted
p lies below :data:`~analysis.studies.verdicts.ONE_SIDED`, so the chance of a false "reproduced"
stays under 2.5% however many signals compete. "Not reproduced" if every candidate, at some budget,
has a 95% upper bound on its gain below ``margin`` (no win of practical size anywhere). Otherwise,
and with fewer than :data:`~analysis.studies.verdicts.MIN_UNITS` windows, "inconclusive".
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

from analysis import stats
from analysis.studies import verdicts as shared
from analysis.studies.synthesis import agreement
from analysis.studies.synthesis.signals import Signal
from analysis.studies.verdicts import Verdict

OURS = "(ours, not the seed's)"
BEATS_UNIFORM = f"some signal's allocation beats uniform compression at matched size {OURS}"
BEATS_PUBLISHED = f"some signal chooses the layers to remove better than both BI and angular distance {OURS}"
CHEAPEST = f"the cheapest signal predicts the oracle within the margin of the best signal {OURS}"

ANY_BEATS_RULE = (
    "per candidate, a one-sided paired t test over windows at every budget (its p: the largest); Holm over "
    f"candidates; reproduced if the smallest adjusted p < {shared.ONE_SIDED}; not reproduced if every candidate "
    "has a budget where the 95% upper bound of its gain is below the margin; else inconclusive "
    f"(always with fewer than {shared.MIN_UNITS} windows)"
)


def any_beats(
    claim: str, gains: Mapping[str, Sequence[stats.Difference]], margin: float, what: str = "gain"
) -> Verdict:
    """``gains``: per candidate, one paired difference per budget of (reference − candidate) mean NLL
    per token over windows (positive: the candidate is better). See the module docstring."""
    gains = {k: list(v) for k, v in gains.items() if v}
    if not gains:
        return Verdict(claim, "inconclusive", ANY_BEATS_RULE, "no candidate was measured")
    p = {k: max(d.p for d in v) for k, v in gains.items()}
    names = list(p)
    adjusted = dict(zip(names, stats.holm([p[k] for k in names])))
    best = min(names, key=lambda k: (adjusted[k], -min(d.estimate for d in gains[k])))
    worst_budget = max(gains[best], key=lambda d: d.p)  # the budget that binds the intersection-union test
    n = min(d.n for v in gains.values() for d in v)
    no_win = all(any(d.high < margin for d in v) for v in gains.values())
    if n < shared.MIN_UNITS or any(math.isnan(adjusted[k]) for k in names):
        verdict = "inconclusive"
    elif adjusted[best] < shared.ONE_SIDED:
        verdict = "reproduced"
    elif no_win:
        verdict = "not reproduced"
    else:
        verdict = "inconclusive"
    evidence = (
        f"best candidate {best}: {what} at its binding budget {worst_budget.estimate:+.4f} nats/token, 95% interval "
        f"[{worst_budget.low:+.4f}, {worst_budget.high:+.4f}], Holm-adjusted p = {adjusted[best]:.3g} "
        f"over {len(names)} candidates, {n} windows"
    )
    return Verdict(
        claim, verdict, ANY_BEATS_RULE, evidence, None, worst_budget.estimate, worst_budget.low, worst_budget.high
    )


def beats_uniform(gains: Mapping[str, Sequence[stats.Difference]], margin: float) -> Verdict:
    """Question 1: candidates are (signal, operation) pairs under pruning and quantization."""
    return any_beats(BEATS_UNIFORM, gains, margin, "gain over uniform")


def beats_published(gains: Mapping[str, Sequence[stats.Difference]], margin: float) -> Verdict:
    """Question 2: a candidate's differences are against ShortGPT and against Gromov at every removal
    budget (it must beat both)."""
    return any_beats(BEATS_PUBLISHED, gains, margin, "gain over the better published choice")


CHEAPEST_RULE = (
    "per oracle, for every other signal s, ρ(s) − ρ(cheapest) with a paired layer-resampling 95% interval; "
    "reproduced if every upper bound < margin (the cheapest is within the margin of each signal, so of the best, "
    "with no signal chosen by the data); not reproduced if some lower bound > margin; else inconclusive; the "
    f"oracles combine as {shared.COMBINE_RULE}"
)


def cheapest_near_best(
    signals: Mapping[str, Signal], oracles: Mapping[str, Signal], margin: float, n_boot: int = 1000, seed: int = 0
) -> Verdict:
    """Question 3, per oracle: the signal of fewest recorded seconds (among those whose cost was
    recorded in full) against every other signal's Spearman ρ with the oracle."""
    priced = {k: s for k, s in signals.items() if s.cost.complete and not math.isnan(s.cost.seconds)}
    if not priced or len(signals) < 2:
        return Verdict(CHEAPEST, "inconclusive", CHEAPEST_RULE, "no signal's cost was recorded in full")
    cheapest = min(priced, key=lambda k: priced[k].cost.seconds)
    parts = []
    for oname, target in oracles.items():
        n = target.scores.values.shape[0]
        idx = agreement.draws(n, n_boot, seed)
        mine = agreement.correlation_draws(signals[cheapest], target, idx)
        diffs = {
            k: agreement.interval(agreement.correlation_draws(s, target, idx) - mine)
            for k, s in signals.items()
            if k != cheapest
        }
        best = max(diffs, key=lambda k: diffs[k][0])
        est, lo, hi = diffs[best]
        if n < shared.MIN_UNITS or any(math.isnan(d[2]) for d in diffs.values()):
            verdict = "inconclusive"
        elif all(d[2] < margin for d in diffs.values()):
            verdict = "reproduced"
        elif any(d[1] > margin for d in diffs.values()):
            verdict = "not reproduced"
        else:
            verdict = "inconclusive"
        evidence = (
            f"cheapest {cheapest} ({priced[cheapest].cost.seconds:.2g} s, ρ = {mine[0]:.3f}); best {best}: "
            f"ρ higher by {est:.3f} [{lo:.3f}, {hi:.3f}] over {n} layers"
        )
        parts.append(Verdict(f"oracle {oname}", verdict, CHEAPEST_RULE, evidence, None, est, lo, hi))
    out = shared.combine(CHEAPEST, parts)
    worst = max(parts, key=lambda v: v.ours)
    evidence = "; ".join(f"{p.claim}: {p.verdict} ({p.evidence})" for p in parts)
    return Verdict(CHEAPEST, out.verdict, CHEAPEST_RULE, evidence, None, worst.ours, worst.ci_low, worst.ci_high)


def verdicts(result) -> list[Verdict]:
    """The chapter's three questions on one :class:`~analysis.studies.synthesis.results.SynthesisResult`."""
    from analysis.studies.synthesis import allocate
    from analysis.studies.synthesis.results import candidates

    cfg = result.config
    uniform = {**result.gains("prune", allocate.UNIFORM), **result.gains("quantize", allocate.UNIFORM)}
    versus_shortgpt = result.gains("remove", allocate.SHORTGPT)
    versus_gromov = result.gains("remove", allocate.GROMOV)
    published = {
        f"{k} (remove)": versus_shortgpt.get(f"{k} (remove)", []) + versus_gromov.get(f"{k} (remove)", [])
        for k in candidates(result)
    }
    oracles = {
        op: result.oracles[o] for op, o in (("prune", "prune"), ("quantize", "quantize"), ("remove", "remove (block)"))
    }
    return [
        beats_uniform(uniform, cfg.ppl_margin),
        beats_published(published, cfg.ppl_margin),
        cheapest_near_best(result.signals, oracles, cfg.margin, cfg.n_boot),
    ]
