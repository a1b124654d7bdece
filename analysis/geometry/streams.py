"""Residual streams of a model on a token stream, visited batch by batch and never held whole.

Every geometry measurement reads the same thing: the residual stream entering and leaving each
block (``blocks.{l}.hook_resid_pre`` / ``hook_resid_post``) on disjoint windows of a 1-D token
stream. :func:`visit_blocks` runs the model once per batch of windows and hands each block's
``(x, y)`` pair to a visitor; with ``replace`` it substitutes a map's output for chosen blocks, so
that later blocks see the upstream those replacements produce (while ``y`` is still the true
block's output on that upstream). :func:`block_stats` and :func:`heldout_r2` are the two visitors
the linearity study needs.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from analysis import hooks
from analysis.forward import stream, windows
from analysis.geometry.linearity import GramStats, LinearMap
from analysis.progress import progress

Visitor = Callable[[int, Tensor, Tensor], None]
"""``visit(layer, x, y)`` with ``x``/``y`` ``[tokens, d_model]``: the block's input and true output."""


@torch.inference_mode()
def visit_blocks(
    model: HookedTransformer,
    tokens: Int[Tensor, " n"],
    visit: Visitor,
    context: int = 256,
    batch_size: int = 8,
    replace: Mapping[int, Callable[[Tensor], Tensor]] | None = None,
    layers: range | list[int] | None = None,
    desc: str = "blocks",
) -> None:
    """Run ``model`` over ``tokens`` and call ``visit(l, x, y)`` for every block ``l`` in ``layers``.

    ``replace[l]`` (a map ``x -> y``) replaces block ``l``'s output for everything downstream.
    """
    replace = dict(replace or {})
    layers = list(range(model.cfg.n_layers) if layers is None else layers)
    wins = windows(tokens, context)
    store: dict[int, Tensor] = {}

    def pre(x, hook):
        store[hooks.layer_of(hook.name)] = x

    def post(y, hook):
        layer = hooks.layer_of(hook.name)
        x = store.pop(layer)
        if layer in layers:
            visit(layer, x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1]))
        if layer in replace:
            return replace[layer](x)
        return y

    need = sorted(set(layers) | set(replace))
    fwd = [(hooks.resid_pre(l), pre) for l in need] + [(hooks.resid_post(l), post) for l in need]
    last = max(need) + 1
    for i in progress(range(0, len(wins), batch_size), desc=desc):
        batch = wins[i : i + batch_size].to(model.cfg.device)
        with model.hooks(fwd_hooks=fwd):
            model(batch, stop_at_layer=last)


class _Chain:
    """Streamed moments of the residual states ``h_0 .. h_L`` (``h_0`` entering block 0, ``h_{l+1}``
    leaving block ``l``): one Gram per state, one cross product per block, one per state to ``h_L``.
    Consecutive blocks share states, so this is about half the work of separate pairs."""

    def __init__(self, to_final: bool):
        self.to_final, self.n = to_final, 0
        self.shift: list[Tensor] = []
        self.s: list[Tensor] = []
        self.gram: list[Tensor] = []
        self.cross: list[Tensor] = []
        self.final: list[Tensor] = []

    def add(self, states: list[Tensor]) -> None:
        if not self.shift:
            self.shift = [h.double().mean(0) for h in states]
            zeros = [torch.zeros_like(sh) for sh in self.shift]
            self.s = zeros
            self.gram = [torch.zeros(len(sh), len(sh), dtype=torch.float64) for sh in self.shift]
            self.cross = [torch.zeros_like(g) for g in self.gram[1:]]
            self.final = [torch.zeros_like(g) for g in self.gram[1:]] if self.to_final else []
        hs = [(h.float() - sh.float()).cpu() for h, sh in zip(states, self.shift)]
        self.n += hs[0].shape[0]
        for i, h in enumerate(hs):
            self.s[i] += h.sum(0).double()
            self.gram[i] += (h.T @ h).double()
            if i + 1 < len(hs):
                self.cross[i] += (h.T @ hs[i + 1]).double()
            if self.to_final and i >= 1:
                self.final[i - 1] += (h.T @ hs[-1]).double()

    def pair(self, i: int, j: int, xy: Tensor) -> GramStats:
        return GramStats(self.n, self.shift[i], self.shift[j], self.s[i], self.s[j], self.gram[i], xy, self.gram[j])


