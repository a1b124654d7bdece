"""Calibration statistics: what data-aware compression knows about a weight's inputs and loss.

Data-aware factorizations weight a matrix's error by how the model uses it, measured on a few
hundred windows of calibration text. Three statistics cover the methods of
:mod:`analysis.compress.lowrank`, each keyed by the hook or weight it belongs to:

- ``xtx:{hook}``: the mean outer product ``E[x x^T]`` ``[d_in, d_in]`` of the weight's inputs
  (SVD-LLM whitens by its Cholesky factor);
- ``absmean:{hook}``: the mean absolute input ``E|x|`` ``[d_in]`` (ASVD's channel scales);
- ``grad2:{weight}``: the per-example squared gradient of the loss, summed over the input
  dimension and averaged over examples, per output channel ``[d_out]`` (FWSVD's row-summed
  Fisher information, Hsu et al. 2022);
- ``xnorm:{hook}``: ``||X_i||₂`` of every input feature over the calibration tokens ``[d_in]``
  (Wanda's input norms, Sun et al. 2023; :func:`wanda_calibration`, read by
  :class:`~analysis.compress.prune.WandaPrune` and ``HeadSparsity(criterion="wanda")``).

The inputs come from one forward pass with TransformerLens hooks at
:func:`analysis.hooks.input_hook` (after the norm's own weight, :func:`analysis.hooks.norm_output`);
the gradients from one backward pass per example. Padding positions never count.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedEncoder, HookedTransformer

from analysis.components import components, parameter_name, weights_of
from analysis.compress.linear import to_linear
from analysis.compress.plan import Calibration
from analysis.forward import windows as cut_windows
from analysis.hooks import input_hook, norm_output
from analysis.models import is_encoder
from analysis.wanda import input_norms

STAT_KINDS = ("xtx", "absmean", "grad2")
"""Calibration statistics: ``xtx:{hook}`` mean ``x x^T`` [d_in, d_in] (SVD-LLM), ``absmean:{hook}``
mean ``|x|`` [d_in] (ASVD), ``grad2:{weight}`` per-example squared gradient summed over the
input dimension, per output channel [d_out] (FWSVD's row-summed Fisher)."""

LossFn = Callable[[object, Int[Tensor, "1 pos"], Int[Tensor, "1 pos"], int], Float[Tensor, ""]]
"""``loss_fn(model, tokens, mask, row) -> scalar``: the loss of the example in row ``row``."""


def lm_loss(
    model: HookedTransformer | HookedEncoder, tokens: Int[Tensor, "1 pos"], mask: Int[Tensor, "1 pos"], row: int = 0
) -> Float[Tensor, ""]:
    """A decoder's mean next-token loss on ``tokens`` (the default :data:`LossFn`)."""
    return model(tokens, return_type="loss")


def calibration_stats(
    model: HookedTransformer | HookedEncoder,
    tokens: Int[Tensor, " n_tokens"] | Int[Tensor, "batch pos"],
    weights: Sequence[str],
    kinds: Sequence[str] = STAT_KINDS,
    context: int = 256,
    batch_size: int = 8,
    attention_mask: Int[Tensor, "batch pos"] | None = None,
    loss_fn: LossFn | None = None,
    max_grad_examples: int | None = None,
) -> Calibration:
    """Calibration statistics for ``weights`` in one forward pass (and one backward per example).

    ``tokens``: a 1-D token stream (cut into windows of ``context``) or a ``[n, pos]`` batch
    (with ``attention_mask`` for padding, as an encoder needs). Padding positions are left out
    of every statistic. ``loss_fn(model, tokens, mask, row) -> scalar`` defines the loss whose
    gradients FWSVD weights by, for the example in row ``row`` (default: the decoder's
    next-token loss; an encoder has no meaningful default and must be given one, e.g. a task
    head's cross-entropy). Returns a :class:`~analysis.compress.plan.Calibration` for a plan.
    """
    unknown = set(kinds) - set(STAT_KINDS)
    if unknown:
        raise ValueError(f"Unknown calibration statistics {sorted(unknown)}; choose from {STAT_KINDS}.")
    tokens = torch.as_tensor(tokens)
    if tokens.numel() == 0:
        raise ValueError("calibration_stats: no calibration tokens given (missing calibration data).")
    if tokens.ndim == 1:
        tokens = cut_windows(tokens, context)
    if attention_mask is None:
        attention_mask = torch.ones_like(tokens)
    weights = list(weights)
    stats = {}
    if {"xtx", "absmean"} & set(kinds):
        stats.update(input_stats(model, tokens, attention_mask, weights, kinds, batch_size))
    if "grad2" in kinds:
        stats.update(fisher_rows(model, tokens, attention_mask, weights, loss_fn, max_grad_examples))
    for k, v in stats.items():
        if not torch.isfinite(v).all():
            raise FloatingPointError(
                f"Calibration statistic {k!r} is not finite; the model produced NaN/inf on the calibration data."
            )
    return Calibration(model=model, stats=stats)


def input_stats(
    model: HookedTransformer | HookedEncoder,
    tokens: Int[Tensor, "batch pos"],
    mask: Int[Tensor, "batch pos"],
    weights: Sequence[str],
    kinds: Sequence[str],
    batch_size: int = 8,
    checkpoints: Sequence[int] = (),
) -> dict[str, Float[Tensor, "..."]]:
    """``xtx:{hook}`` and ``absmean:{hook}`` (those of ``kinds``) at the input hook of each weight.

    With ``checkpoints`` (row counts), also ``{n: stats of the first n rows}`` under the key ``"prefix"``.
    """
    hooks = sorted({input_hook(w, model) for w in weights})
    device = next(model.parameters()).device
    sums: dict[str, Tensor] = {}
    count = 0
    seen: set[str] = set()
    keep = None

    def collect(act: Tensor, hook) -> None:
        if hook.name in seen:  # ln1 runs once each for Q, K and V: count its input once
            return
        seen.add(hook.name)
        act = norm_output(model, hook.name, act.detach())
        x = act.reshape(-1, act.shape[-1]) if act.ndim == 3 else act.reshape(act.shape[0] * act.shape[1], -1)
        x = x[keep].float()
        if "xtx" in kinds:
            key = f"xtx:{hook.name}"
            sums[key] = sums.get(key, 0) + (x.T @ x).double()
        if "absmean" in kinds:
            key = f"absmean:{hook.name}"
            sums[key] = sums.get(key, 0) + x.abs().sum(0).double()

    fwd = [(h, collect) for h in hooks]
    prefix: dict[int, dict] = {}
    with torch.inference_mode():
        for i, j in _batches(len(tokens), batch_size, checkpoints):
            t, m = tokens[i:j].to(device), mask[i:j].to(device)
            keep = m.reshape(-1).bool()
            seen.clear()
            if is_encoder(model):  # encoder_output: the blocks only, not the (random) MLM head
                with model.hooks(fwd_hooks=fwd):
                    model.encoder_output(t, None, m)
            else:
                model.run_with_hooks(t, return_type=None, fwd_hooks=fwd)
            count += int(keep.sum())
            if j in checkpoints:
                prefix[j] = {k: (v / count).float() for k, v in sums.items()}
    out: dict = {k: (v / count).float() for k, v in sums.items()}
    return {**out, "prefix": prefix} if checkpoints else out


def _batches(n: int, batch_size: int, checkpoints: Sequence[int] = ()) -> list[tuple[int, int]]:
    """``(begin, end)`` row ranges of at most ``batch_size`` covering ``0..n``, breaking at every checkpoint."""
    stops = sorted({*range(batch_size, n, batch_size), *(c for c in checkpoints if 0 < c < n), n})
    return list(zip([0, *stops[:-1]], stops))


def fisher_rows(
    model: HookedTransformer | HookedEncoder,
    tokens: Int[Tensor, "batch pos"],
    mask: Int[Tensor, "batch pos"],
    weights: Sequence[str],
    loss_fn: LossFn | None = None,
    max_examples: int | None = None,
    checkpoints: Sequence[int] = (),
) -> dict[str, Float[Tensor, " d_out"]]:
    """``grad2:{weight}``: squared per-example gradients, summed over the input dimension, averaged.

    With ``checkpoints`` (example counts), also ``{n: the average over the first n examples}`` under ``"prefix"``.

    One backward pass per example (the first ``max_examples`` rows); only the weights' own
    parameters require gradients meanwhile, and every ``requires_grad`` flag is restored after.
    """
    if loss_fn is None:
        if is_encoder(model):
            raise ValueError(
                "FWSVD on an encoder needs loss_fn (its MLM head is random, so there is no default "
                "loss); pass e.g. a task head's cross-entropy."
            )
        loss_fn = lm_loss
    params = dict(model.named_parameters())
    names = {w: parameter_name(model, w) for w in weights}
    flags = {n: p.requires_grad for n, p in params.items()}
    acc = {w: 0 for w in weights}
    prefix: dict[int, dict] = {}
    n = len(tokens) if max_examples is None else min(len(tokens), max_examples)
    device = next(model.parameters()).device
    try:
        for p_name, p in params.items():
            p.requires_grad_(p_name in names.values())
        for i in range(n):
            for p in params.values():
                p.grad = None
            loss = loss_fn(model, tokens[i : i + 1].to(device), mask[i : i + 1].to(device), i)
            loss.backward()
            for w, p_name in names.items():
                g = to_linear(w, params[p_name].grad.detach()).float()
                acc[w] = acc[w] + g.pow(2).sum(0).double()
            if i + 1 in checkpoints:
                prefix[i + 1] = {f"grad2:{w}": (v / (i + 1)).float() for w, v in acc.items()}
    finally:
        for p_name, p in params.items():
            p.grad = None
            p.requires_grad_(flags[p_name])
    out: dict = {f"grad2:{w}": (v / n).float() for w, v in acc.items()}
    return {**out, "prefix": prefix} if checkpoints else out


def calibration_prefixes(
    model: HookedTransformer | HookedEncoder,
    tokens: Int[Tensor, " n_tokens"],
    weights: Sequence[str],
    windows: Sequence[int],
    kinds: Sequence[str] = STAT_KINDS,
    context: int = 256,
    batch_size: int = 8,
    max_grad_examples: int | None = None,
) -> dict[int, Calibration]:
    """``{n: Calibration}``: the statistics of :func:`calibration_stats` on the first ``n`` windows of
    ``context`` tokens, for every ``n`` in ``windows``, from one pass over ``max(windows)`` windows
    (a decoder's token stream; FWSVD's Fisher from the first ``min(n, max_grad_examples)`` windows).
    """
    windows = sorted({int(w) for w in windows})
    if not windows or windows[0] < 1:
        raise ValueError(f"windows must be positive window counts, got {windows}.")
    tokens = torch.as_tensor(tokens)
    if tokens.numel() < windows[-1] * context:
        raise ValueError(
            f"calibration_prefixes: {tokens.numel()} tokens is less than {windows[-1]} windows of {context}; "
            "ask analysis.data.lm_tokens for more calibration text."
        )
    unknown = set(kinds) - set(STAT_KINDS)
    if unknown:
        raise ValueError(f"Unknown calibration statistics {sorted(unknown)}; choose from {STAT_KINDS}.")
    rows = cut_windows(tokens, context)[: windows[-1]]
    mask = torch.ones_like(rows)
    per: dict[int, dict] = {w: {} for w in windows}
    if {"xtx", "absmean"} & set(kinds):
        got = input_stats(model, rows, mask, list(weights), kinds, batch_size, checkpoints=windows)
        for w in windows:
            per[w].update(got["prefix"].get(w) or {k: v for k, v in got.items() if k != "prefix"})
    if "grad2" in kinds:
        cap = windows[-1] if max_grad_examples is None else min(windows[-1], max_grad_examples)
        got = fisher_rows(model, rows, mask, list(weights), None, cap, checkpoints=[w for w in windows if w <= cap])
        for w in windows:
            per[w].update(got["prefix"].get(w) or {k: v for k, v in got.items() if k != "prefix"})
    return {w: Calibration(model=model, stats=per[w]) for w in windows}


def wanda_calibration(
    model: HookedTransformer, tokens: Int[Tensor, " n_tokens"], context: int = 128, batch_size: int = 8
) -> Calibration:
    """``xnorm:{hook}`` (``||X_i||₂`` ``[d_in]``, :func:`analysis.wanda.input_norms`) at the input hook of
    every attention and MLP weight of ``model`` (``W_O``'s: ``hook_z`` with heads concatenated), on
    ``tokens`` cut into windows of ``context``: what :class:`~analysis.compress.prune.WandaPrune` and
    ``HeadSparsity(criterion="wanda")`` read."""
    weights = [w for c in components(model) for w in weights_of(model, c)]
    norms = input_norms(model, tokens, context, batch_size, weights=weights)
    return Calibration(model=model, stats={f"xnorm:{hook}": v for hook, v in norms.items()})
