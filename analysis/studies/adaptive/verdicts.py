"""Summaries of the AdaptiveCompress study and the verdicts on the seed's five claims.

Every interval is a 95% percentile bootstrap over units stated in each criterion: seeds x layers
for the core metrics, and one-vs-rest probing problems (averaged over seeds) for paired probing
differences, since problems, not seeds, are what the probing accuracy is averaged over.
:func:`verdicts` judges them all: the seed's five claims, then our own question (:data:`QUESTION`).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from analysis import stats
from analysis.studies.adaptive.config import CORRECTED, SEED_VARIANT
from analysis.studies.adaptive.results import AdaptiveResults
from analysis.studies.adaptive.seed import SEED_RESULTS
from analysis.studies.verdicts import Verdict, combine, difference_verdict

CORE = (
    "L0",
    "MSE",
    "explained variance",
    "FVU",
    "dead fraction",
    "dense fraction",
    "kl_div_with_sae",
    "kl_div_score",
    "ce_loss_score",
)

QUESTION = "adaptive retention beats TopK at equal L0"
"""Our question, the opening words of the claims :func:`retention_vs_topk` judges."""


def metric_summary(metrics: pd.DataFrame, columns: Sequence[str] = CORE) -> pd.DataFrame:
    """Per SAE: the mean of each metric over layers and seeds, and ``[lo, hi]`` of its 95% interval."""
    rows = {}
    for sae, frame in metrics.groupby("sae", sort=False):
        row = {}
        for c in columns:
            vals = frame[c].dropna().to_numpy(float) if c in frame else np.array([])
            if len(vals) == 0:
                row[c] = float("nan")
                continue
            mean, lo, hi = stats.mean_ci(vals)
            row[c] = mean
            row[f"{c} 95%"] = f"[{lo:.3g}, {hi:.3g}]"
        rows[sae] = row
    return pd.DataFrame(rows).T


def by_layer(
    metrics: pd.DataFrame, columns: Sequence[str] = ("L0", "explained variance", "MSE", "kl_div_score")
) -> pd.DataFrame:
    """Mean over seeds of each metric, per layer and SAE."""
    return metrics.groupby(["layer", "sae"], sort=False)[list(columns)].mean()


def probe_means(probes: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy over every problem (task x class) and seed: rows are feature sets, columns k."""
    return probes.pivot_table(index="features", columns="k", values="accuracy", aggfunc="mean")


def per_task(probes: pd.DataFrame, k) -> pd.DataFrame:
    """Mean accuracy at ``k`` per task (rows) and feature set (columns), over classes and seeds."""
    sel = probes[probes["k"].astype(str) == str(k)]
    return sel.pivot_table(index="task", columns="features", values="accuracy", aggfunc="mean")


def paired(probes: pd.DataFrame, a: str, b: str, k) -> np.ndarray:
    """Per problem (task, class): accuracy of ``a`` minus ``b`` at ``k``, each averaged over seeds."""
    sel = probes[probes["k"].astype(str) == str(k)]
    m = sel.pivot_table(index=["task", "class"], columns="features", values="accuracy", aggfunc="mean")
    if a not in m or b not in m:
        return np.array([])
    return (m[a] - m[b]).dropna().to_numpy(float)


def probing_verdict(probes: pd.DataFrame, k, seed_pair: tuple[float, float], baseline: str = "standard") -> Verdict:
    """ "AdaptiveCompress improves top-k probing over the baseline SAE": the paired difference > 0."""
    d = paired(probes, SEED_VARIANT, baseline, k)
    return difference_verdict(
        f"top-{k} sparse probing improves ({seed_pair[0]} -> {seed_pair[1]})",
        stats.paired(d),
        0.0,
        ">",
        seed=f"+{seed_pair[1] - seed_pair[0]:.2f} points",
        what=f"accuracy(AdaptiveCompress) - accuracy({baseline}) over {len(d)} problems",
    )


def specialised_verdict(probes: pd.DataFrame, tasks: Sequence[str], k, threshold: float = 0.95) -> Verdict:
    """ "Near-perfect accuracy on language and code tasks": AdaptiveCompress's top-``k`` accuracy above ``threshold``."""
    sel = probes[
        (probes["k"].astype(str) == str(k)) & probes["task"].isin(tasks) & (probes["features"] == SEED_VARIANT)
    ]
    acc = sel.groupby(["task", "class"])["accuracy"].mean().to_numpy(float)
    return difference_verdict(
        f"specialised tasks near ceiling (Europarl {SEED_RESULTS['Europarl']}%, GitHub {SEED_RESULTS['GitHub']}%)",
        stats.paired(acc),
        threshold,
        ">",
        seed=f"{SEED_RESULTS['Europarl']}, {SEED_RESULTS['GitHub']}",
        what=f"top-{k} accuracy on {', '.join(tasks)} ({len(acc)} problems)",
    )


