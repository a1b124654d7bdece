"""The factorization study's own figures: scores over a (method, ratio) grid, and probes per layer
as the seed draws them (Pletenev 2024, Figures 2-4)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from analysis import probing
from analysis.studies.factorization.config import METHOD_LABELS
from analysis.studies.factorization.results import ProbeGrid


def method_grid(frame, columns, logy=(), title: str | None = None) -> plt.Figure:
    """One panel per column of a (method, ratio) grid: a line per method, the uncompressed model dashed."""
    fig, axes = plt.subplots(1, len(columns), figsize=(4.2 * len(columns), 3.3), constrained_layout=True)
    for ax, col in zip(np.atleast_1d(axes), columns):
        base = frame.loc[frame["method"] == "none", col]
        for m, g in frame[frame["method"] != "none"].groupby("method", sort=False):
            x, y = list(100 * g["ratio"]), list(g[col])
            if len(base):  # every method starts from the uncompressed model at 0 %
                x, y = [0.0, *x], [float(base.iloc[0]), *y]
            ax.plot(x, y, marker="o", markersize=3, label=m)
        if len(base):
            ax.axhline(float(base.iloc[0]), color="0.3", ls="--", lw=0.9, label="uncompressed")
        if col in logy:
            ax.set_yscale("log")
        ax.set_xlabel("MLP parameters removed (%)")
        ax.set_ylabel(col)
    np.atleast_1d(axes)[0].legend(fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def probe_layer_panels(grid: ProbeGrid, method: str, kind: str = "mlp", title: str | None = None) -> plt.Figure:
    """The seed's per-layer figure: for each task, probe accuracy (solid) and control (dotted) by layer,
    one colour per compression ratio of ``method``; and selectivity (task - control) beside it."""
    cells = [c for c in grid.cells if c[0] in ("none", method)]
    tasks = list(grid.cells[cells[0]])
    fig, axes = plt.subplots(2, len(tasks), figsize=(4.3 * len(tasks), 6.0), constrained_layout=True, sharex=True)
    axes = np.asarray(axes).reshape(2, len(tasks))
    colours = sns.color_palette("viridis", len(cells))
    for t, task in enumerate(tasks):
        for c, cell in enumerate(cells):
            res = grid.cells[cell][task]
            layers = np.arange(res.acc[kind]["task"].shape[0])
            label = "uncompressed" if cell[0] == "none" else f"{cell[1]:.0%} removed"
            mean, sd = res.mean(kind).numpy(), res.std(kind).numpy()
            axes[0, t].plot(layers, mean, color=colours[c], marker="o", markersize=3, label=label)
            axes[0, t].fill_between(layers, mean - sd, mean + sd, color=colours[c], alpha=0.15)
            axes[0, t].plot(layers, res.mean(kind, "control").numpy(), color=colours[c], ls=":", lw=1)
            sel = res.selectivity(kind).mean(1).numpy()
            axes[1, t].plot(layers, sel, color=colours[c], marker="o", markersize=3)
        axes[0, t].set_title(task, fontsize=10)
        axes[0, t].set_ylabel(f"{kind} probe accuracy (dotted: control)")
        axes[1, t].set_ylabel("selectivity (task - control)")
        axes[1, t].axhline(0, color="0.5", lw=0.8)
        axes[1, t].set_xlabel(
            f"layer l  ({res.hooks[0].replace('blocks.0', 'blocks.l') if res.hooks else 'layer'})", fontsize=8
        )
    axes[0, 0].legend(fontsize=7, frameon=False)
    fig.suptitle(title or f"{method}: probes per layer", fontsize=11)
    return fig


def probe_layer_means(grid: ProbeGrid) -> plt.Figure:
    """One panel per probing task: the probe's accuracy by layer (mean over seeds), a line per cell."""
    fig, axes = plt.subplots(1, len(probing.PROBE_TASKS), figsize=(13, 3.4), constrained_layout=True)
    for ax, t in zip(axes, probing.PROBE_TASKS):
        for cell, res in grid.cells.items():
            ax.plot(
                res[t].mean().numpy(),
                label="uncompressed" if cell[0] == "none" else f"{METHOD_LABELS[cell[0]]} {cell[1]:.0%}",
            )
        ax.set_title(t, fontsize=10)
        ax.set_xlabel("layer l  (blocks.l.hook_resid_post, last token)")
    axes[0].set_ylabel("MLP probe accuracy")
    axes[0].legend(fontsize=7, frameon=False)
    return fig
