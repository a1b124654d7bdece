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
from typing import Mapping

import numpy as np
import pandas as pd
from scipy.stats import norm

from analysis import stats
from analysis.studies import verdicts as shared
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


def min_heads_for_equivalence(margin: float = 0.1, alpha: float = 0.05) -> int:
    """The fewest independent units at which TOST can call even ρ = 0 equivalent within ``±margin``:
    ``3 + 1.06 (z_{1-α} / atanh(margin))²``."""
    return int(math.ceil(3 + 1.06 * (norm.ppf(1 - alpha) / math.atanh(margin)) ** 2))


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
    return dataclasses.replace(
        v,
        criterion=v.criterion + "; TOST on the effective number of heads implied by the layer-cluster interval",
        evidence=f"ρ = {rho:.3f} over {n} heads, layer-cluster 95% interval [{lo:.3f}, {hi:.3f}], "
        f"{n_eff} effective heads, TOST p = {p:.3g} (margin ±{margin}; even ρ = 0 needs "
        f"{min_heads_for_equivalence(margin, alpha)} effective heads)",
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


def budget_findings(
    budget: pd.DataFrame, items: Mapping[tuple[float, str], Mapping[str, np.ndarray]], n_boot: int = 2000
) -> pd.DataFrame:
    """Per mean sparsity: capability minus Wanda in perplexity (log ratio, paired over windows) and
    fact recall (paired over facts), each with a bootstrap interval at the Bonferroni level
    ``1 - 0.05/m`` over the ``m`` sparsities (one claim, several comparisons), and the random
    seeds' mean. ``items[(mean, strategy)]`` holds ``{"window_nll", "window_tokens", "recall"}``."""
    rows = {}
    means = [m for m in sorted(budget["mean sparsity"].unique()) if m != 0]
    level = 1 - 0.05 / max(1, len(means))
    for mean in means:
        c, w = items[(mean, "capability")], items[(mean, "wanda")]
        rec = stats.paired(np.asarray(c["recall"], float), w["recall"], "facts", n_boot=n_boot, level=level)
        per_c = np.asarray(c["window_nll"]) / np.asarray(c["window_tokens"])
        per_w = np.asarray(w["window_nll"]) / np.asarray(w["window_tokens"])
        nll = stats.paired(per_c, per_w, "windows", n_boot=n_boot, level=level)
        b = budget[budget["mean sparsity"] == mean].set_index("strategy")
        rand = b[b.index.str.startswith("random")]
        rows[mean] = {
            "capability perplexity": float(b.loc["capability", "perplexity"]),
            "wanda perplexity": float(b.loc["wanda", "perplexity"]),
            "Δ log perplexity (capability − wanda)": nll.estimate,
            "Δ log ppl low": nll.low,
            "Δ log ppl high": nll.high,
            "capability fact recall": float(b.loc["capability", "fact recall"]),
            "wanda fact recall": float(b.loc["wanda", "fact recall"]),
            "Δ recall (capability − wanda)": rec.estimate,
            "Δ recall low": rec.low,
            "Δ recall high": rec.high,
            "random fact recall (mean of seeds)": float(rand["fact recall"].mean()) if len(rand) else float("nan"),
            "random seeds": len(rand),
            "facts": rec.n,
            "windows": nll.n,
            "interval level": level,
        }
    return pd.DataFrame(rows).T


def _sign(lo: float, hi: float) -> int:
    return 1 if lo > 0 else -1 if hi < 0 else 0


def perplexity_verdict(findings: pd.DataFrame) -> Verdict:
    """ "Perplexity is insensitive to capability loss", from :func:`budget_findings`: at some mean
    sparsity fact recall separates capability- from Wanda-guided allocation (interval excludes 0)
    while perplexity does not separate them the same way."""
    m = len(findings)
    seps, evid = [], []
    for mean, f in findings.iterrows():
        r, p = _sign(f["Δ recall low"], f["Δ recall high"]), _sign(f["Δ log ppl low"], f["Δ log ppl high"])
        # recall higher is better, perplexity lower is better: "same order" is r == -p
        seps.append((r, p))
        evid.append(
            f"{mean}: Δ recall {f['Δ recall (capability − wanda)']:+.3f} [{f['Δ recall low']:+.3f}, "
            f"{f['Δ recall high']:+.3f}], Δ log ppl {f['Δ log perplexity (capability − wanda)']:+.4f} "
            f"[{f['Δ log ppl low']:+.4f}, {f['Δ log ppl high']:+.4f}]"
        )
    hidden = [r != 0 and p != -r for r, p in seps]
    visible = [r != 0 and p == -r for r, p in seps]
    if any(hidden):
        verdict = "reproduced"
    elif any(visible):
        verdict = "not reproduced"
    else:
        verdict = "inconclusive"
    facts = int(findings["facts"].iloc[0]) if m else 0
    evidence = "; ".join(evid)
    if verdict == "inconclusive" and m:
        f = findings.iloc[int(np.argmax(findings["Δ recall (capability − wanda)"].abs().to_numpy()))]
        need = shared.n_to_settle(f["Δ recall (capability − wanda)"], f["Δ recall low"], f["Δ recall high"], facts, 0.0)
        if need:
            evidence += f"; about {need} facts (now {facts}) would separate the recall difference if it held"
    best = findings.iloc[int(np.argmax(findings["Δ recall (capability − wanda)"].abs().to_numpy()))] if m else None
    return Verdict(
        SEED_RESULTS["perplexity claim"],
        verdict,
        "reproduced if, at some mean sparsity, the (Bonferroni over sparsities) interval of the paired fact-recall difference "
        "(capability − Wanda) excludes 0 while perplexity's paired interval does not rank them the same way; "
        "not reproduced if every separated recall difference is matched by perplexity; else inconclusive",
        evidence,
        "negative PPL result on GPT-2 Medium",
        None if best is None else float(best["Δ recall (capability − wanda)"]),
        None if best is None else float(best["Δ recall low"]),
        None if best is None else float(best["Δ recall high"]),
    )


def allocation_verdict(
    budget: pd.DataFrame, items: Mapping[tuple[float, str], Mapping[str, np.ndarray]], n_boot: int = 2000
) -> Verdict:
    """ "Capability-guided allocation preserves capability": fact recall of capability-guided
    allocation minus the mean over random allocations' seeds, paired over facts, pooled over mean
    sparsities (one paired test), judged on its 95% interval."""
    diffs = []
    for mean in sorted(budget["mean sparsity"].unique()):
        if mean == 0:
            continue
        rand = [v["recall"] for (m, s), v in items.items() if m == mean and s.startswith("random")]
        if not rand:
            raise ValueError("allocation_verdict needs random allocations; set n_random >= 1.")
        diffs.append(np.asarray(items[(mean, "capability")]["recall"], float) - np.mean(rand, axis=0))
    d = stats.paired(np.concatenate(diffs), unit="fact × sparsity pairs", n_boot=n_boot)
    n_rand = sum(1 for (m, s) in items if s.startswith("random")) // max(1, len(diffs))
    return shared.difference_verdict(
        SEED_RESULTS["allocation claim"] + ": capability-guided allocation keeps more fact recall than random "
        "allocation at matched sparsity",
        d,
        seed="proposed (CGC), no positive result reported",
        what=f"fact recall, capability − mean of {n_rand} random seeds, pooled over sparsities",
    )


def budget_report(findings: pd.DataFrame) -> list[str]:
    """One sentence per mean sparsity comparing capability- and Wanda-guided allocation."""
    return [
        f"mean sparsity {mean}: perplexity {f['capability perplexity']:.2f} (capability) vs "
        f"{f['wanda perplexity']:.2f} (Wanda), paired Δ log ppl {f['Δ log perplexity (capability − wanda)']:+.4f} "
        f"[{f['Δ log ppl low']:+.4f}, {f['Δ log ppl high']:+.4f}] over {int(f['windows'])} windows; fact recall "
        f"{f['capability fact recall']:.3f} vs {f['wanda fact recall']:.3f}, paired Δ "
        f"{f['Δ recall (capability − wanda)']:+.3f} [{f['Δ recall low']:+.3f}, {f['Δ recall high']:+.3f}] "
        f"over {int(f['facts'])} facts; random allocations ({int(f['random seeds'])} seeds) recall "
        f"{f['random fact recall (mean of seeds)']:.3f}."
        for mean, f in findings.iterrows()
    ]


def verdicts(
    headline: HeadTest,
    ladder: pd.DataFrame,
    direct: DirectImportance,
    transitions: Transitions,
    budget: Budget,
    findings: pd.DataFrame,
    n_boot: int = 2000,
) -> list[Verdict]:
    """One verdict per claim of the seed, in the chapter's order: orthogonality (the headline test
    and the SAE ladder), phase transitions, perplexity's blindness (:func:`budget_findings`),
    capability-guided allocation against random (``n_boot`` bootstrap draws), and whether denser
    heads matter more (density against ΔCE when ablated)."""
    return [
        orthogonality_verdict(headline, ladder),
        transition_verdict(transitions.test),
        perplexity_verdict(findings),
        allocation_verdict(budget.table, budget.items, n_boot),
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
    "min_heads_for_equivalence",
    "orthogonality_verdict",
    "perplexity_verdict",
    "transition_verdict",
    "verdicts",
]
