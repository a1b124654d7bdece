"""Attribution patching: every restoration of a trace estimated from one backward pass.

Exact causal tracing runs the model once per restored state. Attribution patching (Nanda 2023,
"Attribution Patching: Activation Patching At Industrial Scale"; Syed et al. 2023,
"Attribution Patching Outperforms Automated Circuit Discovery") replaces each run by its
first-order Taylor estimate around the corrupted run::

    p_restored(l, p) ~= p_corrupt + (clean[l, p] - corrupt[l, p]) . d p_corrupt / d act[l, p]

so one forward and one backward pass of the corrupted run give the estimate for every layer
and position at once. With several noise samples, ``p_corrupt`` is their mean and the terms
are summed over samples. The estimate is linear in the restored states, so a window's
estimate is the sum of its single layers' (:meth:`TraceResult.with_window`). It is exact
in the limit of small corruptions; ROME's noise (3 embedding standard deviations) is not
small, which is why the chapter measures its agreement with exact traces.
"""

from __future__ import annotations

from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from analysis.forward import final_logits
from analysis.hooks import act_name
from analysis.tracing.blocks import FastBlocks, block_runner
from analysis.tracing.corrupt import embed_rows_hook
from analysis.tracing.inputs import WINDOWED, Prepared, window_layers


def fast_gradients(
    runner: FastBlocks,
    fact: Prepared,
    corrupt_tokens: Tensor,
    eps: Tensor | None,
    kinds: Sequence[str],
) -> tuple[list[dict[str, Tensor]], list[dict[str, Tensor | None]], Tensor, Tensor]:
    """Forward ``[clean, corrupted samples]`` through the fast blocks with autograd, and the
    gradient of the mean corrupted target probability with respect to every recorded state.

    Returns per-layer activations and gradients (keyed by hook; at the last layer only the last
    position of the outputs exists, as nothing else reaches the answer), the clean logits at the
    last position, and the corrupted target probabilities.
    """
    model = runner.model
    L = model.cfg.n_layers
    batch = torch.cat([fact.tokens[None], corrupt_tokens]).to(model.cfg.device)
    with torch.enable_grad():
        with model.hooks(fwd_hooks=[("hook_embed", embed_rows_hook(eps, fact.subject_span, grad=True))]):
            resid = model.input_to_embed(batch)[0]
        acts: list[dict[str, Tensor]] = []
        for j in range(L):
            record: dict[str, Tensor] = {}
            resid = runner.block(j, resid, None, 0, None, {}, last=(j == L - 1), record=record)
            acts.append({h: record[h] for h in kinds})
        logits = final_logits(model, resid[:, -1])
        probs = torch.softmax(logits.float(), dim=-1)[:, fact.target_id]
        flat = [a[h] for a in acts for h in kinds]
        grads_flat = torch.autograd.grad(probs[1:].mean(), flat, allow_unused=True)
    it = iter(grads_flat)
    grads = [{h: next(it) for h in kinds} for _ in range(L)]
    return acts, grads, logits[0].detach(), probs[1:].detach()


def hooked_gradients(
    model: HookedTransformer,
    fact: Prepared,
    corrupt_tokens: Tensor,
    eps: Tensor | None,
    kinds: Sequence[str],
) -> tuple[list[dict[str, Tensor]], list[dict[str, Tensor | None]], Tensor, Tensor]:
    """The same as :func:`fast_gradients` through TransformerLens's forward pass and hooks
    (any architecture; every position of every layer is recorded)."""
    L = model.cfg.n_layers
    saved: dict[str, Tensor] = {}

    def save(act: Tensor, hook) -> None:
        saved[hook.name] = act

    names = [act_name(h, l) for l in range(L) for h in kinds]
    batch = torch.cat([fact.tokens[None], corrupt_tokens]).to(model.cfg.device)
    fwd = [("hook_embed", embed_rows_hook(eps, fact.subject_span, grad=True))] + [(n, save) for n in names]
    with torch.enable_grad(), model.hooks(fwd_hooks=fwd):
        logits = model(batch, return_type="logits")[:, -1]
        probs = torch.softmax(logits.float(), dim=-1)[:, fact.target_id]
        grads_flat = torch.autograd.grad(probs[1:].mean(), [saved[n] for n in names], allow_unused=True)
    acts = [{h: saved[act_name(h, l)] for h in kinds} for l in range(L)]
    it = iter(grads_flat)
    grads = [{h: next(it) for h in kinds} for _ in range(L)]
    return acts, grads, logits[0].detach(), probs[1:].detach()


def attribution(
    model: HookedTransformer,
    fact: Prepared,
    corrupt_tokens: Tensor,
    eps: Tensor | None,
    kinds: Sequence[str],
    window: int,
    fast: bool | None = None,
) -> tuple[dict[str, Float[Tensor, "layer pos"]], Float[Tensor, " d_vocab"], float]:
    """First-order estimate of every restored probability from one forward and one backward pass.

    ``p_restored(l, p) ~= p_corrupt + sum_{j in window(l)} sum_samples
    (clean[j, p] - corrupt[j, p]) . d p_corrupt / d act[j, p]``, with ``p_corrupt`` the mean
    over noise samples. The forward pass runs the batch ``[clean, corrupted samples]``; the
    gradient flows from the corrupted rows only. Returns the estimates, the clean logits at the
    last position and ``p_corrupt``.
    """
    dev = model.cfg.device
    L, T = model.cfg.n_layers, fact.tokens.numel()
    runner = block_runner(model, fast)
    if runner.fast:
        acts, grads, clean_logits, probs = fast_gradients(runner, fact, corrupt_tokens, eps, kinds)
    else:
        acts, grads, clean_logits, probs = hooked_gradients(model, fact, corrupt_tokens, eps, kinds)
    corrupt_p = float(probs.mean())
    out = {}
    for h in kinds:
        per_layer = []
        for l in range(L):
            act, g = acts[l][h].detach(), grads[l][h]
            ie = torch.zeros(T, device=dev)
            if g is not None:
                t = act.shape[1]  # T, or 1 for outputs of the fast runner's last layer
                # clean minus each corrupted sample, times that sample's gradient, summed
                ie[T - t :] = ((act[:1] - act[1:]) * g[1:]).sum(dim=(0, 2))
            per_layer.append(ie)
        single = torch.stack(per_layer).detach().cpu()  # [layer, pos]
        if h in WINDOWED and window > 1:
            single = torch.stack([single[list(window_layers(l, window, L))].sum(0) for l in range(L)])
        out[h] = corrupt_p + single
    return out, clean_logits, corrupt_p
