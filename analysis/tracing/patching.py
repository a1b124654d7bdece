"""Attribution patching per component: each layer's attention and MLP output, from one backward pass.

Activation patching replaces one component's output (``blocks.{l}.hook_attn_out`` or
``hook_mlp_out``, at every position) by another run's and measures how a metric moves; it costs
one forward pass per component. Attribution patching (Nanda 2023, "Attribution Patching:
Activation Patching At Industrial Scale"; Syed et al. 2023) estimates every such patch at once by
the first-order Taylor expansion of the metric ``m`` around the run being patched::

    m(patched at c) - m(run) ~= sum_{batch, pos} (new_c - act_c) . dm/d act_c

Two uses, both returned as :class:`analysis.scores.ComponentScores`:

- :func:`attribution_patching`: the classic one. ``metric(logits)`` is read on the corrupted run and
  each component's clean output is patched in (the estimate of what TransformerLens's
  ``patching.generic_activation_patch`` measures exactly, minus the corrupted metric).
- :func:`ablation_attribution`: the compression one. The metric is the mean next-token loss on
  text and each component's output is patched to zero, so the value is the first-order estimate of
  the loss increase from removing that sublayer, ``-act . dL/d act``: the "remove" column of the
  oracle (:mod:`analysis.compress.oracle`), from one backward pass per batch.

The estimate is exact when the metric is linear in the patched activation, and good when the
patch is small. The fact-level traces of causal tracing have their own estimate,
:mod:`analysis.tracing.attribution` (per layer and position, on noised subjects).
This module is imported as ``analysis.tracing.patching`` (not re-exported by the package, which
:mod:`analysis.scores` imports).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from analysis.components import KINDS
from analysis.forward import batch_rows, windows
from analysis.hooks import act_name
from analysis.scores import ComponentScores

Metric = Callable[[Float[Tensor, "batch pos d_vocab"]], Float[Tensor, ""]]
"""A scalar from the logits of a batch, as TransformerLens's ``patching_metric``."""


def component_hooks(model: HookedTransformer, kinds: Sequence[str] = KINDS) -> list[str]:
    """``blocks.{l}.hook_attn_out`` / ``hook_mlp_out`` for every layer, layer by layer, in ``kinds`` order."""
    return [act_name(k, l) for l in range(model.cfg.n_layers) for k in kinds]


@contextmanager
def _open_to_gradients(model: HookedTransformer, names: Sequence[str]) -> Iterator[tuple[dict, dict]]:
    """Hooks that add a zero tensor requiring grad to each named activation (so ``d/d zero`` is
    ``d/d act``, whatever the parameters' ``requires_grad``), and record the activations."""
    acts: dict[str, Tensor] = {}
    zeros: dict[str, Tensor] = {}

    def hook(act: Tensor, hook) -> Tensor:
        z = torch.zeros_like(act, requires_grad=True)
        acts[hook.name], zeros[hook.name] = act.detach(), z
        return act + z

    with torch.enable_grad(), model.hooks(fwd_hooks=[(n, hook) for n in names]):
        yield acts, zeros


def _per_component(model: HookedTransformer, values: dict[str, Tensor], kinds: Sequence[str]) -> Tensor:
    """``{hook: [batch]}`` as ``[batch, layer, kind]`` (float64)."""
    L = model.cfg.n_layers
    return torch.stack([torch.stack([values[act_name(k, l)] for k in kinds], -1) for l in range(L)], 1).double()


def attribution_patching(
    model: HookedTransformer,
    clean: Int[Tensor, "batch pos"],
    corrupted: Int[Tensor, "batch pos"],
    metric: Metric,
    name: str = "attribution patching",
) -> ComponentScores:
    """First-order estimate of ``metric(corrupted run with component c's clean output patched in at
    every position) - metric(corrupted run)`` for every layer's attention and MLP output.

    One forward pass of ``clean`` (its outputs), one forward and one backward pass of ``corrupted``.
    ``values[l, k]`` is the estimate (signed: high means the clean component restores the metric);
    ``samples`` ``[batch, layer, kind]`` are the rows' terms, whose *sum* (not mean) is ``values``,
    since ``metric`` is any function of the whole batch."""
    if clean.shape != corrupted.shape:
        raise ValueError(f"clean {tuple(clean.shape)} and corrupted {tuple(corrupted.shape)} must have one shape.")
    names = component_hooks(model)
    dev = model.cfg.device
    with torch.inference_mode():
        _, cache = model.run_with_cache(clean.to(dev), names_filter=lambda n: n in names, return_type=None)
        clean_acts = {n: cache[n].clone() for n in names}
    with _open_to_gradients(model, names) as (acts, zeros):
        m = metric(model(corrupted.to(dev), return_type="logits"))
        grads = torch.autograd.grad(m, [zeros[n] for n in names], allow_unused=True)
    terms = {
        n: ((clean_acts[n] - acts[n]) * g).flatten(1).sum(-1) if g is not None else torch.zeros(len(clean), device=dev)
        for n, g in zip(names, grads)
    }
    samples = _per_component(model, terms, KINDS).cpu()
    return ComponentScores(name, samples.sum(0), samples=samples)


def ablation_attribution(
    model: HookedTransformer,
    tokens: Int[Tensor, " n"],
    context: int = 256,
    batch_size: int = 8,
    name: str = "ablation attribution",
) -> ComponentScores:
    """First-order estimate of the increase in mean next-token loss (nats per token, i.e. the
    change in log-perplexity) when one component's output is set to zero at every position, on
    disjoint windows of ``tokens``: ``-act . dL/d act`` (high = removing it hurts = compress least).

    ``samples`` ``[window, layer, kind]`` holds each window's estimate of its own Δ mean NLL;
    ``values`` is their mean (windows have equal length), the estimate for the whole text. The
    model's parameters and their ``.grad`` are left as they were."""
    wins = windows(tokens, context)
    names = component_hooks(model)
    dev = model.cfg.device
    out = []
    for rows in batch_rows(len(wins), batch_size, "ablation attribution"):
        x = wins[rows].to(dev)
        with _open_to_gradients(model, names) as (acts, zeros):
            logits = model(x, return_type="logits")
            nll = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), x[:, 1:].flatten(), reduction="sum")
            # the sum of each window's mean NLL: its gradient at window w is that window's own
            grads = torch.autograd.grad(nll / (x.shape[1] - 1), [zeros[n] for n in names], allow_unused=True)
        terms = {
            n: -(acts[n] * g).flatten(1).sum(-1) if g is not None else torch.zeros(len(x), device=dev)
            for n, g in zip(names, grads)
        }
        out.append(_per_component(model, terms, KINDS).detach().cpu())
    samples = torch.cat(out)
    return ComponentScores(name, samples.mean(0), samples=samples)
