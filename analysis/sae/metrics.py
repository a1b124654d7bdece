"""How good an SAE is: the standard metrics, measured on held-out text.

An SAE is judged on two axes (Bricken et al. 2023; SAEBench, Karvonen et al. 2025):

- **sparsity**: ``L0``, the mean number of latents active per token (a TopK SAE has exactly
  ``k``), and the *dead* latents, which never fire on the evaluation set;
- **fidelity**: the *explained variance* ``1 - Σ‖x - x̂‖² / Σ‖x - x̄‖²`` of the activations,
  and *CE loss recovered*, which splices the reconstruction into the model and asks how much
  of the next-token loss survives:
  ``(CE_ablated - CE_sae) / (CE_ablated - CE_clean)``, 1 when splicing costs nothing and 0 when
  the SAE is as bad as zero-ablating the hook. It divides by the cost of ablating the hook,
  so it is unstable where that cost is near zero.

:func:`latent_stats` encodes every SAE's hook over groups of evaluation tokens in one forward
pass per batch and keeps the per-group sums the density measures need
(:mod:`analysis.sae.density`). :func:`ce_losses` runs each layer's variants from that layer's
cached residual stream (:func:`residual_cache`, :func:`loss_from_layer`) instead of from the
embedding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from analysis import hooks
from analysis.forward import hook_activations, windows
from analysis.progress import progress
from analysis.sae.stream import collect_z, head_slices, parse_key


def explained_variance(x: Float[Tensor, "n d"], x_hat: Float[Tensor, "n d"]) -> float:
    """``1 - Σ‖x - x̂‖² / Σ‖x - x̄‖²`` over all tokens (x̄: the mean activation)."""
    x, x_hat = x.double(), x_hat.double()
    resid = (x - x_hat).pow(2).sum()
    total = (x - x.mean(0, keepdim=True)).pow(2).sum()
    return float(1 - resid / total)


def ce_loss_recovered(ce_clean: float, ce_sae: float, ce_ablated: float) -> float:
    """``(CE_ablated - CE_sae) / (CE_ablated - CE_clean)``: 1 when splicing in costs nothing."""
    return (ce_ablated - ce_sae) / (ce_ablated - ce_clean)


@dataclass
class LatentStats:
    """Per-SAE latent activity on the evaluation groups, with reconstruction statistics.

    ``sums[key]`` ``[G, d_sae]``: summed absolute activations per group (the density mass; equal to
    the summed activations for a ReLU or TopK code); ``fires[key]`` ``[G, d_sae]``: tokens on which
    each latent was active, that is non-zero, as sae-lens counts it (a signed code's negative
    latents are active too); ``n_tokens`` ``[G]``; ``l0``, ``ev`` per key.
    """

    groups: list[str]
    n_tokens: Tensor
    sums: dict[str, Tensor]
    fires: dict[str, Tensor]
    sq_err: dict[str, float]
    sq_total: dict[str, float]

    def alive(self, key: str) -> Tensor:
        """Latents active on at least one evaluation token."""
        return self.fires[key].sum(0) > 0

    def l0(self, key: str) -> float:
        """Mean active latents per token."""
        return float(self.fires[key].sum() / self.n_tokens.sum())

    def ev(self, key: str) -> float:
        """Explained variance over all evaluation tokens."""
        return 1 - self.sq_err[key] / self.sq_total[key]


LATENT_STATS_VERSION = 2
"""Bumped whenever what :func:`latent_stats` measures changes; callers put it in their cache key.
2: a latent is active when non-zero (was: positive), and ``sums`` hold absolute activations."""


@torch.no_grad()
def latent_stats(
    model: HookedTransformer,
    saes: dict[str, Any],
    groups: dict[str, Tensor],
    context: int = 128,
    batch_size: int = 8,
    skip_first: int = 1,
) -> LatentStats:
    """Encode every layer's ``hook_z`` with its SAE over each group's tokens (one forward per batch);
    the first ``skip_first`` positions of each sequence are left out, as in training."""
    keys = [(k, *parse_key(k)) for k in saes]
    layers = sorted({l for _, l, _ in keys})
    sums = {k: torch.zeros(len(groups), saes[k].cfg.d_sae, dtype=torch.float64) for k in saes}
    fires = {k: torch.zeros(len(groups), saes[k].cfg.d_sae, dtype=torch.float64) for k in saes}
    s1 = {k: torch.zeros(saes[k].cfg.d_in, dtype=torch.float64) for k in saes}
    s2 = dict.fromkeys(saes, 0.0)
    err = dict.fromkeys(saes, 0.0)
    n_tok = torch.zeros(len(groups), dtype=torch.float64)
    for g, (name, toks) in enumerate(groups.items()):
        seqs = windows(toks, context)
        for i in progress(range(0, len(seqs), batch_size), desc=f"latents ({name})"):
            z = collect_z(model, seqs[i : i + batch_size], layers, skip_first)
            for k, l, h in keys:
                x = head_slices(z[l], h).reshape(-1, saes[k].cfg.d_in)
                a = saes[k].encode(x)
                x_hat = saes[k].decode(a).reshape(x.shape)
                sums[k][g] += a.double().abs().sum(0).cpu()
                fires[k][g] += (a != 0).double().sum(0).cpu()
                xd = x.double().cpu()
                s1[k] += xd.sum(0)
                s2[k] += float(xd.pow(2).sum())
                err[k] += float((xd - x_hat.double().cpu()).pow(2).sum())
            n_tok[g] += seqs[i : i + batch_size, skip_first:].numel()
    n = float(n_tok.sum())
    total = {k: s2[k] - float(s1[k].pow(2).sum()) / n for k in saes}  # Σ‖x - x̄‖²
    return LatentStats(list(groups), n_tok, sums, fires, err, total)


@torch.no_grad()
def residual_cache(
    model: HookedTransformer, seqs: Int[Tensor, "batch pos"]
) -> Float[Tensor, "layer batch pos d_model"]:
    """Every layer's ``hook_resid_pre`` on ``seqs``, stacked, to restart the forward pass at any layer."""
    names = [hooks.resid_pre(l) for l in range(model.cfg.n_layers)]
    return torch.stack(list(hook_activations(model, seqs, names).values()))


