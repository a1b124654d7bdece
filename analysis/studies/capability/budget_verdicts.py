"""Verdicts on the budget comparison: perplexity's blindness (TOST on Δ log perplexity) and
capability-guided allocation against random allocations (facts clustered by relation, the random
allocations' own spread counted).

Facts are not independent units: facts of one relation share a template and often an answer, and
the same fact is scored at every mean sparsity. Every interval over facts is therefore a
cluster-robust t interval over *relations* (:func:`analysis.stats.cluster_t`; fewer than
:data:`analysis.studies.verdicts.MIN_UNITS` relations make a verdict inconclusive). Each random
allocation is one draw of a model: capability-guided allocation is compared with their mean, and
the interval adds the spread between draws (:func:`versus_random`)."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from analysis import stats
from analysis.studies import verdicts as shared
from analysis.studies.capability.config import PPL_MARGIN
from analysis.studies.capability.seed import SEED_RESULTS

Verdict = shared.Verdict


def _clusters(relations: Sequence[str] | None, n: int) -> np.ndarray:
    """One cluster label per fact: its relation, or the fact itself when relations are not given."""
    if relations is None or len(relations) == 0:
        return np.arange(n)
    if len(relations) != n:
        raise ValueError(f"{len(relations)} relation labels for {n} facts.")
    return np.asarray(relations)


def _means(budget: pd.DataFrame) -> list[float]:
    return [m for m in sorted(budget["mean sparsity"].unique()) if m != 0]


def budget_findings(
    budget: pd.DataFrame,
    items: Mapping[tuple[float, str], Mapping[str, np.ndarray]],
    n_boot: int = 2000,
    relations: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Per mean sparsity: capability minus Wanda in perplexity (per-window Δ log perplexity, t
    interval over windows) and fact recall (cluster-robust t interval over the facts' ``relations``),
    each at the Bonferroni level ``1 - 0.05/m`` over the ``m`` sparsities (one claim, several
    comparisons), and the random seeds' mean. ``items[(mean, strategy)]`` holds
    ``{"window_nll", "window_tokens", "recall"}``; ``n_boot`` is kept for callers (intervals are analytic)."""
    rows = {}
    means = _means(budget)
    level = 1 - 0.05 / max(1, len(means))
    for mean in means:
        c, w = items[(mean, "capability")], items[(mean, "wanda")]
        cr = np.asarray(c["recall"], float)
        rec = stats.paired(
            cr, np.asarray(w["recall"], float), "relations", cluster=_clusters(relations, len(cr)), level=level
        )
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
            "facts": len(cr),
            "relations": rec.n,
            "windows": nll.n,
            "interval level": level,
        }
    return pd.DataFrame(rows).T


def _sign(lo: float, hi: float) -> int:
    return 1 if lo > 0 else -1 if hi < 0 else 0


def window_log_ppl_diffs(items, mean: float, a: str = "capability", b: str = "wanda") -> np.ndarray:
    """Per window: ``a``'s minus ``b``'s mean NLL per token (Δ log perplexity) at one mean sparsity."""
    x, y = items[(mean, a)], items[(mean, b)]
    return np.asarray(x["window_nll"]) / np.asarray(x["window_tokens"]) - np.asarray(y["window_nll"]) / np.asarray(
        y["window_tokens"]
    )


def perplexity_verdict(findings: pd.DataFrame, items, margin: float = PPL_MARGIN) -> Verdict:
    """ "Perplexity is insensitive to capability loss", from :func:`budget_findings`: reproduced when,
    at some mean sparsity, fact recall separates capability- from Wanda-guided allocation (Bonferroni
    interval over relations excludes 0) *and* TOST (α = 0.05/m) puts their Δ log perplexity inside
    ``±margin`` (:data:`~analysis.studies.capability.config.PPL_MARGIN`, a 1% perplexity ratio).
    Not reproduced when every separated recall difference is matched by perplexity (its interval
    excludes 0 in the same order) and none is hidden; else inconclusive (an interval that merely
    fails to separate the perplexities is absence of evidence, not equivalence)."""
    m = len(findings)
    alpha = 0.05 / max(1, m)
    hidden, visible, evid = [], [], []
    for mean, f in findings.iterrows():
        r, p = _sign(f["Δ recall low"], f["Δ recall high"]), _sign(f["Δ log ppl low"], f["Δ log ppl high"])
        x = window_log_ppl_diffs(items, mean)
        d = stats.Difference(
            f["Δ log perplexity (capability − wanda)"],
            f["Δ log ppl low"],
            f["Δ log ppl high"],
            float("nan"),
            int(f["windows"]),
            "windows",
            float(f["interval level"]),
        )
        eq = shared.mean_equivalence_verdict("", d, x, margin, what="Δ log ppl", alpha=alpha)
        few = int(f["relations"]) < shared.MIN_UNITS
        hidden.append(r != 0 and not few and eq.verdict == "reproduced")
        visible.append(r != 0 and not few and p == -r)  # recall higher is better, perplexity lower is better
        evid.append(
            f"{mean}: Δ recall {f['Δ recall (capability − wanda)']:+.3f} [{f['Δ recall low']:+.3f}, "
            f"{f['Δ recall high']:+.3f}] over {int(f['relations'])} relations ({int(f['facts'])} facts)"
            + (f", fewer than {shared.MIN_UNITS} relations" if few else "")
            + f"; {eq.evidence} ({'equivalent' if eq.verdict == 'reproduced' else 'not shown equivalent'})"
        )
    verdict = "reproduced" if any(hidden) else "not reproduced" if any(visible) else "inconclusive"
    best = findings.iloc[int(np.argmax(findings["Δ recall (capability − wanda)"].abs().to_numpy()))] if m else None
    return Verdict(
        SEED_RESULTS["perplexity claim"],
        verdict,
        f"reproduced if, at some mean sparsity, the paired fact-recall difference (capability − Wanda; cluster-robust "
        f"interval over relations, Bonferroni over {m} sparsities) excludes 0 while TOST (α = {alpha:.3g}) puts Δ log "
        f"perplexity inside ±{margin:.4f} (a 1% perplexity ratio); not reproduced if every separated recall "
        f"difference is matched by perplexity in the same order; else inconclusive",
        "; ".join(evid),
        "negative PPL result on GPT-2 Medium",
        None if best is None else float(best["Δ recall (capability − wanda)"]),
        None if best is None else float(best["Δ recall low"]),
        None if best is None else float(best["Δ recall high"]),
    )


