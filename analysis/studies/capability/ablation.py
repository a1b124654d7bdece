"""Direct importance and phase transitions: one head zero-ablated, or sparsified step by step."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from analysis import compress, hooks, sae
from analysis.components import component
from analysis.forward import final_logits, first_target_token, last_logits, prompt_batch, windows
from analysis.progress import progress
from analysis.studies.capability.results import HeadAblation

# ---- Direct importance: ablating one head --------------------------------------------------------


def _zero_heads(heads_of_row: Tensor):
    """A ``hook_z`` hook zeroing head ``heads_of_row[i]`` in batch row ``i`` (all positions)."""

    def hook(z, hook):
        z = z.clone()
        z[torch.arange(z.shape[0], device=z.device), :, heads_of_row.to(z.device)] = 0
        return z

    return hook


@torch.no_grad()
def head_ablation(
    model: HookedTransformer,
    tokens: Int[Tensor, " n"],
    prompts: Sequence[str],
    targets: Sequence[str],
    context: int = 128,
    max_tokens: int = 2048,
    layers: Sequence[int] | None = None,
) -> HeadAblation:
    """Zero-ablate each head's ``hook_z`` alone (the same as zeroing its W_O rows) and measure
    ΔCE, the drop in target log-prob and the drop in recall, each ``[L, H]``, and the clean loss.

    Each layer's runs start from the cached clean residual stream at that layer, and the
    ablations of several heads share one forward pass (one copy of the text per head, up to
    ``max_tokens`` tokens per pass). Heads of layers not in ``layers`` (default: all) are NaN.
    """
    L, H = model.cfg.n_layers, model.cfg.n_heads
    seqs = windows(tokens, context).to(model.cfg.device)
    resid = sae.residual_cache(model, seqs)
    if prompts:
        ftoks, last = prompt_batch(model, list(prompts))  # right-padded, each prompt's last index
        tid = torch.tensor([first_target_token(model, t) for t in targets])
        fresid = sae.residual_cache(model, ftoks)
        flogp = last_logits(model, ftoks, last).float().log_softmax(-1)
        base_logp, base_hit = flogp[torch.arange(len(tid)), tid], flogp.argmax(-1) == tid
    clean = sae.loss_from_layer(model, resid, seqs, 0, batch_size=len(seqs))
    per_pass = max(1, max_tokens // seqs.numel())
    out = {k: torch.full((L, H), float("nan")) for k in ("loss", "logp", "recall")}
    for l in progress(list(range(L) if layers is None else layers), desc="head ablation"):
        for h0 in range(0, H, per_pass):
            heads = torch.arange(h0, min(H, h0 + per_pass))
            with model.hooks(fwd_hooks=[(hooks.z(l), _zero_heads(heads.repeat_interleave(len(seqs))))]):
                logits = model(resid[l].repeat(len(heads), 1, 1), start_at_layer=l, return_type="logits")
            ce = F.cross_entropy(
                logits[:, :-1].transpose(1, 2).float(), seqs[:, 1:].repeat(len(heads), 1), reduction="none"
            )  # [rows, pos - 1]
            out["loss"][l, heads] = ce.view(len(heads), -1).mean(1).cpu() - clean
            del logits
            if prompts:
                rows = torch.arange(len(heads) * len(tid))
                with model.hooks(fwd_hooks=[(hooks.z(l), _zero_heads(heads.repeat_interleave(len(tid))))]):
                    final = model(
                        fresid[l].repeat(len(heads), 1, 1), start_at_layer=l, stop_at_layer=model.cfg.n_layers
                    )  # residual after the last block
                lp = final_logits(model, final[rows, last.repeat(len(heads))]).float().log_softmax(-1)
                t = tid.repeat(len(heads))
                out["logp"][l, heads] = (base_logp.repeat(len(heads)) - lp[rows, t]).view(len(heads), -1).mean(1).cpu()
                hit = (lp.argmax(-1) == t).float().view(len(heads), -1).mean(1).cpu()
                out["recall"][l, heads] = base_hit.float().mean() - hit
    return HeadAblation(**out, clean_loss=torch.tensor(clean))


# ---- Phase transitions: one head's loss as its sparsity rises ------------------------------------


def spread_heads(values: Float[Tensor, "layer head"], n: int) -> list[tuple[int, int]]:
    """``n`` heads at evenly spaced quantiles of ``values`` (lowest to highest; NaN heads are skipped)."""
    flat = values.flatten()
    order = flat.argsort()
    order = order[~flat[order].isnan()]
    picks = sorted({int(order[round(i * (len(order) - 1) / max(1, n - 1))]) for i in range(n)})
    H = values.shape[1]
    return [(i // H, i % H) for i in picks]


@torch.no_grad()
def transition_curves(
    model: HookedTransformer,
    tokens: Int[Tensor, " n"],
    heads: Sequence[tuple[int, int]],
    levels: Sequence[float],
    context: int = 128,
    batch_size: int = 8,
) -> Tensor:
    """``ΔCE [n_heads, n_levels]`` when one head alone is pruned to each sparsity
    (:class:`analysis.compress.HeadSparsity` with ``shared_kv="keep"`` on that head only: its own
    W_Q columns and W_O rows; the K/V slice it shares with its group is left intact, so sparsity 1
    is exactly the zero-ablation of its ``hook_z`` that :func:`head_ablation` measures)."""
    seqs = windows(tokens, context).to(model.cfg.device)
    resid = sae.residual_cache(model, seqs)
    clean = sae.loss_from_layer(model, resid, seqs, 0, batch_size=batch_size)
    out = torch.zeros(len(heads), len(levels))
    for i, (l, h) in enumerate(progress(list(heads), desc="transition curves")):
        for j, s in enumerate(levels):
            fr = tuple(float(s) if k == h else 0.0 for k in range(model.cfg.n_heads))
            with compress.CompressionPlan(
                {component(l, "attn"): [compress.HeadSparsity(fr, shared_kv="keep")]}
            ).applied(model):
                out[i, j] = sae.loss_from_layer(model, resid, seqs, l, batch_size=batch_size) - clean
    return out


def break_point(levels: Sequence[float], dloss: Sequence[float], full: float, fraction: float = 0.5) -> float:
    """The sparsity at which ``ΔCE`` first reaches ``fraction`` of the ablation increase ``full``
    (linear interpolation between levels, the ablation counted at sparsity 1; NaN if ``full <= 0``)."""
    if full <= 0:
        return float("nan")
    xs = [0.0, *map(float, levels), 1.0]
    ys = [0.0, *map(float, dloss), float(full)]
    target = fraction * full
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if y1 >= target:
            return x1 if y1 == y0 else x0 + (target - y0) * (x1 - x0) / (y1 - y0)
    return 1.0
