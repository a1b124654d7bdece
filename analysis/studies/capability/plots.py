"""The study's own figures: maps over layers and heads, one head's loss as its sparsity rises,
and the allocation strategies side by side. The book's style is set by :func:`analysis.plots.setup_style`."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns


def head_heatmaps(
    maps: dict, keys: Sequence[str], titles: Sequence[str] | None = None, cmap: str = "viridis"
) -> plt.Figure:
    """One layer × head heatmap per entry of ``maps`` (each ``[n_layers, n_heads]``), side by side."""
    fig, axes = plt.subplots(1, len(keys), figsize=(2.3 * len(keys) + 0.6, 5.2), constrained_layout=True)
    for ax, key, title in zip(np.atleast_1d(axes), keys, titles or keys):
        grid = np.asarray(maps[key], dtype=float)
        im = ax.imshow(grid, aspect="auto", cmap=cmap, interpolation="nearest", origin="lower")
        ax.set_xlabel("head h")
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(grid.shape[1]))
        ax.tick_params(labelsize=7)
        ax.grid(False)
        plt.colorbar(im, ax=ax, fraction=0.08, pad=0.03)
    np.atleast_1d(axes)[0].set_ylabel("layer l  (blocks.l.attn.hook_z)")
    return fig


def transition_curves(levels: Sequence[float], curves, density, ablation, ax: plt.Axes | None = None) -> plt.Axes:
    """Loss increase against one head's sparsity (ablation at 1.0), coloured by the head's density."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6.0, 3.8))
    curves, density, ablation = (np.asarray(v, dtype=float) for v in (curves, density, ablation))
    xs = [0.0, *levels, 1.0]
    norm = plt.Normalize(density.min(), density.max())
    cmap = plt.get_cmap("viridis")
    for c, d, a in zip(curves, density, ablation):
        ax.plot(xs, [0.0, *c, a], color=cmap(norm(d)), lw=1.0, alpha=0.8, marker="o", markersize=2)
    ax.set_xlabel("sparsity of one head (W_Q columns and W_O rows; 1.0 = ablated)")
    ax.set_ylabel("ΔCE (nats/token)")
    ax.set_yscale("symlog", linthresh=1e-3)
    plt.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="capability density")
    return ax


def budget_bars(frame, metrics: Sequence[str] = ("perplexity", "fact recall", "probe accuracy")) -> plt.Figure:
    """One panel per metric: each allocation strategy at each mean sparsity, the dense model as a line."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), constrained_layout=True)
    dense = frame[frame["strategy"] == "dense"].iloc[0]
    rest = frame[frame["strategy"] != "dense"]
    for ax, metric in zip(np.atleast_1d(axes), metrics):
        sns.barplot(data=rest, x="mean sparsity", y=metric, hue="strategy", ax=ax)
        ax.axhline(dense[metric], color="0.3", ls="--", lw=1, label="dense")
        ax.set_title(metric, fontsize=10)
        ax.legend(fontsize=7, frameon=False)
    return fig