@torch.no_grad()
def loss_from_layer(
    model: HookedTransformer,
    resid: Tensor,
    seqs: Int[Tensor, "batch pos"],
    layer: int,
    fwd_hooks: Sequence[tuple[str, Callable]] = (),
    batch_size: int = 8,
) -> float:
    """Mean next-token CE of ``seqs`` when the model runs from ``layer``'s cached residual
    (:func:`residual_cache`) with ``fwd_hooks`` attached."""
    total, count = 0.0, 0
    with model.hooks(fwd_hooks=list(fwd_hooks)):
        for i in range(0, seqs.shape[0], batch_size):
            logits = model(resid[layer, i : i + batch_size], start_at_layer=layer, return_type="logits")
            target = seqs[i : i + batch_size, 1:]
            total += F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), target.flatten(), reduction="sum").item()
            count += target.numel()
    return total / count


@torch.no_grad()
def ce_losses(
    model: HookedTransformer,
    saes: dict[str, Any],
    tokens: Int[Tensor, " n"],
    context: int = 128,
    batch_size: int = 8,
    skip_first: int = 1,
) -> dict[str, dict[str, float]]:
    """Per SAE: next-token CE of the clean model, with the SAE's reconstruction spliced into
    ``hook_z``, and with ``hook_z`` zero-ablated (for per-head SAEs: that head only). Positions
    before ``skip_first`` (the attention sink, which the SAEs do not model) are left clean."""
    seqs = windows(tokens, context).to(model.cfg.device)
    resid = residual_cache(model, seqs)
    clean = float(model(seqs, return_type="loss"))
    out = {}
    for key in progress(list(saes), desc="CE loss recovered"):
        l, h = parse_key(key)
        sae = saes[key]

        def splice(z, hook, sae=sae, h=h):
            z = z.clone()
            part = z[:, skip_first:] if h is None else z[:, skip_first:, h]
            flat = part.flatten(-2) if h is None else part
            part.copy_(sae.decode(sae.encode(flat)).reshape(part.shape))
            return z

        def ablate(z, hook, h=h):
            z = z.clone()
            if h is None:
                z[:, skip_first:] = 0
            else:
                z[:, skip_first:, h] = 0
            return z

        row = {"clean": clean}
        for name, fn in (("sae", splice), ("ablated", ablate)):
            row[name] = loss_from_layer(model, resid, seqs, l, [(hooks.z(l), fn)], batch_size)
        row["recovered"] = ce_loss_recovered(row["clean"], row["sae"], row["ablated"])
        out[key] = row
    return out


@torch.no_grad()
def sae_quality(
    model: HookedTransformer,
    saes: dict[str, Any],
    stats: LatentStats,
    ce_tokens: Tensor,
    context: int = 128,
    layers: Sequence[int] | None = None,
) -> "pd.DataFrame":  # noqa: F821
    """The standard SAE metrics per SAE: explained variance, L0, dead latents, and CE loss
    recovered (for the SAEs of ``layers``; default all, NaN for the others)."""

    chosen = {k: v for k, v in saes.items() if layers is None or parse_key(k)[0] in layers}
    ce = ce_losses(model, chosen, ce_tokens, context)
    nan = dict.fromkeys(("clean", "sae", "ablated", "recovered"), float("nan"))
    rows = {}
    for key, sae in saes.items():
        ce.setdefault(key, nan)
        alive = stats.alive(key)
        rows[key] = {
            "d_sae": sae.cfg.d_sae,
            "explained variance": stats.ev(key),
            "L0": stats.l0(key),
            "dead latents": int((~alive).sum()),
            "dead fraction": float((~alive).float().mean()),
            "CE clean": ce[key]["clean"],
            "CE with SAE": ce[key]["sae"],
            "CE ablated": ce[key]["ablated"],
            "CE loss recovered": ce[key]["recovered"],
        }
    return pd.DataFrame(rows).T
