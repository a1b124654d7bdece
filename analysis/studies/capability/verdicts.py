"""Verdicts: each seed claim against our measurements, with its criterion."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import pandas as pd

from analysis import stats
from analysis.studies.capability.budget import BUDGET_METRICS, budget_summary
from analysis.studies.capability.config import SEED_RESULTS

VERDICTS = ("reproduced", "partly", "not reproduced", "inconclusive")


@dataclass(frozen=True)
class Verdict:
    """One seed claim judged on our measurements: ``verdict`` is one of :data:`VERDICTS`."""

    claim: str
    verdict: str
    criterion: str
    evidence: str

    def __str__(self) -> str:
        return f"{self.claim}: {self.verdict.upper()} ({self.evidence}). Criterion: {self.criterion}"


def binomial_noise(n: int) -> float:
    """Two binomial standard errors at p = ½, ``2 √(0.25 / n)``: a smaller difference between two
    accuracies on ``n`` items is noise."""
    return 2 * math.sqrt(0.25 / n)


def _equivalent(rho: float, n: int, margin: float, alpha: float) -> bool:
    """Whether TOST puts a rank correlation over ``n`` units inside ``±margin``."""
    return not math.isnan(rho) and n >= 4 and stats.tost_correlation(rho, n, margin, alpha).equivalent


def orthogonality_verdict(test: Mapping[str, float], margin: float = 0.1, alpha: float = 0.05) -> Verdict:
    """The claim that density is independent of Wanda, from :meth:`DensityStudy.headline`."""
    rho, p, n = test["rho"], test["p_perm"], int(test["n"])
    if _equivalent(rho, n, margin, alpha):
        verdict = "partly" if p < alpha else "reproduced"
    else:
        verdict = "not reproduced" if p < alpha else "inconclusive"
    return Verdict(
        SEED_RESULTS["orthogonality claim"],
        verdict,
        f"reproduced if TOST puts ρ inside ±{margin} and permutation p ≥ {alpha}; partly if TOST holds "
        f"but p < {alpha}; not reproduced if p < {alpha} without TOST; else inconclusive",
        f"ρ = {rho:.3f} over {n} heads, permutation p = {p:.4f}",
    )


def importance_verdict(row: Mapping[str, float], margin: float = 0.1, alpha: float = 0.05) -> Verdict:
    """Whether density predicts a head's importance beyond Wanda, from the density row of one
    importance measure in :func:`importance_table`."""
    rho, p, partial, n = row["rho"], row["p_perm"], row["partial ρ given the other"], int(row["n"])
    if p < alpha and abs(partial) > margin:
        verdict = "reproduced" if rho > 0 and partial > 0 else "partly"
    else:
        verdict = "not reproduced" if _equivalent(partial, n, margin, alpha) else "inconclusive"
    return Verdict(
        "capability density predicts a head's importance beyond Wanda (denser heads matter more)",
        verdict,
        f"reproduced if permutation p < {alpha}, |partial ρ given Wanda| > {margin} and both "
        f"ρ > 0; partly if so with the other sign; not reproduced if TOST puts the partial ρ inside "
        f"±{margin}; else inconclusive",
        f"ρ = {rho:.3f}, p = {p:.4f}, partial ρ = {partial:.3f}, n = {n}",
    )


def transition_verdict(test: Mapping[str, float] | None, margin: float = 0.1, alpha: float = 0.05) -> Verdict:
    """The phase-transition claim, from ρ(density, break point) (``run_transitions(...)["test"]``,
    None when fewer than 3 heads have a break point)."""
    criterion = (
        f"reproduced if ρ(density, break point) < 0 with permutation p < {alpha}; not reproduced if "
        f"ρ > 0 with p < {alpha} or TOST puts ρ inside ±{margin}; else inconclusive"
    )
    if test is None:
        return Verdict(
            SEED_RESULTS["phase-transition claim"],
            "inconclusive",
            criterion,
            "fewer than 3 traced heads have a break point",
        )
    rho, p, n = test["rho"], test["p_perm"], int(test["n"])
    if p < alpha:
        verdict = "reproduced" if rho < 0 else "not reproduced"
    else:
        verdict = "not reproduced" if _equivalent(rho, n, margin, alpha) else "inconclusive"
    return Verdict(
        SEED_RESULTS["phase-transition claim"], verdict, criterion, f"ρ = {rho:.3f} over {n} heads, p = {p:.4f}"
    )


def budget_findings(frame: pd.DataFrame, n_facts: int) -> pd.DataFrame:
    """Per mean sparsity (rows): each metric of capability- and Wanda-guided allocation, whether
    perplexity and fact recall rank the two oppositely (``disagree``) or the same way (``agree``),
    and whether the fact-recall difference exceeds :func:`binomial_noise` of ``n_facts``."""
    rows = {}
    for mean, s in budget_summary(frame).items():
        b = frame[frame["mean sparsity"] == mean].set_index("strategy")
        row = {f"{a} {m}": float(b.loc[a, m]) for m in BUDGET_METRICS for a in ("capability", "wanda")}
        order = {s[f"capability vs Wanda, {m}"] for m in ("perplexity", "fact recall")}
        row["disagree"] = bool(s["perplexity and fact recall disagree (capability vs Wanda)"])
        row["agree"] = len(order) == 1 and "tie" not in order
        row["beyond noise"] = abs(row["capability fact recall"] - row["wanda fact recall"]) >= binomial_noise(n_facts)
        rows[mean] = row
    return pd.DataFrame(rows).T


def budget_report(frame: pd.DataFrame, n_facts: int) -> list[str]:
    """One sentence per mean sparsity comparing capability- and Wanda-guided allocation."""
    return [
        f"mean sparsity {mean}: capability-guided vs Wanda-guided perplexity {f['capability perplexity']:.2f} "
        f"vs {f['wanda perplexity']:.2f}, fact recall {f['capability fact recall']:.3f} vs "
        f"{f['wanda fact recall']:.3f}, probe accuracy {f['capability probe accuracy']:.2f} vs "
        f"{f['wanda probe accuracy']:.2f}. "
        + (
            "Perplexity and fact recall rank the two the opposite way: judged by perplexity alone, one would "
            "miss the capability difference"
            if f["disagree"]
            else "Perplexity and fact recall rank the two the same way"
        )
        + (
            ""
            if f["beyond noise"]
            else f", though the fact-recall difference is within two standard errors ({n_facts} facts)"
        )
        + "."
        for mean, f in budget_findings(frame, n_facts).iterrows()
    ]


def perplexity_verdict(frame: pd.DataFrame, n_facts: int) -> Verdict:
    """The claim that perplexity is blind to capability loss, from the budget table."""
    f = budget_findings(frame, n_facts)
    real = f[f["beyond noise"].astype(bool)]
    if real["disagree"].astype(bool).any():
        verdict = "reproduced"
    elif f["disagree"].astype(bool).any():
        verdict = "partly"
    else:
        verdict = "not reproduced" if real["agree"].astype(bool).any() else "inconclusive"
    return Verdict(
        SEED_RESULTS["perplexity claim"],
        verdict,
        "reproduced if, at some mean sparsity, perplexity and fact recall rank capability- and "
        f"Wanda-guided allocation oppositely with a recall difference ≥ {binomial_noise(n_facts):.2f} "
        f"(two binomial SEs, {n_facts} facts); partly if opposite only within that noise; not reproduced "
        "if never opposite and the same order on a difference beyond noise; else inconclusive",
        "; ".join(
            f"{m}: {'opposite' if r['disagree'] else 'same' if r['agree'] else 'tie'}, recall "
            f"{r['capability fact recall']:.3f} vs {r['wanda fact recall']:.3f}"
            for m, r in f.iterrows()
        ),
    )