def versus_random(cap, rand, relations: Sequence[str] | None = None, level: float = 0.95) -> stats.Difference:
    """Capability-guided recall minus the mean of ``R`` random allocations' recall, over facts.

    ``cap`` is ``[n facts]`` (0/1), ``rand`` ``[R, n facts]``. The standard error adds two parts:
    the cluster-robust one over the facts' relations (:func:`analysis.stats.cluster_t`, ``G``
    clusters), and the spread between random draws, ``var_r(mean recall of draw r) / R`` (each
    random allocation is one draw of a model; treating their mean as fixed ignores it). The t
    interval takes Welch–Satterthwaite degrees of freedom from ``G - 1`` and ``R - 1``; ``n`` counts
    the relations (the clusters). NaN interval for ``R < 2`` or ``G < 2``."""
    cap, rand = np.asarray(cap, float), np.atleast_2d(np.asarray(rand, float))
    d = cap - rand.mean(0)
    est, se_facts, g = stats.cluster_se(d, _clusters(relations, len(d)))
    r = len(rand)
    if g < 2 or r < 2:
        return stats.Difference(est, float("nan"), float("nan"), float("nan"), g, "relations", level)
    v_facts = se_facts**2
    v_draws = float(rand.mean(1).var(ddof=1)) / r
    se = math.sqrt(v_facts + v_draws)
    if se == 0:
        return stats.Difference(est, est, est, float(est <= 0), g, "relations", level)
    df = (v_facts + v_draws) ** 2 / (v_facts**2 / (g - 1) + v_draws**2 / (r - 1))
    half = float(sps.t.ppf(0.5 + level / 2, df)) * se
    p = float(sps.t.sf(est / se, df))
    return stats.Difference(est, est - half, est + half, p, g, "relations", level, float(sps.t.cdf(est / se, df)))


def allocation_verdict(
    budget: pd.DataFrame,
    items: Mapping[tuple[float, str], Mapping[str, np.ndarray]],
    n_boot: int = 2000,
    relations: Sequence[str] | None = None,
) -> Verdict:
    """ "Capability-guided allocation preserves capability": at *every* mean sparsity, fact recall of
    capability-guided allocation minus the mean of the random allocations (:func:`versus_random`:
    facts clustered by relation, the draws' spread counted), each judged on its 95% interval; the
    claim is reproduced only where every sparsity is (:func:`analysis.studies.verdicts.combine`)."""
    claim = (
        SEED_RESULTS["allocation claim"] + ": capability-guided allocation keeps more fact recall than random "
        "allocation at matched sparsity"
    )
    parts, diffs = [], []
    for mean in _means(budget):
        rand = [v["recall"] for (m, s), v in items.items() if m == mean and s.startswith("random")]
        if not rand:
            raise ValueError("allocation_verdict needs random allocations; set n_random >= 1.")
        d = versus_random(items[(mean, "capability")]["recall"], rand, relations)
        diffs.append(d)
        what = (
            f"fact recall at mean sparsity {mean}, capability − mean of {len(rand)} random draws over {d.n} relations"
        )
        parts.append(shared.difference_verdict(f"mean sparsity {mean}", d, seed=None, what=what))
    whole = shared.combine(claim, parts, seed="proposed (CGC), no positive result reported")
    worst = int(np.argmin([d.low if math.isfinite(d.low) else -math.inf for d in diffs]))
    return Verdict(
        claim,
        whole.verdict,
        "at every mean sparsity: reproduced if the 95% interval (cluster-robust over relations plus the random "
        "draws' spread, Welch–Satterthwaite t) lies > 0; " + whole.criterion,
        "; ".join(p.evidence for p in parts),
        whole.seed,
        diffs[worst].estimate,
        diffs[worst].low,
        diffs[worst].high,
    )


def budget_report(findings: pd.DataFrame) -> list[str]:
    """One sentence per mean sparsity comparing capability- and Wanda-guided allocation."""
    return [
        f"mean sparsity {mean}: perplexity {f['capability perplexity']:.2f} (capability) vs "
        f"{f['wanda perplexity']:.2f} (Wanda), paired Δ log ppl {f['Δ log perplexity (capability − wanda)']:+.4f} "
        f"[{f['Δ log ppl low']:+.4f}, {f['Δ log ppl high']:+.4f}] over {int(f['windows'])} windows; fact recall "
        f"{f['capability fact recall']:.3f} vs {f['wanda fact recall']:.3f}, paired Δ "
        f"{f['Δ recall (capability − wanda)']:+.3f} [{f['Δ recall low']:+.3f}, {f['Δ recall high']:+.3f}] "
        f"over {int(f['facts'])} facts in {int(f['relations'])} relations; random allocations "
        f"({int(f['random seeds'])} seeds) recall {f['random fact recall (mean of seeds)']:.3f}."
        for mean, f in findings.iterrows()
    ]
