"""The causal tracing chapter's figures: ROME's heatmaps and AIE curves, and exact against attribution.

ROME (Meng et al. 2022) draws one trace as three heatmaps, tokens by layers, coloured by the
target's probability with one state restored (Fig. 1), and the average indirect effect as curves
per token role over layers (Fig. 2). Axes are labelled with TransformerLens hook names.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from analysis.hooks import hook_kind
from analysis.tracing import ROLES

TRACE_CMAPS = {
    "hook_resid_pre": "Purples",
    "hook_resid_post": "Purples",
    "hook_mlp_out": "Greens",
    "hook_attn_out": "Reds",
}
"""ROME's colours: purple for the residual stream, green for MLP, red for attention."""


def trace_heatmap(result, kind: str, ax: plt.Axes | None = None, title: str | None = None) -> plt.Axes:
    """ROME-style heatmap of one kind of a :class:`analysis.tracing.TraceResult`.

    Rows are tokens (subject starred), columns layers; colour is the restored probability of
    the target, on a scale from the corrupted probability up.
    """
    hook = hook_kind(kind)
    grid = np.asarray(result[hook], dtype=float).T  # [pos, layer]
    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 0.28 * grid.shape[0] + 1.2))
    im = ax.imshow(grid, cmap=TRACE_CMAPS[hook], aspect="auto", vmin=result.corrupted_prob, interpolation="nearest")
    labels = result.labels()
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel(
        f"layer l  (blocks.l.{hook})"
        + (f", window {result.window}" if hook in ("hook_mlp_out", "hook_attn_out") else "")
    )
    ax.set_title(title or f"restore {hook}", fontsize=10)
    cbar = plt.colorbar(im, ax=ax, fraction=0.05, pad=0.02)
    cbar.set_label(f"p({result.target.strip()})", fontsize=8)
    ax.grid(False)
    return ax


def trace_heatmaps(result, kinds: Sequence[str] = ("resid", "mlp", "attn")) -> plt.Figure:
    """The three ROME panels (residual, MLP, attention) of one trace side by side."""
    fig, axes = plt.subplots(
        1, len(kinds), figsize=(4.1 * len(kinds), 0.28 * len(result.tokens) + 1.6), constrained_layout=True
    )
    for ax, kind in zip(np.atleast_1d(axes), kinds):
        trace_heatmap(result, kind, ax=ax)
    fig.suptitle(
        f"{result.prompt!r} -> {result.target!r}: p_clean={result.clean_prob:.3f}, "
        f"p_corrupt={result.corrupted_prob:.3f} ({result.corruption}, "
        f"{result.n_samples} sample{'s' * (result.n_samples > 1)})",
        fontsize=10,
    )
    return fig


def aie_curves(
    aie, kind: str, roles: Sequence[str] | None = None, ax: plt.Axes | None = None, title: str | None = None
) -> plt.Axes:
    """Average indirect effect per layer, one line per token role, with confidence bands."""
    hook = hook_kind(kind)
    mean, half, counts = aie.mean(hook).numpy(), aie.ci(hook).numpy(), aie.counts(hook).tolist()
    if ax is None:
        _, ax = plt.subplots(figsize=(5.6, 3.4))
    layers = np.arange(mean.shape[1])
    drawn: list[tuple[int, list[str]]] = []  # roles that are the same position in every prompt share a line
    for i, role in enumerate(ROLES):
        if (roles is not None and role not in roles) or counts[i] == 0:
            continue
        same = [d for d in drawn if np.allclose(mean[d[0]], mean[i], equal_nan=True)]
        if same:
            same[0][1].append(role)
        else:
            drawn.append((i, [role]))
    for i, names in drawn:
        (line,) = ax.plot(layers, mean[i], label=f"{' = '.join(names)} (n={counts[i]})", lw=1.6)
        ax.fill_between(layers, mean[i] - half[i], mean[i] + half[i], color=line.get_color(), alpha=0.2)
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xlabel(f"layer l  (blocks.l.{hook})")
    ax.set_ylabel("average indirect effect")
    ax.set_title(title or hook, fontsize=10)
    ax.legend(fontsize=7, frameon=False)
    return ax


def aie_panels(aie, kinds: Sequence[str] = ("resid", "mlp", "attn"), title: str | None = None) -> plt.Figure:
    """ROME's Fig. 2 layout: AIE curves for the residual stream, MLP and attention."""
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.0 * len(kinds), 3.5), constrained_layout=True, sharey=False)
    for ax, kind in zip(np.atleast_1d(axes), kinds):
        aie_curves(aie, kind, ax=ax)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def method_scatter(x, y, xlabel: str, ylabel: str, title: str | None = None, ax: plt.Axes | None = None) -> plt.Axes:
    """Scatter of paired indirect effects (e.g. exact vs attribution), with the diagonal."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if ax is None:
        _, ax = plt.subplots(figsize=(4.0, 4.0))
    ax.scatter(x, y, s=4, alpha=0.35, lw=0)
    lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    ax.plot([lo, hi], [lo, hi], color="0.4", lw=0.8, ls="--")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    return ax
