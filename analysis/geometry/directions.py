"""Variance directions and predictive directions of the residual stream, and how much they overlap.

A *variance direction* is a principal component of the residual stream (or of a block's update):
an eigenvector of its covariance. A *predictive direction* is one along which the loss is
sensitive. We estimate those two ways:

- the top eigenvectors of the **loss-gradient covariance** ``E[g g^T]``, ``g = dL/dx`` per token
  for the residual ``x`` at a layer (the directions a small perturbation would hurt most; the
  empirical Fisher of the residual);
- the **readout basis**: the top left singular vectors of ``diag(w_final) W_U``, the directions the
  final norm and unembedding read most strongly (what the logit lens decodes).

Before any PCA we look for **rogue / massive dimensions** (Timkey & van Schijndel 2021; Sun et al.
2024, "Massive Activations in Large Language Models"): a few coordinates whose magnitude is
hundreds of times the typical one and which can hold most of the variance while doing little.
:func:`rogue_dimensions` reports each dimension's peak ``max |x|`` over the median ``|x|`` of the
whole layer, and its share of the variance.

Overlap of two ``k``-dimensional subspaces is read two ways: the cosines of their **principal
angles** (:func:`principal_angles`; two random ``k``-subspaces of ``R^d`` have mean squared
cosine about ``k / d``), and the **canonical correlations** (CCA) between the data projected on each
(:func:`cca`), the measure we use to read the seed's "largely uncorrelated".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from analysis import hooks
from analysis.forward import windows
from analysis.geometry.linearity import GramStats, check_rank, top_eigvecs
from analysis.progress import progress

ROGUE_RATIO = 100.0
"""A dimension is rogue when its peak ``|x|`` exceeds this many times the layer's median ``|x|``."""


@dataclass(frozen=True)
class Rogue:
    """Per-dimension magnitude statistics of one layer's states."""

    ratio: Float[Tensor, " d"]
    """Peak ``|x|`` of each dimension over the median ``|x|`` of all entries."""
    variance_share: Float[Tensor, " d"]
    """Each dimension's share of the total variance."""

    def rogue(self, threshold: float = ROGUE_RATIO) -> Int[Tensor, " k"]:
        """Indices of the rogue dimensions, largest ratio first."""
        idx = torch.nonzero(self.ratio > threshold).flatten()
        return idx[torch.argsort(self.ratio[idx], descending=True)]


def rogue_dimensions(x: Float[Tensor, "n d"]) -> Rogue:
    """Peak-over-median magnitude and variance share of every dimension of states ``x``."""
    x = x.reshape(-1, x.shape[-1]).float()
    if x.shape[0] < 2:
        raise ValueError(f"Need at least 2 tokens to measure rogue dimensions, got {x.shape[0]}.")
    med = x.abs().flatten().median().clamp(min=1e-12)
    var = x.var(0)
    return Rogue(x.abs().amax(0) / med, var / var.sum())


@dataclass(frozen=True)
class PCA:
    """Principal components of states: ``components`` ``[d, d]`` (columns, largest variance first)."""

    mean: Float[Tensor, " d"]
    components: Float[Tensor, "d d"]
    variances: Float[Tensor, " d"]

    def top(self, k: int) -> Float[Tensor, "d k"]:
        """The top ``k`` directions (orthonormal columns)."""
        check_rank(k, self.components.shape[0])
        return self.components[:, :k]

    def retained(self, k: int) -> float:
        """Share of the total variance in the top ``k`` components."""
        check_rank(k, self.components.shape[0])
        return float(self.variances[:k].sum() / self.variances.sum())


def pca_of_cov(mean: Tensor, cov: Float[Tensor, "d d"]) -> PCA:
    """PCA from a mean and covariance (e.g. :meth:`GramStats.moments`)."""
    vals, vecs = torch.linalg.eigh(cov.double())
    order = torch.argsort(vals, descending=True)
    return PCA(mean.double(), vecs[:, order], vals[order].clamp(min=0))


def pca(stats: GramStats, which: str = "x") -> PCA:
    """PCA of the accumulated ``x`` (``which="x"``) or ``y`` (``"y"``) of a :class:`GramStats`."""
    mx, my, cxx, _, cyy = stats.moments()
    if which not in ("x", "y"):
        raise ValueError(f"which must be 'x' or 'y', got {which!r}.")
    return pca_of_cov(mx, cxx) if which == "x" else pca_of_cov(my, cyy)


def gradient_covariance(
    model: HookedTransformer, tokens: Int[Tensor, " n"], layers: list[int], context: int = 256, batch_size: int = 4
) -> dict[int, Float[Tensor, "d d"]]:
    """``E[g g^T]`` per layer for ``g`` the gradient of the summed next-token loss with respect to
    ``blocks.{l}.hook_resid_pre`` at each token; ``{layer: [d_model, d_model]}`` (float64)."""
    wins = windows(tokens, context)
    d = model.cfg.d_model
    acc = {l: torch.zeros(d, d, dtype=torch.float64) for l in layers}

    def grab(grad, hook):
        g = grad.detach().reshape(-1, d).float().cpu()
        acc[hooks.layer_of(hook.name)] += (g.T @ g).double()

    bwd = [(hooks.resid_pre(l), grab) for l in layers]
    was = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)  # only the stream needs gradients; restored below
    try:
        count = _accumulate_grads(model, wins, bwd, batch_size)
    finally:
        for p, w in zip(model.parameters(), was):
            p.requires_grad_(w)
    return {l: a / count for l, a in acc.items()}


