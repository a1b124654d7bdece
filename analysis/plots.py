"""Plots: the few figure shapes this book uses again and again.

Most figures here are a quantity *per layer* (a curve over depth) or *per layer and position*
(a heatmap, as in ROME's causal-tracing figures). The helpers below draw those shapes with
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


# --- causal tracing ---

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
    from analysis.hooks import hook_kind

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
    from analysis.hooks import hook_kind
    from analysis.tracing import ROLES

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


# --- attention heads (capability density) ---


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


# --- factorization (seed 002) ---


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


def probe_layer_panels(grid, method: str, kind: str = "mlp", title: str | None = None) -> plt.Figure:
    """The seed's per-layer figure: for each task, probe accuracy (solid) and control (dotted) by layer,
    one colour per compression ratio of ``method``; and selectivity (task - control) beside it."""
    cells = [c for c in grid if c[0] in ("none", method)]
    tasks = list(grid[cells[0]])
    fig, axes = plt.subplots(2, len(tasks), figsize=(4.3 * len(tasks), 6.0), constrained_layout=True, sharex=True)
    axes = np.asarray(axes).reshape(2, len(tasks))
    colours = sns.color_palette("viridis", len(cells))
    for t, task in enumerate(tasks):
        for c, cell in enumerate(cells):
            res = grid[cell][task]
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


def direction_removal(frame, value: str = "Δnll") -> plt.Figure:
    """Loss increase against directions removed at each ablation layer, a line per kind of direction
    (``frame``: :func:`analysis.studies.variance.ablation` rows with ``layer``, ``kind``, ``k``)."""
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
    """Perplexity against stored bits per weight for each quantization scheme."""
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


def exit_panels(exits: dict, threshold: float) -> plt.Figure:
    """Early exit: exit-layer histogram at ``threshold``, easy share against threshold, and KL per layer."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.3))
    lenses = [k for k in exits if k != "curve"]
    for lens in lenses:
        layers = exits[lens]["exit layers"]
        axes[0].hist(layers, bins=np.arange(layers.max() + 2) - 0.5, alpha=0.5, label=lens)
        g = exits["curve"][exits["curve"]["lens"] == lens]
        axes[1].plot(g["threshold"], g["easy share"], marker="o", label=f"{lens}: easy share")
        axes[1].plot(g["threshold"], g["compute saved"], ls=":", label=f"{lens}: compute saved")
        axes[2].plot(exits[lens]["kl"], marker=".", label=lens)
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
