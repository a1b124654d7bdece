"""Plots: the few figure shapes this book uses again and again.

Most figures here are a quantity *per layer* (a curve over depth) or a heatmap over layers and
heads or settings; a figure only one chapter draws lives with its study (ROME's causal-tracing
figures: :mod:`analysis.studies.tracing.plots`). The helpers below draw those shapes with
one style, label axes with TransformerLens hook names, and return the matplotlib ``Axes`` so
a chapter can add to them.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

PALETTE = "colorblind"


def setup_style() -> None:
    """The book's figure style (call once per chapter)."""
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE)
    plt.rcParams.update({"figure.dpi": 110, "savefig.bbox": "tight", "axes.titlesize": 11})


def layer_curves(
    curves: dict[str, Sequence[float]],
    ylabel: str,
    title: str | None = None,
    hook: str = "blocks.{l}.hook_resid_post",
    ax: plt.Axes | None = None,
) -> plt.Axes:
    """One line per entry of ``curves`` (each ``[n_layers]``) against layer index."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 3.6))
    for label, ys in curves.items():
        ys = np.asarray(ys, dtype=float)
        ax.plot(np.arange(len(ys)), ys, marker="o", markersize=3, label=label)
    ax.set_xlabel(f"layer l  ({hook})")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if len(curves) > 1:
        ax.legend(frameon=False)
    return ax


def score_profiles(scores, threshold: float = 0.5) -> plt.Figure:
    """z-scored per-layer scores of several :class:`analysis.scores.ComponentScores`, one panel
    per kind, with the seed's medium band (``|z| <= threshold``) shaded."""
    kinds = scores[0].kinds
    fig, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 3.4), sharey=True)
    for k, (ax, kind) in enumerate(zip(np.atleast_1d(axes), kinds)):
        layer_curves(
            {s.name: s.zscores()[:, k].numpy() for s in scores},
            "z-score",
            title=f"{kind}: redundancy scores",
            hook=f"blocks.{{l}}.{kind}",
            ax=ax,
        )
        ax.axhspan(-threshold, threshold, color="0.9", zorder=0, label="medium band")
    return fig
