"""The causal test of a direction's importance: remove it from the residual stream and score the loss.

*Projecting out* an orthonormal ``k``-subspace ``U`` (``[d, k]``) at a layer replaces the
component of every residual state along ``U`` by its mean over calibration tokens (mean
ablation, so the stream keeps its typical offset)::

    x  ->  x - (x - mu) U U^T

``k = 0`` is the identity; ``k = d`` (a full basis) replaces every state by ``mu``, which removes
all token-specific signal at that layer. *Keeping* the top ``r`` directions is the compression
view of the same operation: ``x -> mu + (x - mu) U_r U_r^T``, the stream reduced to ``r``
numbers per token. Whether the removed directions carried variance or carried prediction is the
question of seed 003 ("variance is not importance").
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from analysis import hooks


def check_basis(basis: Float[Tensor, "d k"], d: int) -> None:
    """ValueError unless ``basis`` is ``[d, k]`` with ``0 <= k <= d``."""
    if basis.ndim != 2 or basis.shape[0] != d:
        raise ValueError(f"basis must be [d_model={d}, k], got shape {tuple(basis.shape)}.")
    if basis.shape[1] > d:
        raise ValueError(f"Cannot remove {basis.shape[1]} directions from a {d}-dimensional stream (k <= d).")


def project_out(
    x: Float[Tensor, "... d"], basis: Float[Tensor, "d k"], mean: Float[Tensor, " d"] | None = None
) -> Float[Tensor, "... d"]:
    """``x - (x - mean) U U^T`` for orthonormal columns ``U = basis`` (``mean`` defaults to 0)."""
    check_basis(basis, x.shape[-1])
    if basis.shape[1] == 0:
        return x
    u = basis.to(x.dtype)
    centred = x if mean is None else x - mean.to(x.dtype)
    return x - (centred @ u) @ u.T


def keep_only(
    x: Float[Tensor, "... d"], basis: Float[Tensor, "d r"], mean: Float[Tensor, " d"] | None = None
) -> Float[Tensor, "... d"]:
    """``mean + (x - mean) U U^T``: only the component of ``x`` in the span of ``U`` is kept."""
    d = x.shape[-1]
    check_basis(basis, d)
    if basis.shape[1] == 0:
        raise ValueError(f"rank must be in [1, {d}], got 0 (keeping no direction leaves only the mean).")
    u = basis.to(x.dtype)
    m = torch.zeros(d, dtype=x.dtype) if mean is None else mean.to(x.dtype)
    return m + ((x - m) @ u) @ u.T


@contextmanager
def ablated(
    model: HookedTransformer,
    layer: int,
    basis: Float[Tensor, "d k"],
    mean: Float[Tensor, " d"] | None = None,
    keep: bool = False,
) -> Iterator[None]:
    """Within the block, ``blocks.{layer}.hook_resid_pre`` has ``basis`` projected out (``keep=True``: kept only)."""
    check_basis(basis, model.cfg.d_model)
    if not 0 <= layer < model.cfg.n_layers:
        raise ValueError(f"layer must be in [0, {model.cfg.n_layers - 1}], got {layer}.")
    fn = keep_only if keep else project_out
    basis = basis.to(model.cfg.device)
    mean = None if mean is None else mean.to(model.cfg.device)

    def hook(x, hook):
        return fn(x, basis, mean)

    with model.hooks(fwd_hooks=[(hooks.resid_pre(layer), hook)]):
        yield