def block_stats(
    model: HookedTransformer, tokens: Int[Tensor, " n"], context: int = 256, batch_size: int = 8, to_final: bool = False
) -> dict[str, list[GramStats]]:
    """Streamed statistics per block: ``"block"``: ``(resid_pre, resid_post)``; with ``to_final``
    also ``"final"``: ``(resid_post(l), resid_post(L-1))`` for a least-squares tuned lens."""
    L = model.cfg.n_layers
    chain = _Chain(to_final)
    states: list[Tensor] = []

    def visit(layer, x, y):
        if layer == 0:
            states.append(x)
        states.append(y)
        if layer == L - 1:
            chain.add(states)
            states.clear()

    visit_blocks(model, tokens, visit, context, batch_size, desc="block statistics")
    out = {"block": [chain.pair(l, l + 1, chain.cross[l]) for l in range(L)]}
    if to_final:
        out["final"] = [chain.pair(l + 1, L, chain.final[l]) for l in range(L)]
    return out


def heldout_scores(
    model: HookedTransformer,
    tokens: Int[Tensor, " n"],
    maps: Mapping[int, LinearMap],
    context: int = 256,
    batch_size: int = 8,
    upstream: str = "clean",
) -> dict[str, dict[int, float]]:
    """Held-out pooled R² of each block's map on ``tokens``: ``{"output": {layer: R²}, "update": {...}}``.

    ``upstream="clean"``: every block sees the true model's stream. ``"replaced"``: block ``l`` sees
    the stream of a model whose blocks ``< l`` are all replaced by their maps (``maps`` must cover
    them). ``"update"`` scores the same error against the variance of the update ``y - x`` (the map
    predicts ``y``; subtracting ``x`` from both leaves the error and removes the identity's share).
    """
    if upstream not in ("clean", "replaced"):
        raise ValueError(f"upstream must be 'clean' or 'replaced', got {upstream!r}.")
    acc = {l: torch.zeros(4, dtype=torch.float64) for l in maps}  # sse, sum |y|^2, sum |y - x|^2, n
    sums: dict[int, list[Tensor]] = {}

    def visit(layer, x, y):
        if layer not in maps:
            return
        y, u = y.double(), (y - x).double()
        err = maps[layer](x).double() - y
        acc[layer] += torch.tensor([err.square().sum(), y.square().sum(), u.square().sum(), float(y.shape[0])])
        prev = sums.get(layer, [0.0, 0.0])
        sums[layer] = [prev[0] + y.sum(0), prev[1] + u.sum(0)]

    replace = maps if upstream == "replaced" else None
    visit_blocks(model, tokens, visit, context, batch_size, replace=replace, layers=sorted(maps), desc="held-out R²")
    out: dict[str, dict[int, float]] = {"output": {}, "update": {}}
    for l, (sse, ss_y, ss_u, n) in acc.items():
        out["output"][l] = float(1 - sse / (ss_y - sums[l][0].square().sum() / n))
        out["update"][l] = float(1 - sse / (ss_u - sums[l][1].square().sum() / n))
    return out


def heldout_r2(
    model: HookedTransformer,
    tokens: Int[Tensor, " n"],
    maps: Mapping[int, LinearMap],
    context: int = 256,
    batch_size: int = 8,
    upstream: str = "clean",
    update: bool = False,
) -> dict[int, float]:
    """One half of :func:`heldout_scores`: ``{layer: R²}`` of the output (or, ``update=True``, the update)."""
    return heldout_scores(model, tokens, maps, context, batch_size, upstream)["update" if update else "output"]


def collect(
    model: HookedTransformer,
    tokens: Int[Tensor, " n"],
    names: list[str],
    context: int = 256,
    batch_size: int = 8,
    max_tokens: int = 4096,
) -> dict[str, Float[Tensor, "n d"]]:
    """The activations at hook ``names`` for the first ``max_tokens`` tokens, ``{name: [n, d]}`` (small samples only)."""
    wins = windows(torch.as_tensor(tokens).flatten()[: max(max_tokens, context)], context)
    out: dict[str, list[Tensor]] = {n: [] for n in names}
    with torch.inference_mode():
        for batch in stream(model, wins, names, batch_size):
            for n in names:
                out[n].append(batch.acts[n].reshape(-1, batch.acts[n].shape[-1]).float().cpu())
    return {n: torch.cat(v) for n, v in out.items()}
