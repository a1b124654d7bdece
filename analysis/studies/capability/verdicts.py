"""Verdicts: each seed claim against our measurements, with its criterion and its interval.

Every verdict here is an :class:`analysis.studies.verdicts.Verdict` built by the shared rules of
:mod:`analysis.studies.verdicts`. Heads are not independent units (density is mostly a layer
property, and the query heads of one GQA group share their K/V), so every head-level
correlation carries a *layer-cluster* bootstrap interval (:func:`analysis.stats.cluster_bootstrap_ci`)
and a within-layer permutation p (:func:`analysis.stats.stratified_permutation_test`), computed
by :func:`analysis.studies.capability.run.head_test`. "Independent" is concluded only by TOST
(:func:`analysis.studies.verdicts.equivalence_verdict`) on an *effective* number of heads
(:func:`effective_n`), the one whose Fisher-z standard error matches the cluster interval.

:func:`verdicts` gives the chapter's list, one verdict per claim of the seed.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import pandas as pd
from scipy.stats import norm

from analysis import stats
from analysis.studies import verdicts as shared
from analysis.studies.capability.budget_verdicts import (
    allocation_verdict,
    budget_findings,
    budget_report,
    perplexity_verdict,
    versus_random,
)
from analysis.studies.capability.metrics import METRICS
from analysis.studies.capability.results import Budget, DirectImportance, HeadTest, ImportanceTest, Transitions
from analysis.studies.capability.seed import SEED_RESULTS

Verdict = shared.Verdict

FIDELITY = {"explained variance": 0.7, "CE loss recovered": 0.9}
"""The SAE quality bar (SAEBench's Gemma Scope SAEs: 0.71-0.90 EV, 0.96+ CE loss recovered)."""


def effective_n(rho: float, lo: float, hi: float, n: int, level: float = 0.95) -> int:
    """The number of independent units whose Spearman Fisher-z standard error, ``sqrt(1.06/(n-3))``,
    equals the one implied by the interval ``[lo, hi]`` (capped at ``n``; at least 4)."""
    if not all(map(math.isfinite, (rho, lo, hi))) or hi <= lo:
        return n
    clip = 1 - 1e-9
    se = (math.atanh(min(hi, clip)) - math.atanh(max(lo, -clip))) / (2 * stats_z(level))
    return int(max(4, min(n, math.floor(3 + 1.06 / se**2))))


def stats_z(level: float) -> float:
    """The two-sided normal quantile of a ``level`` interval (1.96 at 0.95)."""
    return float(norm.ppf(0.5 + level / 2))


def _fidelity_ok(row: Mapping[str, float]) -> bool:
    return all(float(row[k]) >= v for k, v in FIDELITY.items())


def _independence(test: HeadTest, margin: float, alpha: float) -> Verdict:
    """TOST on ρ with the effective number of heads and the layer-cluster interval."""
    rho, lo, hi, n = test.rho, test.ci_low, test.ci_high, int(test.n)
    n_eff = effective_n(rho, lo, hi, n)
    v = shared.equivalence_verdict(
        SEED_RESULTS["orthogonality claim"],
        rho,
        n_eff,
        margin,
        lo,
        hi,
        seed=SEED_RESULTS["spearman_density_wanda"],
        alpha=alpha,
    )
    p = stats.tost_correlation(rho, n_eff, margin, alpha).p if math.isfinite(rho) and n_eff >= 4 else float("nan")
    need = shared.n_for_equivalence(margin, alpha)
    evidence = (
        f"ρ = {rho:.3f} over {n} heads, layer-cluster 95% interval [{lo:.3f}, {hi:.3f}], "
        f"{n_eff} effective heads, TOST p = {p:.3g} (margin ±{margin})"
    )
    if v.verdict == shared.UNTESTABLE:
        evidence += f"; {need} independent heads would settle it (TOST passes even ρ = 0 only from {need} on)"
    else:
        evidence += f"; even ρ = 0 needs {need} effective heads"
    return dataclasses.replace(
        v,
        criterion=v.criterion + "; TOST on the effective number of heads implied by the layer-cluster interval",
        evidence=evidence,
    )


def orthogonality_verdict(
    test: HeadTest,
    ladder: pd.DataFrame | None = None,
    margin: float = 0.1,
    alpha: float = 0.05,
) -> Verdict:
    """ "Density is independent of Wanda", from :func:`head_test` of density against Wanda on the
    chapter's SAEs (the best of the ladder), judged by TOST within ``±margin``.

    ``ladder`` (rows: SAE settings of rising quality, columns ``explained variance``,
    ``CE loss recovered``, ``rho``, ``ci_low``, ``ci_high``, ``n``) makes the verdict depend on SAE
    fidelity: when the chapter's SAEs miss :data:`FIDELITY` and the TOST verdict changes along
    the ladder, the claim is inconclusive (the answer moves with SAE quality).
    """
    v = _independence(test, margin, alpha)
    if ladder is None or ladder.empty:
        return v
    rungs = [_independence(HeadTest.from_row(r), margin, alpha).verdict for _, r in ladder.iterrows()]
    best = ladder.iloc[-1]
    good = _fidelity_ok(best)
    note = (
        f"; across {len(ladder)} SAE settings of rising quality (EV "
        + ", ".join(f"{x:.2f}" for x in ladder["explained variance"].astype(float))
        + "): "
        + ", ".join(rungs)
    )
    verdict = v.verdict
    if not good and len(set(rungs)) > 1:
        verdict = "inconclusive"
    rule = (
        f"; inconclusive when the best SAE misses EV ≥ {FIDELITY['explained variance']} and CE recovered "
        f"≥ {FIDELITY['CE loss recovered']} and the verdict changes with SAE quality"
    )
    return dataclasses.replace(v, verdict=verdict, criterion=v.criterion + rule, evidence=v.evidence + note)


def importance_verdict(row: ImportanceTest, alpha: float = 0.05) -> Verdict:
    """ "Denser heads matter more", beyond Wanda: from density against one importance measure
    of :func:`~analysis.studies.capability.run.importance_table` (ρ with its layer-cluster
    interval, within-layer permutation p, partial ρ given Wanda)."""
    v = shared.interval_verdict(
        "capability density predicts a head's importance (denser heads matter more)",
        row.rho,
        row.ci_low,
        row.ci_high,
        0.0,
        ">",
        n=int(row.n_layers),
        seed="ρ > 0 (theory: denser heads are less redundant)",
        what="ρ(density, ΔCE when ablated), layer-cluster interval",
        unit="layers",
    )
    extra = (
        f"; within layers ρ = {row.rho_within:.3f} (within-layer permutation p = {row.p_within:.4f}); "
        f"partial ρ given Wanda = {row.partial:.3f}"
    )
    return dataclasses.replace(v, evidence=v.evidence + extra)


def transition_verdict(test: HeadTest | None) -> Verdict:
    """The phase-transition claim, from ρ(density, break point) over traced heads with its
    layer-cluster interval (``run_transitions(...).test``; None when fewer than 3 heads break)."""
    claim = SEED_RESULTS["phase-transition claim"]
    if test is None:
        return Verdict(
            claim,
            "inconclusive",
            "reproduced if the 95% interval of ρ(density, break point) lies < 0; not reproduced if > 0",
            "fewer than 3 traced heads have a break point",
            "ρ < 0 (theory)",
        )
    v = shared.interval_verdict(
        claim,
        test.rho,
        test.ci_low,
        test.ci_high,
        0.0,
        "<",
        n=int(test.n),
        seed="ρ < 0 (theory)",
        what="ρ(density, break point), layer-cluster interval",
        unit="heads",
    )
    return dataclasses.replace(v, evidence=v.evidence + f"; {int(test.n)} heads")


def metric_verdicts(
    tests: Mapping[str, HeadTest], margin: float = 0.1, alpha: float = 0.05, wanda: Verdict | None = None
) -> list[Verdict]:
    """ "Orthogonal to all existing importance metrics": one row per metric of ``tests`` (name ->
    :func:`~analysis.studies.capability.run.head_test` of density against it), each TOST on the
    effective number of heads (as :func:`orthogonality_verdict`) with its p adjusted by Holm over
    the metrics (a row is reproduced only when its Holm-adjusted TOST p < α), then one combined row
    (:func:`analysis.studies.verdicts.combine`: reproduced only when density is equivalent to no
    relation with every metric). ``wanda`` (the headline verdict with its SAE ladder) stands in for
    the plain Wanda row when given and the test is not a reproduced one Holm would overturn."""
    names = list(tests)
    rows, ps = [], []
    for name in names:
        t = tests[name]
        n_eff = effective_n(t.rho, t.ci_low, t.ci_high, int(t.n))
        ok = math.isfinite(t.rho) and n_eff >= 4
        ps.append(stats.tost_correlation(t.rho, n_eff, margin, alpha).p if ok else 1.0)
    adjusted = stats.holm(ps) if ps else []
    for name, p_holm in zip(names, adjusted):
        v = _independence(tests[name], margin, alpha)
        if name == "wanda" and wanda is not None:
            v = wanda
        verdict = v.verdict
        if verdict == "reproduced" and p_holm >= alpha:
            verdict = "inconclusive"
        rows.append(
            dataclasses.replace(
                v,
                claim=f"capability density is independent of {METRICS.get(name, name)}",
                verdict=verdict,
                criterion=v.criterion
                + f"; reproduced only if the Holm-adjusted TOST p over {len(names)} metrics < {alpha}",
                evidence=v.evidence + f"; Holm-adjusted TOST p = {p_holm:.3g}",
                seed="not measured (the seed tests Wanda only)" if name != "wanda" else v.seed,
            )
        )
    whole = shared.combine(SEED_RESULTS["all metrics claim"], rows, seed="claimed; tested against Wanda only")
    return [*rows, whole]


def verdicts(
    headline: HeadTest,
    ladder: pd.DataFrame,
    direct: DirectImportance,
    transitions: Transitions,
    budget: Budget,
    findings: pd.DataFrame,
    n_boot: int = 2000,
    relations: Sequence[str] | None = None,
    metrics: Mapping[str, HeadTest] | None = None,
) -> list[Verdict]:
    """One verdict per claim of the seed, in the chapter's order: orthogonality to Wanda (the
    headline test and the SAE ladder), orthogonality to every importance metric of ``metrics``
    (:func:`metric_verdicts`: a row per metric and the combined claim; one inconclusive row saying
    what is missing when ``metrics`` is None), phase transitions, perplexity's blindness
    (:func:`budget_findings`), capability-guided allocation against random (facts clustered by
    ``relations``), and whether denser heads matter more (density against ΔCE when ablated)."""
    headline_v = orthogonality_verdict(headline, ladder)
    if metrics:
        rows = metric_verdicts(metrics, wanda=headline_v)
        every = [v for name, v in zip([*metrics, "all"], rows) if name != "wanda"]  # Wanda's row is the headline
    else:
        every = [
            Verdict(
                SEED_RESULTS["all metrics claim"],
                "inconclusive",
                "density against Wanda, weight magnitude, gradient, causal tracing and attribution patching, Holm",
                "the other importance metrics were not measured in this run",
                "claimed; tested against Wanda only",
            )
        ]
    return [
        headline_v,
        *every,
        transition_verdict(transitions.test),
        perplexity_verdict(findings, budget.items),
        allocation_verdict(budget.table, budget.items, n_boot, relations),
        importance_verdict(direct.loss.density),
    ]


__all__ = [
    "FIDELITY",
    "Verdict",
    "allocation_verdict",
    "budget_findings",
    "budget_report",
    "effective_n",
    "importance_verdict",
    "metric_verdicts",
    "orthogonality_verdict",
    "perplexity_verdict",
    "transition_verdict",
    "verdicts",
    "versus_random",
]
