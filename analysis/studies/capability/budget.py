"""Budget allocation: a fixed mean sparsity spread over heads by an importance signal, each
allocation scored by perplexity, fact recall and a probe on pooled features."""

from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch
from jaxtyping import Float
from scipy.stats import rankdata
from torch import Tensor
from transformer_lens import HookedTransformer

from analysis import compress, probing
from analysis.components import component
from analysis.evaluate import fact_recall, lm_score
from analysis.forward import text_features
from analysis.studies.capability.config import DensityConfig
from analysis.studies.capability.results import Budget

# ---- Budget allocation ---------------------------------------------------------------------------


def allocate(
    importance: Float[Tensor, "layer head"] | None,
    mean: float,
    spread: float = 0.5,
    shape: tuple[int, int] | None = None,
    seed: int | None = None,
) -> Tensor:
    """Per-head sparsities with mean exactly ``mean``: linear in the importance rank, from
    ``mean + δ`` (least important) to ``mean - δ`` (most important), ``δ = min(spread·mean, 0.99 - mean, mean)``.

    ``importance=None`` gives the uniform allocation; ``seed`` shuffles the ranks (random).
    """
    if importance is None:
        return torch.full(shape, float(mean))
    n = importance.numel()
    ranks = torch.as_tensor(rankdata(importance.flatten().double().numpy()) - 1)  # 0 = least important
    if seed is not None:
        ranks = ranks[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]
    delta = min(spread * mean, 0.99 - mean, mean)
    s = mean + delta * (1 - 2 * ranks / max(1, n - 1))
    return (s - s.mean() + mean).view(importance.shape).float()


def allocations(
    density: Tensor, wanda: Tensor, mean: float, spread: float, n_random: int = 1, seed: int = 0
) -> dict[str, Tensor]:
    """The four strategies at a matched mean sparsity: capability-guided, Wanda-guided, uniform, random."""
    out = {
        "capability": allocate(density, mean, spread),
        "wanda": allocate(wanda, mean, spread),
        "uniform": allocate(None, mean, shape=tuple(density.shape)),
    }
    for r in range(n_random):
        out["random" if n_random == 1 else f"random {r}"] = allocate(density, mean, spread, seed=seed + r)
    return out


def head_sparsity_plan(fractions: Float[Tensor, "layer head"]) -> compress.CompressionPlan:
    """A plan giving every layer's attention :class:`analysis.compress.HeadSparsity` at ``fractions``."""
    return compress.CompressionPlan(
        {component(l, "attn"): [compress.HeadSparsity(tuple(map(float, row)))] for l, row in enumerate(fractions)}
    )


PROBE_HOOK = "ln_final.hook_normalized"
"""The probe's features: the final-norm residual, mean-pooled over each text's tokens."""


@torch.no_grad()
def pooled_features(
    model: HookedTransformer, texts: Sequence[str], batch_size: int = 8, max_len: int = 128
) -> Float[Tensor, "n d"]:
    """Mean over each text's tokens (BOS included, at most ``max_len``) of :data:`PROBE_HOOK`."""
    return text_features(model, texts, [PROBE_HOOK], "mean", batch_size, max_len)[PROBE_HOOK]


def probe_accuracy(features: Float[Tensor, "n d"], labels: Sequence[int], n_train: int, seed: int = 0) -> float:
    """Held-out accuracy of an L2-regularised logistic probe (:func:`analysis.probing.fit_probe`)
    trained on the first ``n_train`` rows and tested on the rest."""
    n = len(features)
    return probing.fit_probe(
        features, torch.as_tensor(list(labels)).long(), torch.arange(n_train), torch.arange(n_train, n), seed=seed
    )


@torch.no_grad()
def evaluate_model(
    model: HookedTransformer,
    eval_tokens: Tensor,
    prompts: Sequence[str],
    targets: Sequence[str],
    probe_texts: Sequence[str],
    probe_labels: Sequence[int],
    context: int = 128,
    probe: bool = True,
) -> tuple[dict[str, float], dict[str, list]]:
    """Perplexity (with its window-bootstrap interval), fact recall and probe accuracy (NaN with
    ``probe=False``, which saves the costliest forward) of ``model`` as it stands, and the per-item
    results behind them for paired tests: ``{"window_nll", "window_tokens", "recall"}`` (summed
    NLL and tokens per window, 0/1 per fact)."""
    score = lm_score(model, eval_tokens, context=context, desc="perplexity")
    hits = fact_recall(model, list(prompts), list(targets)).float()
    acc = float("nan")
    if probe:
        acc = probe_accuracy(pooled_features(model, probe_texts), probe_labels, n_train=len(probe_texts) // 2)
    lo, hi = score.perplexity_interval() if len(score.window_nll) >= 2 else (float("nan"), float("nan"))
    row = {
        "perplexity": score.perplexity,
        "perplexity low": lo,
        "perplexity high": hi,
        "fact recall": hits.mean().item(),
        "probe accuracy": acc,
    }
    items = {"window_nll": list(score.window_nll), "window_tokens": list(score.window_tokens), "recall": hits.tolist()}
    return row, items


def budget_comparison(
    model: HookedTransformer,
    density: Tensor,
    wanda: Tensor,
    cfg: DensityConfig,
    eval_tokens: Tensor,
    prompts: Sequence[str],
    targets: Sequence[str],
    probe_texts: Sequence[str],
    probe_labels: Sequence[int],
    context: int = 128,
) -> Budget:
    """Each allocation strategy at each mean sparsity (``cfg.n_random`` random seeds, scored by
    perplexity and fact recall only), applied to every head, then evaluated: one row per model,
    and per (mean, strategy) the per-item results of :func:`evaluate_model`."""
    args = (eval_tokens, prompts, targets, probe_texts, probe_labels, context)
    row, item = evaluate_model(model, *args)
    rows, items = [{"mean sparsity": 0.0, "strategy": "dense", **row}], {(0.0, "dense"): item}
    for mean in cfg.budget_sparsities:
        for name, fr in allocations(density, wanda, mean, cfg.budget_spread, cfg.n_random, cfg.seed).items():
            with head_sparsity_plan(fr).applied(model) as report:
                row, item = evaluate_model(model, *args, probe=not name.startswith("random"))
            rows.append({"mean sparsity": mean, "strategy": name, **row, "attention bits / dense": report.ratio})
            items[(mean, name)] = item
    return Budget(pd.DataFrame(rows), items)


def pool_random(frame: pd.DataFrame) -> pd.DataFrame:
    """The budget table with every ``random r`` seed labelled ``random`` (a plot then shows their
    mean and spread as one strategy)."""
    out = frame.copy()
    out["strategy"] = out["strategy"].where(~out["strategy"].str.startswith("random"), "random")
    return out
