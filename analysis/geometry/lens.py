"""Lenses and early exit: how soon is a token's prediction settled?

The **logit lens** (nostalgebraist 2020) decodes an intermediate residual state ``h_l`` with the
model's own final norm and unembedding. The **tuned lens** (Belrose et al. 2023) first maps
``h_l`` through a learned affine *translator*; Belrose et al. train it by SGD on the KL to the final
logits. We fit the translator in closed form instead (a small CPU budget): the least-squares
affine map from ``h_l`` to the final residual ``h_{L-1}`` (:mod:`analysis.geometry.linearity`), and
report the KL to the final logits it reaches, so the shortcut is visible.

**Early exit** (CALM, Schuster et al. 2022) stops a token at the first layer whose lens is
confident: max probability ``>= threshold``. :func:`early_exit` reports, per threshold, the share
of *easy* tokens (exited before the last layer with the same top-1 prediction as the full model),
the share of blocks skipped, and the perplexity when each token's prediction really comes from its
exit layer. That perplexity keeps every later token's attention to full-depth states (CALM copies
exited states upward instead), so it measures the prediction error of exiting, not the cascade.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from analysis import hooks, stats
from analysis.forward import final_logits, stream, windows
from analysis.geometry.linearity import LinearMap


@dataclass(frozen=True)
class LensStats:
    """Per-layer, per-token lens facts on scored positions: every tensor is ``[n_layers, n_tokens]``."""

    confidence: Float[Tensor, "layer n"]
    """The lens's max probability."""
    top: Int[Tensor, "layer n"]
    """The lens's top-1 token."""
    logp_target: Float[Tensor, "layer n"]
    """Log-probability the lens gives the actual next token."""
    kl_to_final: Float[Tensor, "layer n"]
    """``KL(p_final || p_lens)`` in nats (0 at the last layer)."""


@torch.inference_mode()
def lens_stats(
    model: HookedTransformer,
    tokens: Int[Tensor, " n"],
    context: int = 256,
    batch_size: int = 4,
    translators: Mapping[int, LinearMap] | None = None,
    desc: str = "lens",
) -> LensStats:
    """:class:`LensStats` of the logit lens (``translators=None``) or of a tuned lens (a translator per
    layer; layers without one use the logit lens) on disjoint windows of ``tokens``."""
    wins = windows(tokens, context)
    L = model.cfg.n_layers
    names = [hooks.resid_post(l) for l in range(L)]
    parts: list[list[Tensor]] = [[], [], [], []]
    for batch in stream(model, wins, names, batch_size, desc):
        cache, target = batch.acts, batch.tokens[:, 1:].reshape(-1)
        final = final_logits(model, cache[names[-1]][:, :-1]).reshape(len(target), -1).float().log_softmax(-1)
        rows = [[], [], [], []]
        for l, name in enumerate(names):
            h = cache[name][:, :-1].reshape(len(target), -1)
            if translators is not None and l in translators and l < L - 1:
                h = translators[l](h)
            logp = final if l == L - 1 else final_logits(model, h).float().log_softmax(-1)
            conf, top = logp.max(-1)
            rows[0].append(conf.exp())
            rows[1].append(top)
            rows[2].append(logp.gather(-1, target[:, None])[:, 0])
            rows[3].append(F.kl_div(logp, final, log_target=True, reduction="none").sum(-1))
        for part, row in zip(parts, rows):
            part.append(torch.stack(row).cpu())
    return LensStats(*(torch.cat(p, dim=1) for p in parts))


@dataclass(frozen=True)
class ExitResult:
    """Early exit at one threshold."""

    threshold: float
    easy_share: float
    """Tokens whose lens, at some layer before the last, already has the full model's top-1 with
    confidence at least ``threshold`` (an oracle count: it uses the final prediction)."""
    exit_share: float
    """Tokens exited before the last layer at all."""
    compute_saved: float
    """Mean share of blocks skipped per token."""
    nll: float
    """Mean NLL when each token is predicted at its exit layer (nats)."""
    full_nll: float
    exit_layer: Int[Tensor, " n"]
    """Per token, the layer a confidence-only rule exits at."""
    easy_layer: Int[Tensor, " n"]
    """Per token, the first layer agreeing confidently with the final top-1 (the last layer if none)."""

    @property
    def delta_ppl(self) -> float:
        return math.exp(self.nll) - math.exp(self.full_nll)


