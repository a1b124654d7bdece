"""Two published layer-removal signals: ShortGPT's Block Influence and Gromov et al.'s angular distance.

Both read how much a block turns the residual stream, on calibration text, and call a block that
barely turns it redundant:

- **Block Influence** (Men et al. 2024, "ShortGPT: Layers in Large Language Models are More
  Redundant Than You Expect", eq. 2): ``BI_i = 1 - E_{X,t}[cos(x_{i,t}, x_{i+1,t})]``, ``x_i`` the
  input of layer ``i`` and ``x_{i+1}`` its output, the expectation over *every token* ``t`` of the
  calibration set. ShortGPT removes the layers of lowest BI (:func:`shortgpt_layers`).
- **Angular distance** (Gromov et al. 2024, "The Unreasonable Ineffectiveness of the Deeper
  Layers", eq. 7): ``d(x^l, x^{l+n}) = arccos(cos(x^l_T, x^{l+n}_T)) / pi`` between the input of
  layer ``l`` and the input of layer ``l + n`` at the *last* token ``T`` of each sequence, averaged
  over sequences. They drop the ``n`` consecutive layers starting at the ``l`` of smallest
  distance (:func:`gromov_block`).

Here ``x^l`` is ``blocks.{l}.hook_resid_pre`` and the output of the last block its
``hook_resid_post``, before the final norm. (The ShortGPT reference code reads Hugging Face's
``hidden_states``, whose last entry has the final norm applied; that changes only the last layer's
score, and we follow the paper's definition.) The calibration text is cut into disjoint windows
of ``context`` tokens (:func:`analysis.forward.windows`); each window is one sequence.

Both become :class:`analysis.scores.ComponentScores` (high = the block changes the stream a lot =
compress least). They are block scores: the block's value is given to both its attention and
its MLP, so a per-kind ranking is the block ranking. ``per="sublayer"`` measures each sublayer
separately instead (``hook_resid_pre`` to ``hook_resid_mid`` for attention, ``hook_resid_mid`` to
``hook_resid_post`` for the MLP): our extension, not the papers'.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.utilities import get_act_name

from analysis import hooks
from analysis.forward import stream, windows
from analysis.scores import ComponentScores

Per = Literal["block", "sublayer"]


def cosine(a: Float[Tensor, "... d"], b: Float[Tensor, "... d"]) -> Float[Tensor, "..."]:
    """Cosine similarity along the last axis, in float64 (a zero vector has cosine 0 with anything)."""
    a, b = a.double(), b.double()
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp(min=1e-300)


def angular_distance(a: Float[Tensor, "... d"], b: Float[Tensor, "... d"]) -> Float[Tensor, "..."]:
    """``arccos(cos(a, b)) / pi`` along the last axis, in ``[0, 1]``, in float64.

    Computed as ``2 atan2(|â - b̂|, |â + b̂|) / pi`` (â the unit vector), which equals the arccos form
    but stays exact near 0 and 1, where ``arccos`` of a rounded cosine loses half the digits."""
    a, b = a.double(), b.double()
    ua = a / a.norm(dim=-1, keepdim=True).clamp(min=1e-300)
    ub = b / b.norm(dim=-1, keepdim=True).clamp(min=1e-300)
    return 2 * torch.atan2((ua - ub).norm(dim=-1), (ua + ub).norm(dim=-1)) / math.pi


def _stream_names(model: HookedTransformer, per: Per) -> list[str]:
    """``x^0 .. x^L`` (``per="block"``), or with each block's ``hook_resid_mid`` between (``"sublayer"``)."""
    L = model.cfg.n_layers
    if per == "block":
        return [hooks.resid_pre(l) for l in range(L)] + [hooks.resid_post(L - 1)]
    if per == "sublayer":
        if model.cfg.parallel_attn_mlp:
            raise ValueError("per='sublayer' needs a sequential block; with parallel attention and MLP use 'block'.")
        names = [n for l in range(L) for n in (hooks.resid_pre(l), get_act_name("resid_mid", l))]
        return names + [hooks.resid_post(L - 1)]
    raise ValueError(f"per must be 'block' or 'sublayer', got {per!r}.")


def _as_scores(name: str, per_window: Float[Tensor, "window step"], per: Per) -> ComponentScores:
    """Per-window values of each step of the stream (a block, or a sublayer) as a ComponentScores."""
    n = per_window.shape[0]
    steps = per_window.view(n, -1, 2) if per == "sublayer" else per_window[:, :, None].expand(n, -1, 2)
    samples = steps.contiguous()  # [window, layer, kind]
    return ComponentScores(name, samples.mean(0), samples=samples)


