"""Seed 003's figures: directions removed, variance kept, block linearity, block replacement,
quantization and early exit.

Each takes a runner's table or typed result (:mod:`~analysis.studies.variance.results`) and
returns the matplotlib figure or ``Axes``; the book's style and its generic shapes (curves over
layers) stay in :mod:`analysis.plots`.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from analysis.studies.variance.results import Exits


def direction_removal(frame, value: str = "Δnll") -> plt.Figure:
    """Loss increase against directions removed at each ablation layer, a line per kind of direction
    (``frame``: :func:`~analysis.studies.variance.ablation` rows with ``layer``, ``kind``, ``k``)."""
    rows = frame[(frame["layer"] >= 0) & (frame["kind"] != "keep variance")]
    layers = sorted(rows["layer"].unique())
    fig, axes = plt.subplots(1, len(layers), figsize=(4.2 * len(layers), 3.3), squeeze=False, sharey=True)
    for ax, layer in zip(axes[0], layers):
        at = rows[rows["layer"] == layer]
        for kind, g in at.groupby("kind"):
            ax.plot(g["k"], g[value], marker="o", markersize=3, label=kind)
        ax.set_xscale("log", base=2)
        ax.set_yscale("symlog", linthresh=0.01)
        ax.set_title(f"blocks.{layer}.hook_resid_pre", fontsize=9)
        ax.set_xlabel("directions projected out (k)")
    axes[0, 0].set_ylabel(f"{value} (nats per token)")
    axes[0, 0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def retained_vs_loss(frame, ax: plt.Axes | None = None) -> plt.Axes:
    """Variance retained against the loss increase when only the top-r variance directions are kept."""
    ax = ax or plt.subplots(figsize=(4.8, 3.4))[1]
    rows = frame[frame["kind"] == "keep variance"]
    for layer, g in rows.groupby("layer"):
        ax.plot(g["retained"], g["Δnll"], marker="o", markersize=3, label=f"layer {layer}")
        for _, r in g.iterrows():
            ax.annotate(f"r={r['k']}", (r["retained"], r["Δnll"]), fontsize=6, alpha=0.7)
    ax.set_yscale("symlog", linthresh=0.01)
    ax.set_xlabel("share of variance retained")
    ax.set_ylabel("Δnll (nats per token)")
    ax.legend(fontsize=7, frameon=False)
    return ax


def linearity_profile(frame) -> plt.Figure:
    """Per block: in-sample linearity scores and held-out R², with/without residual, clean/replaced upstream."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), sharey=True)
    x = frame.index
    for ax, part in zip(axes, ("output", "update")):
        score = "score with residual" if part == "output" else "score without residual"
        ax.plot(x, frame[score], marker=".", label="in-sample score (Razzhigaev)")
        ax.plot(x, frame[f"R² {part}, clean"], marker="o", markersize=3, label="held-out R², clean upstream")
        ax.plot(x, frame[f"R² {part}, replaced"], marker="x", markersize=3, label="held-out R², replaced upstream")
        ax.set_title("with the residual (y)" if part == "output" else "without it (y - x)", fontsize=10)
        ax.set_xlabel("block l (blocks.l.hook_resid_pre -> hook_resid_post)")
        ax.set_ylim(max(-1.0, float(np.nanmin(frame.filter(like=part).values)) - 0.05), 1.02)
    axes[0].set_ylabel("R² / linearity score")
    axes[0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def replacement_curve(frame, ax: plt.Axes | None = None) -> plt.Axes:
    """Perplexity against the number of last blocks replaced, a line per map kind."""
    ax = ax or plt.subplots(figsize=(4.8, 3.4))[1]
    base = frame[frame["blocks"] == 0]["perplexity"].iloc[0]
    for kind, g in frame[frame["blocks"] > 0].groupby("map"):
        ax.plot(g["blocks"], g["perplexity"], marker="o", label=f"{kind} ({g['compression'].iloc[0]:.1f}x)")
    ax.axhline(base, color="0.4", ls="--", lw=1, label="no block replaced")
    ax.set_yscale("log")
    ax.set_xlabel("last blocks replaced together")
    ax.set_ylabel("perplexity")
    ax.legend(fontsize=7, frameon=False)
    return ax


def quantization_curves(frame, ax: plt.Axes | None = None) -> plt.Axes:
    """Perplexity against stored bits per weight for each quantization scheme (``frame``: :attr:`Quantization.ppl`)."""
    ax = ax or plt.subplots(figsize=(4.8, 3.4))[1]
    base = frame[frame["scheme"] == "none"]["perplexity"].iloc[0]
    for scheme, g in frame[frame["scheme"] != "none"].groupby("scheme"):
        ax.plot(g["bpw"], g["perplexity"], marker="o", label=scheme)
    ax.axhline(base, color="0.4", ls="--", lw=1, label="unquantized")
    ax.set_yscale("log")
    ax.set_xlabel("stored bits per weight (scales included)")
    ax.set_ylabel("perplexity")
    ax.legend(fontsize=7, frameon=False)
    return ax


def exit_panels(exits: Exits, threshold: float) -> plt.Figure:
    """Early exit: exit-layer histogram at ``threshold``, easy share against threshold, and KL per layer."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.3))
    for lens, result in exits.lenses.items():
        layers = result.exit_layers
        axes[0].hist(layers, bins=np.arange(layers.max() + 2) - 0.5, alpha=0.5, label=lens)
        g = exits.curve[exits.curve["lens"] == lens]
        axes[1].plot(g["threshold"], g["easy share"], marker="o", label=f"{lens}: easy share")
        axes[1].plot(g["threshold"], g["compute saved"], ls=":", label=f"{lens}: compute saved")
        axes[2].plot(result.kl, marker=".", label=lens)
    axes[0].set_xlabel(f"exit layer at confidence ≥ {threshold}")
    axes[0].set_ylabel("tokens")
    axes[1].set_xlabel("confidence threshold")
    axes[1].set_ylabel("share of tokens / of blocks")
    axes[2].set_xlabel("layer l (blocks.l.hook_resid_post)")
    axes[2].set_ylabel("KL(final || lens) (nats)")
    axes[2].set_yscale("log")
    for ax in axes:
        ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig
