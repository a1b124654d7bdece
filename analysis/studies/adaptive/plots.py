"""The AdaptiveCompress chapter's own figure: SAE training curves, one panel per layer.

The book's style (:func:`analysis.plots.setup_style`) is set once per chapter by ``book.start``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns


def training_curves(curves, value: str = "mse_loss", hue: str = "sae", col: str = "layer") -> plt.Figure:
    """One panel per ``col`` of ``value`` against training step, a line per ``hue`` (band: over seeds)."""
    cols = sorted(curves[col].unique())
    fig, axes = plt.subplots(1, len(cols), figsize=(4.2 * len(cols), 3.2), squeeze=False)
    for ax, c in zip(axes[0], cols):
        sns.lineplot(data=curves[curves[col] == c], x="step", y=value, hue=hue, ax=ax, errorbar=("pi", 100))
        ax.set_yscale("symlog")
        ax.set_title(f"{col} {c}", fontsize=9)
        if ax is not axes[0, 0] and ax.get_legend() is not None:
            ax.get_legend().remove()
    if axes[0, 0].get_legend() is not None:
        axes[0, 0].legend(fontsize=6, frameon=False)
    fig.tight_layout()
    return fig
