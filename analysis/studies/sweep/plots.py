"""The information-aware compression chapter's own figures: the seed's Figure 2 as heatmaps, and
model size against perplexity with the uniform frontier, the allocations and their random controls.

Both read :func:`analysis.studies.sweep.frame` tables (one row per cell); the book's style is set
by :func:`analysis.plots.setup_style`.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns


def sweep_heatmaps(frame, value: str = "perplexity", log: bool = True) -> plt.Figure:
    """The seed's Figure 2: one panel per prune setting; rows are bit settings (low, medium,
    high), columns allocations; colour and annotation are ``value`` on one shared scale."""
    prunes = list(dict.fromkeys(frame["prune"]))
    vals = frame[value].astype(float)
    vmin, vmax = vals.min(), vals.max()
    fig, axes = plt.subplots(
        1, len(prunes), figsize=(5.2 * len(prunes), 0.55 * frame["bits"].nunique() + 2.2), squeeze=False
    )
    for ax, prune in zip(axes[0], prunes):
        sub = frame[frame["prune"] == prune].pivot(index="bits", columns="allocation", values=value)
        sub = sub[list(dict.fromkeys(frame["allocation"]))]
        data = np.log(sub.values.astype(float)) if log else sub.values.astype(float)
        sns.heatmap(
            data,
            ax=ax,
            annot=sub.values,
            fmt=".3g",
            cmap="viridis",
            cbar=False,
            vmin=np.log(vmin) if log else vmin,
            vmax=np.log(vmax) if log else vmax,
            xticklabels=sub.columns,
            yticklabels=sub.index,
        )
        ax.set_title(f"prune {prune} (low, medium, high)")
        ax.set_xlabel("allocation")
        ax.set_ylabel("bits (low, medium, high)")
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle(f"{value} (darker is better)" + (" — colour on a log scale" if log else ""), y=1.02)
    return fig


def pareto(
    frame, x: str = "model MB", y: str = "perplexity", ax: plt.Axes | None = None, bar: float | None = None
) -> plt.Axes:
    """Size against quality: uniform compression as a line, each allocation's cells as markers,
    random controls as grey crosses; ``bar`` draws the line below which a model counts as usable."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.4))
    if bar is not None:
        ax.axhline(bar, color="0.3", linestyle="--", linewidth=1, label="usable below (unigram model)", zorder=1)
    uni = frame[frame["allocation"] == "uniform"].sort_values(x)
    ax.plot(uni[x], uni[y], "k-o", markersize=4, label="uniform", zorder=3)
    rand = frame[frame["allocation"].str.startswith("random:")]
    ax.scatter(rand[x], rand[y], marker="x", color="0.55", label="random allocation (control)", zorder=2)
    others = frame[~frame["allocation"].str.startswith("random:") & (frame["allocation"] != "uniform")]
    for (name, sub), marker in zip(others.groupby("allocation", sort=False), "osD^vP*X<>"):
        ax.scatter(sub[x], sub[y], marker=marker, s=40, label=name, zorder=4)
    ax.set_yscale("log")
    ax.set_xlabel(f"{x} (compressed weights + the rest at 16 bits)")
    ax.set_ylabel(f"{y} (log scale)")
    ax.legend(frameon=False, fontsize=8)
    return ax
