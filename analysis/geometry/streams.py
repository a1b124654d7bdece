"""Residual streams of a model on a token stream, visited batch by batch and never held whole.

Every geometry measurement reads the same thing: the residual stream entering and leaving each
block (``blocks.{l}.hook_resid_pre`` / ``hook_resid_post``) on disjoint windows of a 1-D token
stream. :func:`visit_blocks` runs the model once per batch of windows and hands each block's
``(x, y)`` pair to a visitor; with ``replace`` it substitutes a map's output for chosen blocks, so
that later blocks see the upstream those replacements produce (while ``y`` is still the true
block's output on that upstream). :func:`block_stats` and :func:`heldout_windows` are the two
visitors the linearity study needs.

Position convention: every statistic covers all window positions unless ``skip_first`` leaves the
first ones out. Position 0 is the attention sink (:data:`SINK_POSITIONS`); ``skip_first=1`` leaves it
out of the statistics (it still runs through the model).
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from analysis import hooks
from analysis.forward import stream, windows
from analysis.geometry.linearity import GramStats, LinearMap
from analysis.progress import progress

Visitor = Callable[[int, Tensor, Tensor], None]
"""``visit(layer, x, y)`` with ``x``/``y`` ``[windows, positions, d_model]``: the block's input and true output."""

SINK_POSITIONS = 1
"""Window positions the ``skip_first`` convention leaves out: position 0, the attention sink (no token
before it to attend to; SmolLM2 gives it massive activations). Our windows are cut from a running
token stream, so position 0 is whatever token starts the window, not a BOS token."""


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
    skip_first: int = 0,
) -> None:
    """Run ``model`` over ``tokens`` and call ``visit(l, x, y)`` for every block ``l`` in ``layers``.

    ``replace[l]`` (a map ``x -> y``) replaces block ``l``'s output for everything downstream, at
    every position. ``skip_first``: the first positions of each window are left out of what
    ``visit`` sees (they still run, and are still replaced).
    """
    replace = dict(replace or {})
    layers = list(range(model.cfg.n_layers) if layers is None else layers)
    wins = windows(tokens, context)
    if not 0 <= skip_first < context:
        raise ValueError(f"skip_first must be in [0, context={context}), got {skip_first}.")
    store: dict[int, Tensor] = {}

    def pre(x, hook):
        store[hooks.layer_of(hook.name)] = x

    def post(y, hook):
        layer = hooks.layer_of(hook.name)
        x = store.pop(layer)
        if layer in layers:
            visit(layer, x[:, skip_first:], y[:, skip_first:])
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
    Consecutive blocks share states, so this is about half the work of separate pairs. Products are
    taken in float64 on the states' device (see :class:`GramStats`)."""

    def __init__(self, to_final: bool, shift: list[Tensor] | None = None):
        self.to_final, self.n = to_final, 0
        self.shift: list[Tensor] = list(shift or [])
        self.s: list[Tensor] = []
        self.gram: list[Tensor] = []
        self.cross: list[Tensor] = []
        self.final: list[Tensor] = []

    def add(self, states: list[Tensor]) -> None:
        states = [h.reshape(-1, h.shape[-1]) for h in states]
        if not self.shift:
            self.shift = [h.double().mean(0).cpu() for h in states]
        if not self.s:
            self.s = [torch.zeros_like(sh) for sh in self.shift]
            self.gram = [torch.zeros(len(sh), len(sh), dtype=torch.float64) for sh in self.shift]
            self.cross = [torch.zeros_like(g) for g in self.gram[1:]]
            self.final = [torch.zeros_like(g) for g in self.gram[1:]] if self.to_final else []
        hs = [h.double() - sh.to(h.device) for h, sh in zip(states, self.shift)]
        self.n += hs[0].shape[0]
        for i, h in enumerate(hs):
            self.s[i] += h.sum(0).cpu()
            self.gram[i] += (h.T @ h).cpu()
            if i + 1 < len(hs):
                self.cross[i] += (h.T @ hs[i + 1]).cpu()
            if self.to_final and i >= 1:
                self.final[i - 1] += (h.T @ hs[-1]).cpu()

    def pair(self, i: int, j: int, xy: Tensor) -> GramStats:
        return GramStats(self.n, self.shift[i], self.shift[j], self.s[i], self.s[j], self.gram[i], xy, self.gram[j])