@torch.inference_mode()
def _per_window(
    model: HookedTransformer,
    tokens: Int[Tensor, " n"],
    context: int,
    batch_size: int,
    per: Per,
    measure,
    desc: str,
) -> Float[Tensor, "window step"]:
    """``measure(x_in, x_out) -> [batch]`` for each consecutive pair of the stream (:func:`_stream_names`)."""
    names = _stream_names(model, per)
    out = []
    for batch in stream(model, windows(tokens, context), names, batch_size, desc=desc):
        acts = [batch.acts[n] for n in names]
        out.append(torch.stack([measure(a, b) for a, b in zip(acts[:-1], acts[1:])], 1).cpu())
    return torch.cat(out)


def block_influence(
    model: HookedTransformer, tokens: Int[Tensor, " n"], context: int = 256, batch_size: int = 8, per: Per = "block"
) -> ComponentScores:
    """ShortGPT's Block Influence ``1 - E[cos(x_i, x_{i+1})]`` over every token of disjoint windows of
    ``tokens``, one value per layer (given to both kinds; ``per="sublayer"``: attention and MLP apart).

    ``samples`` holds each window's BI ``[window, layer, kind]``; windows have equal length, so
    their mean is the mean over every token, :attr:`~ComponentScores.values`."""
    measure = lambda a, b: 1 - cosine(a, b).mean(-1)  # noqa: E731 [batch]
    per_window = _per_window(model, tokens, context, batch_size, per, measure, "block influence")
    return _as_scores("block influence" if per == "block" else "block influence (sublayer)", per_window, per)


@torch.inference_mode()
def angular_distances(
    model: HookedTransformer,
    tokens: Int[Tensor, " n"],
    context: int = 256,
    batch_size: int = 8,
    max_n: int | None = None,
) -> Float[Tensor, "n start"]:
    """Gromov et al.'s ``d(x^l, x^{l+n})`` at the last token of each window, averaged over windows.

    Returns ``[max_n, n_layers]``: row ``n - 1`` holds the distance for a block of ``n`` layers
    starting at layer ``l`` (column ``l``), NaN where ``l + n > n_layers``. ``max_n`` defaults to
    every block size."""
    L = model.cfg.n_layers
    max_n = L if max_n is None else max_n
    if not 1 <= max_n <= L:
        raise ValueError(f"max_n must lie in [1, {L}] (the model's layers), got {max_n}.")
    names = _stream_names(model, "block")
    total = torch.zeros(max_n, L, dtype=torch.float64)
    count = 0
    for batch in stream(model, windows(tokens, context), names, batch_size, desc="angular distance"):
        last = torch.stack([batch.acts[n][:, -1] for n in names], 1)  # [batch, L + 1, d_model]
        for n in range(1, max_n + 1):
            total[n - 1, : L - n + 1] += angular_distance(last[:, : L - n + 1], last[:, n:]).sum(0).cpu()
        count += last.shape[0]
    out = total / count
    for n in range(1, max_n + 1):
        out[n - 1, L - n + 1 :] = float("nan")
    return out


def angular_distance_scores(
    model: HookedTransformer, tokens: Int[Tensor, " n"], context: int = 256, batch_size: int = 8, per: Per = "block"
) -> ComponentScores:
    """Gromov et al.'s angular distance for single layers (``n = 1``) as a score: layer ``l`` gets
    ``d(x^l, x^{l+1})`` at the last token (given to both kinds; ``per="sublayer"``: each sublayer's
    own turn). ``samples`` holds each window's distances ``[window, layer, kind]``."""

    def measure(a, b):
        return angular_distance(a[:, -1], b[:, -1])  # [batch]

    per_window = _per_window(model, tokens, context, batch_size, per, measure, "angular distance")
    return _as_scores("angular distance" if per == "block" else "angular distance (sublayer)", per_window, per)


def shortgpt_layers(bi: ComponentScores, k: int) -> list[int]:
    """ShortGPT's choice: the ``k`` layers of lowest Block Influence (ties by layer), in increasing
    order. ``bi`` is a block score (:func:`block_influence` with ``per="block"``)."""
    values = bi.values[:, 0]
    if not 0 <= k <= len(values):
        raise ValueError(f"k must lie in [0, {len(values)}] layers, got {k}.")
    return sorted(values.argsort(stable=True)[:k].tolist())


def gromov_block(distances: Float[Tensor, "n start"], n: int) -> list[int]:
    """Gromov et al.'s choice: the ``n`` consecutive layers ``l* .. l* + n - 1`` with
    ``l* = argmin_l d(x^l, x^{l+n})`` (``distances`` from :func:`angular_distances`; ties: the first).
    ``n = 0`` drops nothing."""
    if n == 0:
        return []
    if not 1 <= n <= distances.shape[0]:
        raise ValueError(f"n must lie in [0, {distances.shape[0]}] (the block sizes measured), got {n}.")
    row = distances[n - 1]
    valid = row[~torch.isnan(row)]
    start = int(valid.argmin())
    return list(range(start, start + n))