def blocking_verdict(metrics: pd.DataFrame) -> Verdict:
    """ "Complete signal blocking (L0 = 0)": reproduced when every layer and seed of the as-specified
    variant has L0 exactly 0, not reproduced when none has, else partly."""
    l0 = metrics.loc[metrics["sae"] == SEED_VARIANT, "L0"].to_numpy(float)
    zero = int((l0 == 0).sum())
    verdict = (
        "inconclusive"
        if len(l0) == 0
        else ("reproduced" if zero == len(l0) else "not reproduced" if zero == 0 else "partly")
    )
    return Verdict(
        "complete signal blocking: L0 = 0",
        verdict,
        "reproduced if L0 is exactly 0 for every layer and seed; not reproduced if for none; else partly",
        f"L0 = 0 in {zero} of {len(l0)} SAEs; max L0 = {l0.max() if len(l0) else float('nan'):.3g}",
        SEED_RESULTS["L0"],
        float(l0.mean()) if len(l0) else None,
        float(l0.min()) if len(l0) else None,
        float(l0.max()) if len(l0) else None,
    )


def variance_verdict(metrics: pd.DataFrame) -> Verdict:
    """ "Negative explained variance (-0.785)": the interval over layers x seeds below 0."""
    ev = metrics.loc[metrics["sae"] == SEED_VARIANT, "explained variance"].to_numpy(float)
    return difference_verdict(
        "negative explained variance",
        stats.paired(ev),
        0.0,
        "<",
        seed=SEED_RESULTS["explained variance"],
        what=f"explained variance over {len(ev)} SAEs (layers x seeds)",
    )


def verdicts(results: AdaptiveResults) -> list[Verdict]:
    """Every verdict the chapter records: the seed's five claims, then :func:`retention_vs_topk`."""
    metrics, probes = results.metrics, results.probes
    pairs = {k: SEED_RESULTS[f"top-{k} (baseline -> ours)"] for k in (1, 5, 50)}
    top1, top5, top50 = (probing_verdict(probes, k, pair) for k, pair in pairs.items())
    both = "; ".join(f"{a:.2f} -> {b:.2f}" for a, b in (pairs[5], pairs[50]))  # "77.46 -> 82.00; 90.03 -> 93.00"
    return [
        top1,
        combine("top-5 and top-50 sparse probing improve", [top5, top50], seed=both),
        specialised_verdict(
            probes, ("language_id", "code_language"), max(int(k) for k in probes["k"] if str(k) != "all")
        ),
        blocking_verdict(metrics),
        variance_verdict(metrics),
        *retention_vs_topk(metrics, probes),
    ]


def retention_vs_topk(metrics: pd.DataFrame, probes: pd.DataFrame) -> list[Verdict]:
    """Our question: does the corrected AdaptiveCompress beat TopK at (about) the same L0? Explained
    variance paired by layer and seed, and top-1 probing paired by problem."""
    a = metrics[metrics["sae"] == CORRECTED].set_index(["layer", "seed"])
    b = metrics[metrics["sae"] == "topk"].set_index(["layer", "seed"])
    d = (a["explained variance"] - b["explained variance"]).dropna().to_numpy(float)
    ev = difference_verdict(
        f"{QUESTION}: explained variance",
        stats.paired(d),
        0.0,
        ">",
        what=f"EV(corrected) - EV(TopK) over {len(d)} layer x seed pairs",
    )
    p = paired(probes, CORRECTED, "topk", 1)
    probe = difference_verdict(
        f"{QUESTION}: top-1 probing",
        stats.paired(p),
        0.0,
        ">",
        what=f"top-1 accuracy(corrected) - accuracy(TopK) over {len(p)} problems",
    )
    return [ev, probe]


def l0_gap(metrics: pd.DataFrame) -> float:
    """Largest relative gap between the corrected variant's L0 and TopK's on the same layer and seed."""
    a = metrics[metrics["sae"] == CORRECTED].set_index(["layer", "seed"])["L0"]
    b = metrics[metrics["sae"] == "topk"].set_index(["layer", "seed"])["L0"]
    gap = ((a - b).abs() / a.clip(lower=1e-9)).dropna()
    return float(gap.max()) if len(gap) else math.nan
