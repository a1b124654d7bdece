"""Linear block replacement: swap a whole transformer block for one fitted affine map.

If a block is nearly linear on the states it meets (:mod:`analysis.geometry.linearity`), its
attention and MLP (3.5 M parameters in a SmolLM2 block) can be replaced by a map fitted by least
squares on calibration tokens:

- **full**: ``y = x W + b``, ``d^2 + d`` stored values;
- **rank r**: ``y = x + (x A) B + b``, the identity kept and the *update* ``y - x`` fitted by the best
  rank-``r`` map (reduced-rank regression), ``2 d r + d`` values.

:class:`BlockMap` counts exactly those values (at 32 bits, like the dense block it replaces), and
:func:`compression` divides the block's own parameter count by them; :func:`rank_for_ratio` gives
the largest rank that reaches a target ratio. :func:`replaced` installs maps with hooks on
``hook_resid_post``, so every evaluation (perplexity, KL) sees the replaced model while the base
weights stay untouched. The replaced block still runs underneath (its output is overwritten): this
measures quality, not wall-clock speed. Replacing several blocks at once (maps fitted on the clean
model) shows how the error accumulates when each map meets an upstream it was not fitted on.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Mapping

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from analysis import hooks
from analysis.geometry import GramStats, check_rank, factors, fit_map, reduced_rank


@dataclass(frozen=True)
class BlockMap:
    """A fitted replacement for block ``layer``: ``y = x W + b`` (full) or ``y = x + x A B + b`` (rank)."""

    layer: int
    bias: Tensor
    weight: Tensor | None = None
    """``[d, d]`` for a full map, else None."""
    a: Tensor | None = None
    """``[d, r]`` of a rank-``r`` update map."""
    b: Tensor | None = None
    """``[r, d]``."""
    ridge: float = 0.0

    @property
    def rank(self) -> int | None:
        return None if self.a is None else self.a.shape[1]

    @property
    def n_values(self) -> int:
        """Stored values: ``d^2 + d`` (full) or ``2 d r + d`` (rank ``r``)."""
        if self.weight is not None:
            return self.weight.numel() + self.bias.numel()
        return self.a.numel() + self.b.numel() + self.bias.numel()

    def __call__(self, x: Float[Tensor, "... d"]) -> Float[Tensor, "... d"]:
        xd, dev = x.double(), x.device
        bias = self.bias.to(dev, torch.float64)
        if self.weight is not None:
            out = xd @ self.weight.to(dev, torch.float64) + bias
        else:
            out = xd + (xd @ self.a.to(dev, torch.float64)) @ self.b.to(dev, torch.float64) + bias
        return out.to(x.dtype)


def fit_block(stats: GramStats, layer: int, rank: int | None = None, ridge: float | str = "auto") -> BlockMap:
    """Fit block ``layer``'s replacement from its ``(resid_pre, resid_post)`` statistics."""
    if rank is None:
        m = fit_map(stats, ridge)
        return BlockMap(layer, m.bias, weight=m.weight, ridge=m.ridge)
    d = stats.xx.shape[0] if stats.xx is not None else 0
    if stats.n == 0:
        raise ValueError("No calibration tokens were accumulated; pass a non-empty calibration set.")
    check_rank(rank, d)
    m = reduced_rank(stats.update_stats(), rank, ridge)
    a, b = factors(m, rank)
    return BlockMap(layer, m.bias, a=a, b=b, ridge=m.ridge)


def block_params(model: HookedTransformer, layer: int) -> int:
    """Parameters of block ``layer`` (attention, MLP and norms; grouped K/V counted as stored)."""
    return sum(p.numel() for n, p in model.blocks[layer].named_parameters())


def compression(model: HookedTransformer, m: BlockMap) -> float:
    """The block's parameters over the map's stored values."""
    return block_params(model, m.layer) / m.n_values


def rank_for_ratio(model: HookedTransformer, layer: int, ratio: float) -> int:
    """The largest rank whose map is at least ``ratio`` times smaller than block ``layer``."""
    d = model.cfg.d_model
    if ratio <= 0:
        raise ValueError(f"ratio must be positive, got {ratio}.")
    r = int((block_params(model, layer) / ratio - d) // (2 * d))
    if r < 1:
        raise ValueError(f"A {ratio}x smaller map than block {layer} leaves no rank (even rank 1 is larger).")
    return min(r, d)


@contextmanager
def replaced(model: HookedTransformer, maps: Mapping[int, BlockMap] | list[BlockMap]) -> Iterator[None]:
    """Within the block, each mapped block's output (``hook_resid_post``) is its map of ``hook_resid_pre``."""
    maps = {m.layer: m for m in maps} if isinstance(maps, list) else dict(maps)
    for l in maps:
        if not 0 <= l < model.cfg.n_layers:
            raise ValueError(f"Block {l} does not exist; the model has blocks 0..{model.cfg.n_layers - 1}.")
    store: dict[int, Tensor] = {}

    def pre(x, hook):
        store[hooks.layer_of(hook.name)] = x

    def post(y, hook):
        layer = hooks.layer_of(hook.name)
        return maps[layer](store.pop(layer))

    fwd = [(hooks.resid_pre(l), pre) for l in maps] + [(hooks.resid_post(l), post) for l in maps]
    with torch.inference_mode(), model.hooks(fwd_hooks=fwd):
        yield