def _accumulate_grads(model, wins: Tensor, bwd: list, batch_size: int) -> int:
    count = 0
    for i in progress(range(0, len(wins), batch_size), desc="gradient covariance"):
        batch = wins[i : i + batch_size].to(model.cfg.device)
        with model.hooks(bwd_hooks=bwd), torch.enable_grad():
            embed = model.embed(batch).detach().requires_grad_(True)  # a leaf, so backward reaches the hooks
            resid = embed + (model.pos_embed(batch) if model.cfg.positional_embedding_type == "standard" else 0)
            logits = model(resid, start_at_layer=0)
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1), reduction="sum"
            )
            loss.backward()
        count += batch.numel()
    return count


def readout_basis(model: HookedTransformer) -> tuple[Float[Tensor, "d d"], Float[Tensor, " d"]]:
    """Left singular vectors of ``diag(w_final) W_U`` ``[d_model, d_model]`` (columns) and singular values."""
    w_u = model.unembed.W_U.detach().double()
    norm_w = getattr(model.ln_final, "w", None) if model.cfg.normalization_type is not None else None
    if norm_w is not None:
        w_u = norm_w.detach().double()[:, None] * w_u
    u, s, _ = torch.linalg.svd(w_u, full_matrices=False)
    return u, s


def top_directions(matrix: Float[Tensor, "d d"], k: int) -> Float[Tensor, "d k"]:
    """The top ``k`` eigenvectors of a symmetric matrix (e.g. a gradient covariance)."""
    check_rank(k, matrix.shape[0])
    return top_eigvecs(matrix.double(), k)


def orthonormal(basis: Float[Tensor, "d k"]) -> Float[Tensor, "d k"]:
    """An orthonormal basis of the column span of ``basis`` (QR)."""
    q, _ = torch.linalg.qr(basis.double())
    return q


def principal_angles(a: Float[Tensor, "d k"], b: Float[Tensor, "d m"]) -> Float[Tensor, " r"]:
    """Cosines of the principal angles between the column spans of ``a`` and ``b``, largest first."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"Subspaces live in different spaces: {a.shape[0]} vs {b.shape[0]} dimensions.")
    s = torch.linalg.svdvals(orthonormal(a).T @ orthonormal(b))
    return s.clamp(max=1.0)


def random_subspace(d: int, k: int, seed: int = 0) -> Float[Tensor, "d k"]:
    """A uniformly random ``k``-dimensional subspace of ``R^d`` (orthonormal columns)."""
    check_rank(k, d)
    g = torch.Generator().manual_seed(seed)
    return orthonormal(torch.randn(d, k, generator=g, dtype=torch.float64))


def cca(x: Float[Tensor, "n p"], y: Float[Tensor, "n q"], eps: float = 1e-9) -> Float[Tensor, " r"]:
    """Canonical correlations between two sets of variables on the same ``n`` samples, largest first.

    Whitens each centred block with its own covariance (eigenvalues below ``eps`` times the largest
    are dropped) and takes the singular values of the cross-covariance of the whitened blocks.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CCA needs paired samples: {x.shape[0]} vs {y.shape[0]} rows.")
    if x.shape[0] < 3:
        raise ValueError(f"CCA needs at least 3 samples, got {x.shape[0]}.")

    def whiten(z):
        z = z.double() - z.double().mean(0)
        vals, vecs = torch.linalg.eigh(z.T @ z)
        keep = vals > eps * vals.max().clamp(min=1e-300)
        return z @ (vecs[:, keep] / vals[keep].sqrt())

    return torch.linalg.svdvals(whiten(x).T @ whiten(y)).clamp(max=1.0)


def window_cca(
    x: Float[Tensor, "n d"], a: Float[Tensor, "d k"], b: Float[Tensor, "d m"], per_window: int, skip_first: int = 1
) -> Float[Tensor, " windows"]:
    """The mean canonical correlation (:func:`cca`) between states ``x`` projected on ``a`` and on
    ``b``, one value per window: ``x`` holds whole windows of ``per_window`` rows in order (as
    :func:`analysis.geometry.collect` returns them); the first ``skip_first`` positions of each
    window (the attention sink, whose massive activations would dominate a window's covariance)
    are left out. One value per window makes windows the units a verdict resamples."""
    if x.shape[0] % per_window:
        raise ValueError(f"{x.shape[0]} rows are not whole windows of {per_window}.")
    if not 0 <= skip_first <= per_window - 3:
        raise ValueError(f"skip_first must leave at least 3 positions of {per_window}, got {skip_first}.")
    w = x.double().reshape(-1, per_window, x.shape[-1])[:, skip_first:]
    pa, pb = w @ a.double(), w @ b.double()
    return torch.stack([cca(u, v).mean() for u, v in zip(pa, pb)])
