"""The linear view of a TransformerLens weight, and the head slices inside it.

Every compression operation works on a weight as the ``[d_in, d_out]`` matrix ``W`` such that the
layer computes ``x @ W``. TransformerLens stores most weights that way already (``W_in``
``[d_model, d_mlp]``, ``W_out`` ``[d_mlp, d_model]``), but keeps attention per head: ``W_Q``,
``W_K`` and ``W_V`` are ``[n_heads, d_model, d_head]`` and ``W_O`` is ``[n_heads, d_head, d_model]``.
Their linear views concatenate the heads, ``[d_model, n_heads * d_head]`` and
``[n_heads * d_head, d_model]``, so head ``h`` owns columns (Q/K/V) or rows (O)
``h * d_head : (h + 1) * d_head``. "Per channel" always means per output column of this view.
"""

from __future__ import annotations

from jaxtyping import Float, Shaped
from torch import Tensor


def weight_kind(weight: str) -> str:
    """``"W_Q"`` for ``"blocks.0.attn.W_Q"`` (and for grouped-query ``"blocks.0.attn._W_K"``, ``"W_K"``)."""
    return weight.rsplit(".", 1)[-1].lstrip("_")


def to_linear(
    weight: str, w: Float[Tensor, "d_in d_out"] | Float[Tensor, "head d_a d_b"]
) -> Float[Tensor, "d_in d_out"]:
    """The ``[d_in, d_out]`` view of the TransformerLens weight ``weight`` (a reshape, no copy where possible)."""
    kind = weight_kind(weight)
    if w.ndim == 2:
        return w
    if kind in ("W_Q", "W_K", "W_V"):  # [head, d_model, d_head]
        return w.permute(1, 0, 2).reshape(w.shape[1], -1)
    if kind == "W_O":  # [head, d_head, d_model]
        return w.reshape(-1, w.shape[-1])
    raise ValueError(f"No linear view for {weight!r} of shape {tuple(w.shape)}.")


def from_linear(weight: str, lin: Float[Tensor, "d_in d_out"], like: Float[Tensor, "..."]) -> Float[Tensor, "..."]:
    """Inverse of :func:`to_linear`: ``lin`` reshaped to ``like``'s TransformerLens shape."""
    if like.ndim == 2:
        return lin.reshape(like.shape)
    if weight_kind(weight) in ("W_Q", "W_K", "W_V"):
        h, d, e = like.shape
        return lin.reshape(d, h, e).permute(1, 0, 2).contiguous()
    return lin.reshape(like.shape)


def head_slices(w: Shaped[Tensor, "d_in d_out"], kind: str, d_head: int) -> Shaped[Tensor, "unit slice"]:
    """One row per head slice of a linear view: ``W_O``'s row blocks or ``W_Q/K/V``'s column blocks.

    Row ``h`` holds head ``h``'s ``d_head`` rows of ``W_O`` (a view), or its ``d_head`` columns of
    ``W_Q``, ``W_K`` or ``W_V`` (a copy), flattened to ``d_in * d_head`` or ``d_head * d_out`` entries.
    Works on any dtype (weights, scores, boolean masks).
    """
    if kind == "W_O":
        return w.reshape(-1, d_head * w.shape[1])
    return w.reshape(w.shape[0], -1, d_head).permute(1, 0, 2).reshape(-1, w.shape[0] * d_head)


def from_head_slices(
    u: Shaped[Tensor, "unit slice"], kind: str, d_head: int, like: Shaped[Tensor, "d_in d_out"]
) -> Shaped[Tensor, "d_in d_out"]:
    """Inverse of :func:`head_slices`: the linear view of shape ``like.shape``."""
    if kind == "W_O":
        return u.reshape(like.shape)
    return u.reshape(-1, like.shape[0], d_head).permute(1, 0, 2).reshape(like.shape)
