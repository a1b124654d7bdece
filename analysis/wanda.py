"""Wanda importance per attention head: weight magnitude times the size of the input it multiplies.

Wanda (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language Models")
scores a weight ``W_ij`` of ``y = x @ W`` by ``|W_ij| · ‖X_i‖₂``, where ``X_i`` is input
feature ``i`` over a set of calibration tokens. A large weight on a feature that is always near
zero matters little; a small weight on a feature with huge activations (LLMs have a few such
outlier features) matters a lot. Magnitude pruning sees only the first factor.

A head's score sums this over every weight that belongs to it: its columns of ``W_Q``, its
rows of ``W_O`` (whose input is the head's own ``hook_z``), and the columns of ``W_K`` and
``W_V`` of its key-value group. Under grouped-query attention one K/V slice serves ``g`` query
heads, so each of them is credited ``1/g`` of that slice's score and the scores of all heads
still add up to the Wanda score of the whole attention block.

The inputs are read where :func:`analysis.hooks.input_hook` says: ``ln1.hook_normalized``
(with the norm's own weight applied, :func:`analysis.hooks.norm_output`) for Q, K and V, and
``attn.hook_z`` for ``W_O``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from analysis import hooks
from analysis.components import ATTN_WEIGHTS, parameter_name
from analysis.forward import stream, windows


@torch.no_grad()
def input_norms(
    model: HookedTransformer,
    tokens: Int[Tensor, " n"],
    context: int = 128,
    batch_size: int = 8,
    weights: Sequence[str] | None = None,
) -> dict[str, Float[Tensor, " d_in"]]:
    """``‖X_i‖₂`` of every input feature of ``weights`` over calibration tokens, keyed by
    :func:`analysis.hooks.input_hook` of each weight.

    ``weights``: TransformerLens weight names (``"blocks.0.mlp.W_in"``); by default every layer's
    attention weights (keys ``ln1.hook_normalized`` and ``attn.hook_z``). ``ln*.hook_normalized``
    sits *before* the norm's weight (and bias), so the norm's affine map is applied here: ``X`` is
    what ``W_Q``, ``W_K``, ``W_V`` (and ``W_in``, ``W_gate``) really multiply. ``attn.hook_z`` is
    flattened to ``[n_heads * d_head]`` (heads concatenated), the input of ``W_O``'s linear view.
    """
    if weights is None:
        weights = [f"blocks.{l}.attn.{w}" for l in range(model.cfg.n_layers) for w in ("W_Q", "W_O")]
    names = list(dict.fromkeys(hooks.input_hook(w, model) for w in weights))
    seqs = windows(tokens, context)
    sq: dict[str, Tensor] = {}

    for batch in stream(model, seqs, names, batch_size, "Wanda norms"):
        for name, act in batch.acts.items():
            x = act.flatten(-2) if act.ndim == 4 else act  # hook_z: heads concatenated
            x = hooks.norm_output(model, name, x)
            sq[name] = sq.get(name, 0) + x.double().pow(2).flatten(0, -2).sum(0)
    return {k: v.sqrt().float().cpu() for k, v in sq.items()}


def head_sums(model: HookedTransformer, score_of) -> Float[Tensor, "layer head"]:
    """Per head: the sum of ``score_of(name, weight) -> per-weight score`` (``weight`` the parameter
    ``blocks.{l}.attn.{W}`` as stored, ``[head or kv group, ...]``) over its W_Q columns, W_O rows,
    and W_K/W_V columns of its key-value group divided by the group size, so every weight of the
    block is counted once."""
    cfg = model.cfg
    H = cfg.n_heads
    group = H // (cfg.n_key_value_heads or H)
    params = dict(model.named_parameters())
    out = torch.zeros(cfg.n_layers, H)
    for l in range(cfg.n_layers):
        for w in ATTN_WEIGHTS:
            name = f"blocks.{l}.attn.{w}"
            score = score_of(name, params[parameter_name(model, name, params)]).detach().float().cpu()
            per_head = score.flatten(1).sum(1)
            if w in ("W_K", "W_V") and per_head.numel() != H:  # one K/V slice per group: each of its heads gets 1/g
                per_head = per_head.repeat_interleave(group) / group
            out[l] += per_head
    return out


def wanda_head_scores(model: HookedTransformer, norms: dict[str, Tensor]) -> Float[Tensor, "layer head"]:
    """Per head: ``Σ |W_ij| · ‖X_i‖₂`` over its W_Q columns, W_O rows, and W_K/W_V columns of
    its key-value group divided by the group size (Sun et al. 2023, aggregated per head)."""
    H = model.cfg.n_heads

    def score(name: str, weight: Tensor) -> Tensor:
        x = norms[hooks.input_hook(name, model)]
        weight = weight.detach().float().cpu().abs()
        if name.endswith("W_O"):  # [head, d_head, d_model]; input: hook_z, heads concatenated
            return weight * x.view(H, -1, 1)
        return weight * x.view(1, -1, 1)  # [head or kv group, d_model, d_head]; input: the normalised residual

    return head_sums(model, score)


def magnitude_head_scores(model: HookedTransformer) -> Float[Tensor, "layer head"]:
    """Per head: ``Σ |W_ij|`` over the same weights as :func:`wanda_head_scores` (magnitude
    pruning's score: Wanda without the input norms)."""
    return head_sums(model, lambda name, weight: weight.detach().float().abs())


def gradient_head_scores(
    model: HookedTransformer, tokens: Int[Tensor, " n"], context: int = 128, batch_size: int = 4
) -> Float[Tensor, "layer head"]:
    """Per head: ``Σ |W_ij · ∂L/∂W_ij|`` over the same weights as :func:`wanda_head_scores`, ``L``
    the mean next-token loss on ``tokens`` cut into ``context``-token windows (the first-order
    Taylor estimate of the loss change when a weight is removed; Molchanov et al. 2019)."""
    seqs = windows(tokens, context).to(model.cfg.device)
    params = dict(model.named_parameters())
    names = [
        parameter_name(model, f"blocks.{l}.attn.{w}", params) for l in range(model.cfg.n_layers) for w in ATTN_WEIGHTS
    ]
    grads = {n: torch.zeros_like(params[n], dtype=torch.float32) for n in names}
    was = {n: params[n].requires_grad for n in names}
    try:
        for n in names:
            params[n].requires_grad_(True)
        for i in range(0, len(seqs), batch_size):
            batch = seqs[i : i + batch_size]
            with torch.enable_grad():
                loss = model(batch, return_type="loss") * len(batch) / len(seqs)
                got = torch.autograd.grad(loss, [params[n] for n in names])
            for n, g in zip(names, got):
                grads[n] += g.float()
    finally:
        for n in names:
            params[n].requires_grad_(was[n])
    return head_sums(
        model, lambda name, weight: (weight.detach().float() * grads[parameter_name(model, name, params)]).abs()
    )