def block_stats(
    model: HookedTransformer,
    tokens: Int[Tensor, " n"],
    context: int = 256,
    batch_size: int = 8,
    to_final: bool = False,
    skip_first: int = 0,
) -> dict[str, list[GramStats]]:
    """Streamed statistics per block: ``"block"``: ``(resid_pre, resid_post)`` over every position;
    with ``to_final`` also ``"final"``: ``(resid_post(l), resid_post(L-1))`` for a least-squares tuned
    lens; with ``skip_first > 0`` also ``"block_skip"``: ``"block"`` with the first ``skip_first``
    positions of each window left out (the attention sink; :data:`SINK_POSITIONS`), from the same pass."""
    L = model.cfg.n_layers
    chain = _Chain(to_final)
    head: _Chain | None = None
    states: list[Tensor] = []

    def visit(layer, x, y):
        nonlocal head
        if layer == 0:
            states.append(x)
        states.append(y)
        if layer == L - 1:
            chain.add(states)
            if skip_first:
                head = head or _Chain(False, chain.shift)
                head.add([h[:, :skip_first] for h in states])
            states.clear()

    visit_blocks(model, tokens, visit, context, batch_size, desc="block statistics")
    out = {"block": [chain.pair(l, l + 1, chain.cross[l]) for l in range(L)]}
    if to_final:
        out["final"] = [chain.pair(l + 1, L, chain.final[l]) for l in range(L)]
    if skip_first and head is not None:
        out["block_skip"] = [s - head.pair(l, l + 1, head.cross[l]) for l, s in enumerate(out["block"])]
    return out


def heldout_windows(
    model: HookedTransformer,
    tokens: Int[Tensor, " n"],
    maps: Mapping[int, LinearMap],
    context: int = 256,
    batch_size: int = 8,
    upstream: str = "clean",
    skip_first: int = 0,
) -> dict[str, dict[int, np.ndarray]]:
    """Held-out errors of each block's map, window by window: ``{"sse": {layer: [windows]},
    "sst output": {...}, "sst update": {...}}``. ``sse`` is the map's squared error summed over a
    window's positions (from ``skip_first`` on); ``sst output`` / ``sst update`` are the window's
    squared deviations of ``y`` / of the update ``y - x`` from their mean over *all* scored tokens, so
    that ``1 - Σ sse / Σ sst`` over windows is the pooled R² (:func:`heldout_scores`) and windows can
    be resampled as units.

    ``upstream="clean"``: every block sees the true model's stream. ``"replaced"``: block ``l`` sees
    the stream of a model whose blocks ``< l`` are all replaced by their maps (``maps`` must cover
    them), at every position.
    """
    if upstream not in ("clean", "replaced"):
        raise ValueError(f"upstream must be 'clean' or 'replaced', got {upstream!r}.")
    parts: dict[int, list[Tensor]] = {l: [] for l in maps}  # per batch: [windows, 3] and the sums

    def visit(layer, x, y):
        if layer not in maps:
            return
        y, u = y.double(), (y - x).double()
        err = maps[layer](x).double() - y
        per = torch.stack([err.square().sum((1, 2)), y.square().sum((1, 2)), u.square().sum((1, 2))], 1)
        parts[layer].append((per.cpu(), y.sum(1).cpu(), u.sum(1).cpu(), y.shape[1]))

    replace = maps if upstream == "replaced" else None
    visit_blocks(
        model, tokens, visit, context, batch_size, replace, sorted(maps), desc="held-out R²", skip_first=skip_first
    )
    out: dict[str, dict[int, np.ndarray]] = {"sse": {}, "sst output": {}, "sst update": {}}
    for l, batches in parts.items():
        per = torch.cat([b[0] for b in batches])
        n_win = batches[0][3]
        for key, col, sums in (("sst output", 1, 1), ("sst update", 2, 2)):
            s = torch.cat([b[sums] for b in batches])  # [windows, d]
            mean = s.sum(0) / (n_win * len(s))
            out[key][l] = (per[:, col] - 2 * s @ mean + n_win * mean.square().sum()).numpy()
        out["sse"][l] = per[:, 0].numpy()
    return out


def heldout_scores(
    model: HookedTransformer,
    tokens: Int[Tensor, " n"],
    maps: Mapping[int, LinearMap],
    context: int = 256,
    batch_size: int = 8,
    upstream: str = "clean",
    skip_first: int = 0,
) -> dict[str, dict[int, float]]:
    """Held-out pooled R² of each block's map on ``tokens``: ``{"output": {layer: R²}, "update": {...}}``.

    ``upstream`` and ``skip_first`` as in :func:`heldout_windows`. ``"update"`` scores the same error
    against the variance of the update ``y - x`` (the map predicts ``y``; subtracting ``x`` from both
    leaves the error and removes the identity's share).
    """
    w = heldout_windows(model, tokens, maps, context, batch_size, upstream, skip_first)
    return {
        which: {l: float(1 - w["sse"][l].sum() / w[f"sst {which}"][l].sum()) for l in w["sse"]}
        for which in ("output", "update")
    }


def heldout_r2(
    model: HookedTransformer,
    tokens: Int[Tensor, " n"],
    maps: Mapping[int, LinearMap],
    context: int = 256,
    batch_size: int = 8,
    upstream: str = "clean",
    update: bool = False,
    skip_first: int = 0,
) -> dict[int, float]:
    """One half of :func:`heldout_scores`: ``{layer: R²}`` of the output (or, ``update=True``, the update)."""
    sc = heldout_scores(model, tokens, maps, context, batch_size, upstream, skip_first)
    return sc["update" if update else "output"]


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
