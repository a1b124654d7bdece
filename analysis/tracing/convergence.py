"""How many noise samples a trace needs: the AIE's convergence in the number of samples.

ROME (Meng et al. 2022) averages every corrupted run over 10 Gaussian noise samples; each
sample is one more forward pass per restored state, so on a CPU the number is the main cost.
What it buys is less *sampling noise*: a fact's indirect effect measured with ``n`` samples
differs from its limit by noise of variance ``sigma_w^2 / n``, on top of the real variation
between facts, ``sigma_b^2``, that no number of samples removes. The AIE's confidence interval
over facts is built from both, so once ``sigma_w^2 / n`` is a small share of
``sigma_b^2 + sigma_w^2 / n`` more samples barely narrow it, and the work is better spent on
more facts.

:func:`sample_convergence` measures this on facts traced with ``N`` samples (exact traces keep
each sample's probabilities, :attr:`~analysis.tracing.TraceResult.sample_restored`): for every
``n <= N`` the sampling share of the variance, and how far the AIE map from ``n`` samples lies
from the ``N``-sample map (random subsets of the samples, corrected for the reference's own
sampling noise). :func:`choose_samples` picks the smallest ``n`` whose sampling share is below
a stated bound for every kind.
"""

from __future__ import annotations

import math
from typing import Sequence

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from analysis.hooks import hook_kind
from analysis.tracing.aie import AIEResult


def per_sample_effects(aie: AIEResult, kind: str) -> Float[Tensor, "fact sample role layer"]:
    """Each fact's indirect effect by role and layer, per noise sample (NaN where a role is absent)."""
    if not aie.traces:
        raise ValueError("No fact was traced; trace some facts with several noise samples first.")
    n = {t.n_samples for t in aie.traces}
    if len(n) != 1:
        raise ValueError(f"The traces have different numbers of noise samples {sorted(n)}; trace them alike.")
    N = n.pop()
    return torch.stack([torch.stack([t.with_samples([i]).role_effects(kind) for i in range(N)]) for t in aie.traces])


def variance_parts(effects: Float[Tensor, "fact sample role layer"]) -> tuple[float, float]:
    """``(sigma_b^2, sigma_w^2)`` summed over the role x layer cells: the variance between facts of
    their limiting effects and the variance between one fact's noise samples."""
    F, N = effects.shape[:2]
    if F < 2 or N < 2:
        raise ValueError(f"Variance parts need at least 2 facts and 2 samples (have {F} and {N}).")
    within = effects.var(dim=1).nanmean(0)  # [role, layer], unbiased over samples
    between = (effects.mean(1).var(dim=0) - within / N).clamp(min=0)
    ok = ~(within.isnan() | between.isnan())
    return float(between[ok].sum()), float(within[ok].sum())


def sample_convergence(
    aie: AIEResult, kinds: Sequence[str] | None = None, n_subsets: int = 20, seed: int = 0
) -> pd.DataFrame:
    """The convergence curve of facts traced with ``N`` noise samples, one row per ``n = 1..N``.

    Per kind two columns: ``<hook> sampling share``, the share ``(sigma_w^2/n) / (sigma_b^2 +
    sigma_w^2/n)`` of the per-fact variance that is sampling noise (:func:`variance_parts`); and
    ``<hook> map error``, the root-mean-square distance of the AIE map (role x layer) from ``n``
    random samples to the map from all ``N``, averaged over ``n_subsets`` subsets, scaled by
    ``sqrt((1/n) / (1/n - 1/N))`` so it estimates the distance to the limit rather than to the
    ``N``-sample map (NaN at ``n = N``), and divided by the largest |AIE| of the map.
    """
    kinds = [hook_kind(k) for k in (kinds or aie.kinds)]
    N = aie.traces[0].n_samples if aie.traces else 0
    if N < 2:
        raise ValueError(f"A convergence curve needs traces with at least 2 noise samples (have {N}).")
    gen = torch.Generator().manual_seed(seed)
    subsets = {n: [torch.randperm(N, generator=gen)[:n].tolist() for _ in range(n_subsets)] for n in range(1, N)}
    rows: dict[int, dict[str, float]] = {n: {} for n in range(1, N + 1)}
    for kind in kinds:
        between, within = variance_parts(per_sample_effects(aie, kind))
        full = aie.mean(kind)
        scale = float(full.nan_to_num(0).abs().max()) or float("nan")
        for n in range(1, N + 1):
            rows[n][f"{kind} sampling share"] = (within / n) / (between + within / n) if between + within > 0 else 0.0
            if n == N:
                rows[n][f"{kind} map error"] = float("nan")
                continue
            devs = [float((aie.with_samples(sub).mean(kind) - full).pow(2).nanmean().sqrt()) for sub in subsets[n]]
            rows[n][f"{kind} map error"] = sum(devs) / len(devs) * math.sqrt((1 / n) / (1 / n - 1 / N)) / scale
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("noise samples")


def choose_samples(curve: pd.DataFrame, max_share: float = 0.1) -> int | None:
    """The fewest noise samples whose sampling share is at most ``max_share`` for every kind of a
    :func:`sample_convergence` curve.

    The share falls as ``(r/n) / (1 + r/n)`` with ``r = sigma_w^2 / sigma_b^2`` (read off the
    curve at ``n = 1``), so the answer is ``ceil(r (1 - max_share) / max_share)``, also beyond the
    ``N`` samples traced; None when a kind has no variance between facts (``r`` infinite).
    """
    if not 0 < max_share < 1:
        raise ValueError(f"max_share must lie in (0, 1), got {max_share}.")
    shares = curve.loc[1, [c for c in curve.columns if c.endswith("sampling share")]]
    if shares.empty:
        raise ValueError("The curve has no 'sampling share' columns; build it with sample_convergence().")
    if (shares >= 1).any():
        return None
    r = shares / (1 - shares)
    return max(1, int(math.ceil(float((r * (1 - max_share) / max_share).max()) - 1e-9)))
