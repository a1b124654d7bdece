"""The synthesis chapter's figures: which signal predicts which oracle, which signals agree, the
allocation leaderboard per operation, price against quality, and feature survival."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from scipy.cluster.hierarchy import leaves_list, linkage
from scipy.spatial.distance import squareform

from analysis.studies.synthesis import allocate


def prediction_heatmap(pred: pd.DataFrame, stat: str = "spearman") -> plt.Figure:
    """Signals (rows) against oracles (columns): the rank correlation, annotated, on one scale."""
    table = pred.pivot(index="signal", columns="oracle", values=stat)
    table = table.loc[table.mean(1).sort_values(ascending=False).index]
    fig, ax = plt.subplots(figsize=(1.6 * table.shape[1] + 3, 0.42 * len(table) + 1.5))
    sns.heatmap(table, annot=True, fmt=".2f", cmap="RdBu_r", vmin=-1, vmax=1, ax=ax, cbar_kws={"label": stat})
    ax.set_title(f"{stat} with the oracle's cost (within kind, mean over kinds)")
    ax.set_xlabel("oracle (cost of compressing one unit alone)")
    ax.set_ylabel("")
    return fig


def agreement_heatmap(matrix: pd.DataFrame) -> plt.Figure:
    """The signals' Spearman matrix, ordered by average-linkage clustering on ``1 - ρ``."""
    m = matrix.fillna(0.0)
    dist = np.clip(1 - m.values, 0, 2)
    np.fill_diagonal(dist, 0)
    order = leaves_list(linkage(squareform((dist + dist.T) / 2, checks=False), "average"))
    m = matrix.iloc[order, order]
    fig, ax = plt.subplots(figsize=(0.5 * len(m) + 3, 0.45 * len(m) + 2))
    sns.heatmap(m, annot=True, fmt=".1f", cmap="RdBu_r", vmin=-1, vmax=1, ax=ax, annot_kws={"size": 7})
    ax.set_title("Which signals agree (Spearman ρ over layers, within kind)")
    return fig


def _style(name: str) -> dict:
    if name == allocate.UNIFORM:
        return {"color": "black", "lw": 2.2, "zorder": 5}
    if name == allocate.ORACLE:
        return {"color": "tab:green", "lw": 2.2, "zorder": 5}
    if name in (allocate.SHORTGPT, allocate.GROMOV):
        return {"color": "tab:red", "lw": 2, "ls": "--", "zorder": 4}
    return {"lw": 1, "alpha": 0.75}


def leaderboard(board: pd.DataFrame, usable_log_ppl: float) -> plt.Figure:
    """Δ log-perplexity against the budget, one panel per operation: each signal's allocation,
    uniform (black), the oracle's (green), the published procedures (red), the random allocations'
    range (grey band), and the usability line (dotted)."""
    ops = [op for op in ("remove", "prune", "quantize") if op in set(board["operation"])]
    fig, axes = plt.subplots(1, len(ops), figsize=(6 * len(ops), 5), squeeze=False)
    for ax, op in zip(axes[0], ops):
        sub = board[(board["operation"] == op) & (board["allocation"] != "dense")]
        rand = sub[sub["allocation"].str.startswith(allocate.RANDOM)]
        if len(rand):
            g = rand.groupby("budget")["Δ log-ppl"]
            ax.fill_between(g.min().index, g.min(), g.max(), color="grey", alpha=0.25, label="random (range)")
        for name, rows in sub[~sub["allocation"].str.startswith(allocate.RANDOM)].groupby("allocation", sort=False):
            rows = rows.sort_values("budget")
            if len(rows) == 1:
                ax.scatter(
                    rows["budget"], rows["Δ log-ppl"], marker="*", s=120, color="tab:purple", label=name, zorder=6
                )
            else:
                ax.plot(rows["budget"], rows["Δ log-ppl"], marker="o", label=name, **_style(name))
        ax.axhline(usable_log_ppl, color="grey", ls=":", label="unigram line (unusable above)")
        ax.set_yscale("symlog", linthresh=0.1)
        ax.set_xlabel({"remove": "layers removed", "prune": "mean prune fraction", "quantize": "mean bits"}[op])
        ax.set_ylabel("Δ log-perplexity vs dense (held-out windows)")
        ax.set_title(op)
    handles, labels = axes[0][-1].get_legend_handles_labels()
    for ax in axes[0][:-1]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    return fig


def price(costs: pd.DataFrame, pred: pd.DataFrame, oracle: str) -> plt.Figure:
    """Each signal's seconds (log scale) against its Spearman ρ with one oracle, with the interval."""
    sub = pred[pred["oracle"] == oracle].set_index("signal").join(costs[["seconds"]], how="inner")
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.errorbar(
        sub["seconds"],
        sub["spearman"],
        yerr=[sub["spearman"] - sub["spearman low"], sub["spearman high"] - sub["spearman"]],
        fmt="o",
        capsize=3,
    )
    for name, row in sub.iterrows():
        ax.annotate(name, (row["seconds"], row["spearman"]), fontsize=7, xytext=(4, 2), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("seconds to compute (as recorded)")
    ax.set_ylabel(f"Spearman ρ with the oracle: {oracle}")
    ax.axhline(0, color="grey", lw=0.8)
    return fig


def survival(table: pd.DataFrame) -> plt.Figure:
    """Share of active SAE features surviving (with its interval) per compressed model and SAE layer."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for layer, rows in table.groupby("SAE layer"):
        x = np.arange(len(rows))
        ax.errorbar(
            x,
            rows["surviving"],
            yerr=[rows["surviving"] - rows["low"], rows["high"] - rows["surviving"]],
            fmt="o-",
            capsize=3,
            label=f"SAE at layer {layer}",
        )
        ax.set_xticks(x, rows["model"], rotation=30, ha="right")
    ax.set_ylabel("share of active features surviving")
    ax.set_ylim(0, 1.02)
    ax.legend()
    fig.tight_layout()
    return fig


def oracle_profile(frame: pd.DataFrame) -> plt.Figure:
    """The oracle over depth: Δ log-perplexity of compressing one unit alone, one panel per
    operation, a line per kind of unit (attention, MLP, whole block), with its window interval."""
    kind = frame["unit"].str.extract(r"\.(attn|mlp)$")[0].fillna("block")
    frame = frame.assign(kind=kind)
    ops = list(dict.fromkeys(frame["operation"]))
    fig, axes = plt.subplots(1, len(ops), figsize=(5.5 * len(ops), 4), squeeze=False, sharey=False)
    for ax, op in zip(axes[0], ops):
        for k, rows in frame[frame["operation"] == op].groupby("kind"):
            rows = rows.sort_values("layer")
            ax.plot(rows["layer"], rows["Δ log-ppl"], marker=".", label=k)
            ax.fill_between(rows["layer"], rows["low"], rows["high"], alpha=0.2)
        ax.set_yscale("symlog", linthresh=0.01)
        ax.set_title(f"oracle: {op}")
        ax.set_xlabel("layer")
        ax.set_ylabel("Δ log-perplexity (one unit compressed)")
        ax.legend()
    fig.tight_layout()
    return fig