def exit_layers(stats: LensStats, threshold: float) -> Int[Tensor, " n"]:
    """Per token, the first layer whose lens confidence reaches ``threshold`` (the last layer if none)."""
    if not 0.0 <= threshold:
        raise ValueError(f"threshold must be >= 0, got {threshold}.")
    hit = stats.confidence[:-1] >= threshold  # the last layer always "exits"
    hit = torch.cat([hit, torch.ones(1, hit.shape[1], dtype=torch.bool)])
    return hit.float().argmax(0)  # first True (argmax returns the first maximum)


def easy_layers(stats: LensStats, threshold: float) -> Int[Tensor, " n"]:
    """Per token, the first layer whose lens top-1 equals the final top-1 with confidence ``>= threshold``
    (the last layer if none before it)."""
    ok = (stats.confidence[:-1] >= threshold) & (stats.top[:-1] == stats.top[-1])
    ok = torch.cat([ok, torch.ones(1, ok.shape[1], dtype=torch.bool)])
    return ok.float().argmax(0)


def early_exit(stats: LensStats, threshold: float) -> ExitResult:
    """:class:`ExitResult` at ``threshold`` (``> 1`` never exits early): the easy share by
    :func:`easy_layers`; exit share, compute saved and NLL by the confidence-only :func:`exit_layers`."""
    L, n = stats.confidence.shape
    if n == 0:
        raise ValueError("No scored tokens; pass a non-empty token set.")
    layer = exit_layers(stats, threshold)
    easy = easy_layers(stats, threshold)
    cols = torch.arange(n)
    early = layer < L - 1
    nll = -stats.logp_target[layer, cols].double().mean()
    return ExitResult(
        threshold=float(threshold),
        easy_share=float((easy < L - 1).float().mean()),
        exit_share=float(early.float().mean()),
        compute_saved=float(((L - 1 - layer).float() / L).mean()),
        nll=float(nll),
        full_nll=float(-stats.logp_target[-1].double().mean()),
        exit_layer=layer,
        easy_layer=easy,
    )


def exit_curve(stats: LensStats, thresholds: Sequence[float]) -> list[ExitResult]:
    """:func:`early_exit` at each threshold."""
    return [early_exit(stats, t) for t in thresholds]


def window_share(flags, per_window: int, level: float = 0.95) -> tuple[float, float, float, int]:
    """The share of true ``flags`` (one per scored token, in window order, ``per_window`` tokens a
    window) with a cluster-robust t interval that treats each window as one unit
    (:func:`analysis.stats.cluster_t`): tokens of one window share a document and a context, so
    they are not independent. Returns ``(share, lo, hi, windows)``."""
    if per_window < 1:
        raise ValueError(f"per_window must be a positive token count, got {per_window}.")
    x = np.asarray(flags, dtype=float).ravel()
    if len(x) == 0:
        raise ValueError("No scored tokens; pass a non-empty token set.")
    share, lo, hi, _, g = stats.cluster_t(x, np.arange(len(x)) // per_window, level)
    return share, lo, hi, g


def easy_share_ci(result: ExitResult, stats_: LensStats, per_window: int) -> tuple[float, float, int]:
    """A 95% interval of the easy share that resamples windows, not tokens (:func:`window_share`;
    ``per_window``: scored tokens per window, ``context - 1`` for :func:`lens_stats`), and the
    number of windows it stands on: ``(lo, hi, windows)``."""
    L = stats_.confidence.shape[0]
    _, lo, hi, g = window_share((result.easy_layer < L - 1).numpy(), per_window)
    return lo, hi, g
