"""The seed's three claims on our factorization grids, each with a computed verdict.

1. *SVD collapses fastest*: plain SVD has the largest geometric-mean perplexity increase over
   the grid's ratios (:func:`mean_damage` with ``log=True``).
2. *Activation-aware methods hold up better*: ASVD and SVD-LLM both increase perplexity less
   than plain SVD.
3. *Probes reveal damage that perplexity hides*: some pair of compressed decoders is ranked one
   way by perplexity and the other way by a probe, by more than a margin and more than twice the
   probe's seed-to-seed spread (:func:`discordant_pairs`).
"""

from __future__ import annotations

import math

import pandas as pd

from analysis import probing
from analysis.studies.factorization.config import METHOD_LABELS


def mean_damage(frame: pd.DataFrame, column: str, log: bool = False) -> pd.Series:
    """Damage per method averaged over the grid's ratios: baseline - value, or mean log(value / baseline)."""
    base = float(frame.loc[frame["method"] == "none", column].iloc[0])
    out = {}
    for m, g in frame[frame["method"] != "none"].groupby("method", sort=False):
        v = g[column].astype(float)
        out[m] = float((v / base).apply(math.log).mean()) if log else float((base - v).mean())
    return pd.Series(out, name=f"mean damage: {column}")


def discordant_pairs(decoder: pd.DataFrame, probes: pd.DataFrame, grid: dict, margin: float = 0.05) -> list[str]:
    """Pairs of compressed cells that perplexity ranks one way and a probe (top-4 layers) the other, by > ``margin``.

    A pair counts only when the probe gap also exceeds twice the larger seed standard deviation.
    """
    merged = decoder.merge(probes, on=["method", "ratio"])
    merged = merged[merged["method"] != "none"].reset_index(drop=True)
    keys = {(METHOD_LABELS.get(m, "none"), r): (m, r) for m, r in grid}
    out = []
    for t in probing.PROBE_TASKS:
        for i, a in merged.iterrows():
            for j, b in merged.iterrows():
                if a["perplexity"] >= b["perplexity"]:
                    continue  # a is the better cell by perplexity
                gap = float(b[t] - a[t])  # > 0: the probe prefers b
                res_a, res_b = grid[keys[(a["method"], a["ratio"])]][t], grid[keys[(b["method"], b["ratio"])]][t]
                L = res_a.acc["mlp"]["task"].shape[0]
                top = list(range(max(0, L - 4), L))
                sd = max(float(res_a.std()[top].mean()), float(res_b.std()[top].mean()))
                if gap > max(margin, 2 * sd):
                    out.append(
                        f"{t}: {a['method']} {a['ratio']:.0%} has lower perplexity ({a['perplexity']:.3g} vs "
                        f"{b['perplexity']:.3g}) than {b['method']} {b['ratio']:.0%} but a probe "
                        f"{gap:.2f} worse ({a[t]:.2f} vs {b[t]:.2f})"
                    )
    return out


def verdicts(decoder: pd.DataFrame, probes: pd.DataFrame, grid: dict) -> pd.DataFrame:
    """The seed's three claims, each with a computed verdict and the evidence behind it.

    ``decoder``: :func:`~analysis.studies.factorization.decoder_grid`; ``probes``:
    :func:`~analysis.studies.factorization.probe_frame` of the decoder's probe ``grid``
    (:func:`~analysis.studies.factorization.decoder_probe_grid`), so that probes and perplexity
    judge the same models.
    """
    ppl = mean_damage(decoder, "perplexity", log=True)
    fmt = lambda m: f"{m} x{math.exp(ppl[m]):.3g}"  # noqa: E731
    rows = [
        (
            "SVD collapses fastest (perplexity)",
            bool(ppl.idxmax() == "SVD"),
            "geometric-mean perplexity increase over the grid: " + ", ".join(fmt(m) for m in ppl.index),
        )
    ]
    aware = [m for m in ("ASVD", "SVD-LLM") if m in ppl]
    better = bool("SVD" in ppl and aware and all(ppl[m] < ppl["SVD"] for m in aware))
    rows.append(
        (
            "activation-aware methods (ASVD, SVD-LLM) hold up better than SVD",
            better,
            "; ".join(fmt(m) for m in [*aware, "SVD"] if m in ppl),
        )
    )
    pairs = discordant_pairs(decoder, probes, grid)
    rows.append(
        (
            "probes reveal damage that perplexity hides",
            bool(pairs),
            "; ".join(pairs[:4]) + (f" (+{len(pairs) - 4} more)" if len(pairs) > 4 else "")
            if pairs
            else "no pair of compressed models that perplexity and a probe rank in opposite order by > 0.05",
        )
    )
    return pd.DataFrame(rows, columns=["claim", "holds here", "evidence (ours)"])


def probe_damage(probes: pd.DataFrame, tasks: tuple[str, ...] = ("TruthfulQA", "SST-2", "CoLA")) -> pd.DataFrame:
    """Mean probe-accuracy drop per method over the grid (baseline minus value), one column per task
    (by default the hardest task first, the order in which the seed says knowledge goes)."""
    return pd.DataFrame({t: mean_damage(probes, t) for t in tasks})


def first_ratio_changes(decoder: pd.DataFrame) -> list[str]:
    """One line per method: each decoder score before and after compressing at the grid's lowest ratio."""
    base = decoder[decoder["method"] == "none"].iloc[0]
    lines = []
    for m in decoder.loc[decoder["method"] != "none", "method"].unique():
        g = decoder[decoder["method"] == m].set_index("ratio")
        lo = g.index.min()
        lines.append(
            f"{m}: at {lo:.0%} removed, perplexity {base['perplexity']:.3g} -> {g.loc[lo, 'perplexity']:.3g}, "
            f"fact MC {base['fact mc acc']:.2f} -> {g.loc[lo, 'fact mc acc']:.2f}, "
            f"TruthfulQA MC {base['truthfulqa mc acc']:.2f} -> {g.loc[lo, 'truthfulqa mc acc']:.2f}, "
            f"fact recall {base['fact recall']:.2f} -> {g.loc[lo, 'fact recall']:.2f}"
        )
    return lines
