"""Which SAE features survive compression: a frozen SAE as a fixed measurement basis.

An SAE trained on the dense model turns an activation into feature activations. Encode the
activations of the dense model and of a compressed copy *with the same SAE, on the same tokens*,
and every feature gets two time series over those tokens; a feature *survives* when the two
correlate (Pearson r across tokens), i.e. when the compressed model still turns the feature on
where, and about as strongly as, the dense model did. Duan (arXiv 2606.03002, "Perplexity can
miss SAE feature damage under quantization") measures round-to-nearest quantization this way on
Pythia-70M and Gemma-2-2B: at INT6, 62.4% (Pythia) and 51.3% (Gemma) of the active features
survive, on Gemma INT7 degrades 18.7% of them while perplexity improves, and most features that
do not survive are "blurred" (still correlated, below the bar) rather than destroyed.

What is the paper's and what is ours:

- the paper's: a frozen SAE of the full-precision model as the basis; the same tokens through
  both models; per-feature Pearson correlation of the two activation series; the share of the
  *active* features that survive as the headline number (its complement, "degraded"); the
  distinction between blurred and fully damaged features.
- ours (the paper's exact definitions were not available to us; every one is a parameter):
  *active* means the feature fires (activation > 0) on at least ``min_active`` (default 0.1%) of
  the tokens in the dense run, and at least once; *survived* means ``r >= threshold`` (0.9);
  *damaged* means ``r < damaged_below`` (0.5) or ``r`` undefined; *blurred* is in between. A
  feature active in the dense run that is silent (or constant) in the compressed run has no
  Pearson r (NaN) and counts as damaged. Features that fire only after compression are counted
  (``born``) but are not in the share, whose denominator is the dense run's active features.
- also ours: the share's 95% Wilson interval (:func:`analysis.stats.proportion_ci`), which treats
  features as independent draws (they are not quite: one weight touches many features).

:func:`encode_stream` encodes a model's activations at the SAE's hook (run the compressed model
by calling it inside the compression's context, e.g. ``with plan.applied(model): ...``);
:func:`survival` compares two such streams and returns a :class:`Survival`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from analysis.forward import stream
from analysis.stats import proportion_ci

THRESHOLD = 0.9
"""Pearson r at or above which an active feature survives (ours: the paper's value was not available)."""
DAMAGED_BELOW = 0.5
"""Pearson r below which a non-surviving feature counts as damaged rather than blurred (ours)."""
MIN_ACTIVE = 1e-3
"""Share of the dense run's tokens on which a feature must fire to count as active (ours)."""
CATEGORIES = ("survived", "blurred", "damaged", "inactive")


def sae_hook_name(sae: Any) -> str:
    """The hook an sae-lens SAE reads: ``cfg.metadata.hook_name`` (sae-lens 6) or ``cfg.hook_name``
    (older); ``ValueError`` when it records none."""
    name = getattr(getattr(sae.cfg, "metadata", None), "hook_name", None) or getattr(sae.cfg, "hook_name", None)
    if not name:
        raise ValueError("This SAE records no hook name in its cfg; pass hook_name='blocks.{l}.hook_resid_post'.")
    return name


def _as_sae_input(acts: Tensor, sae: Any, hook_name: str) -> Float[Tensor, "n d_in"]:
    """A hook's ``[batch, pos, ...]`` activations as ``[batch * pos, d_in]`` rows for ``sae``: per-head
    hooks (``[batch, pos, head, d_head]``) give the SAE's head, or all heads concatenated."""
    d_in = sae.cfg.d_in
    if acts.ndim == 4:
        head = getattr(getattr(sae.cfg, "metadata", None), "hook_head_index", None)
        acts = acts[:, :, head] if head is not None else acts.flatten(-2)
    if acts.ndim != 3 or acts.shape[-1] != d_in:
        raise ValueError(
            f"{hook_name} gives activations of shape {tuple(acts.shape)}, but the SAE reads width {d_in}; "
            "pass the hook this SAE was trained on."
        )
    return acts.reshape(-1, d_in)


@torch.no_grad()
def encode_stream(
    model: HookedTransformer,
    sae: Any,
    tokens: Int[Tensor, "batch pos"],
    hook_name: str | None = None,
    batch_size: int = 8,
    ignore_token: int | None = None,
) -> Float[Tensor, "token feature"]:
    """The SAE's feature activations (``sae.encode``) of ``model``'s activations at ``hook_name``.

    ``hook_name`` defaults to the SAE's own (:func:`sae_hook_name`). Each forward pass stops after
    the hook's block. Rows are the positions of ``tokens`` flattened row-major (row ``i * pos + j`` is
    sequence ``i``, position ``j``), without the positions holding ``ignore_token`` when it is given
    (e.g. BOS, which the book's SAEs are not trained on). Float32 on the CPU. The model runs as the
    caller left it, so a compression context around the call encodes the compressed model.
    """
    hook_name = hook_name or sae_hook_name(sae)
    tokens = torch.as_tensor(tokens)
    if tokens.ndim != 2 or tokens.numel() == 0:
        raise ValueError(f"tokens must be a non-empty [batch, pos] tensor; got shape {tuple(tokens.shape)}.")
    if tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
        raise ValueError(f"tokens must hold integer token ids; got {tokens.dtype}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1; got {batch_size}.")
    param = next(sae.parameters())
    out = []
    for batch in stream(model, tokens, [hook_name], batch_size):
        x = _as_sae_input(batch.acts[hook_name], sae, hook_name)
        if ignore_token is not None:
            x = x[(batch.tokens != ignore_token).flatten().to(x.device)]
        out.append(sae.encode(x.to(param.device, param.dtype)).float().cpu())
    return torch.cat(out)


def pearson(
    a: Float[Tensor, "token feature"], b: Float[Tensor, "token feature"], chunk: int = 4096
) -> Float[Tensor, " feature"]:
    """Per-column Pearson correlation of ``a`` and ``b`` (float64, ``chunk`` columns at a time); NaN
    where either column is constant, as the correlation is then undefined."""
    _check_pair(a, b)
    r = torch.empty(a.shape[1], dtype=torch.float64)
    for s in range(0, a.shape[1], chunk):
        x, y = a[:, s : s + chunk].double(), b[:, s : s + chunk].double()
        flat = (x.amax(0) == x.amin(0)) | (y.amax(0) == y.amin(0))
        x, y = x - x.mean(0), y - y.mean(0)
        rr = (x * y).sum(0) / ((x * x).sum(0) * (y * y).sum(0)).sqrt()
        r[s : s + chunk] = torch.where(flat, torch.nan, rr.clamp(-1.0, 1.0))
    return r


def _check_pair(dense: Tensor, compressed: Tensor) -> None:
    if dense.ndim != 2 or compressed.ndim != 2:
        raise ValueError(
            f"Pass [token, feature] matrices (encode_stream's output); got shapes {tuple(dense.shape)} and "
            f"{tuple(compressed.shape)}."
        )
    if dense.shape != compressed.shape:
        raise ValueError(
            f"The dense and compressed streams differ in shape, {tuple(dense.shape)} vs {tuple(compressed.shape)}: "
            "encode the same tokens with the same SAE (and the same ignore_token) for both."
        )
    if dense.shape[0] < 2 or dense.shape[1] == 0:
        raise ValueError(f"Need at least 2 tokens and 1 feature to correlate; got shape {tuple(dense.shape)}.")
    if not (torch.isfinite(dense).all() and torch.isfinite(compressed).all()):
        raise ValueError("The streams hold NaN or infinite activations; check the model and SAE dtypes.")


@dataclass(frozen=True, eq=False)
class Survival:
    """Per-feature survival of one compressed run against the dense run (:func:`survival`)."""

    r: Float[Tensor, " feature"]
    """Pearson r across tokens between the dense and compressed activations (NaN where undefined)."""
    active: Bool[Tensor, " feature"]
    """Fires (> 0) on at least ``min_active`` of the dense run's tokens, and at least once."""
    survived: Bool[Tensor, " feature"]
    """Active and ``r >= threshold``."""
    damaged: Bool[Tensor, " feature"]
    """Active and ``r < damaged_below`` or undefined (silent or constant after compression)."""
    density: Float[Tensor, " feature"]
    """Share of tokens on which the feature fires in the dense run."""
    density_compressed: Float[Tensor, " feature"]
    """The same in the compressed run."""
    peak: Float[Tensor, " feature"]
    """The feature's largest activation in the dense run (the paper's strongest single predictor of survival)."""
    threshold: float
    damaged_below: float
    min_active: float
    n_tokens: int

    @property
    def blurred(self) -> Bool[Tensor, " feature"]:
        """Active, neither survived nor damaged: ``damaged_below <= r < threshold``."""
        return self.active & ~self.survived & ~self.damaged

    @property
    def n_active(self) -> int:
        return int(self.active.sum())

    @property
    def n_survived(self) -> int:
        return int(self.survived.sum())

    @property
    def share(self) -> float:
        """Share of the active features that survive (NaN when none is active)."""
        return self.n_survived / self.n_active if self.n_active else float("nan")

    @property
    def ci(self) -> tuple[float, float]:
        """95% Wilson interval of :attr:`share`."""
        return proportion_ci(self.n_survived, self.n_active)

    @property
    def degraded_share(self) -> float:
        """``1 - share``: the active features that did not survive (the paper's "degraded")."""
        return 1.0 - self.share

    @property
    def born(self) -> int:
        """Features inactive in the dense run that pass ``min_active`` in the compressed one (not in the share)."""
        return int((~self.active & (self.density_compressed >= self.min_active) & (self.density_compressed > 0)).sum())

    def category(self) -> np.ndarray:
        """Per feature, one of :data:`CATEGORIES`."""
        out = np.full(len(self.r), "inactive", dtype=object)
        out[self.blurred.numpy()] = "blurred"
        out[self.damaged.numpy()] = "damaged"
        out[self.survived.numpy()] = "survived"
        return out

    def frame(self) -> pd.DataFrame:
        """One row per feature: ``feature``, ``r``, ``category``, ``active``, ``density``,
        ``density_compressed``, ``peak``."""
        return pd.DataFrame(
            {
                "feature": np.arange(len(self.r)),
                "r": self.r.numpy(),
                "category": self.category(),
                "active": self.active.numpy(),
                "density": self.density.numpy(),
                "density_compressed": self.density_compressed.numpy(),
                "peak": self.peak.numpy(),
            }
        )

    def summary(self) -> dict[str, float | int]:
        """The headline numbers: counts, the surviving share and its interval, the blurred and damaged
        shares of the active features, and the definitions they used."""
        low, high = self.ci
        n = self.n_active
        return {
            "tokens": self.n_tokens,
            "features": len(self.r),
            "active": n,
            "survived": self.n_survived,
            "share": self.share,
            "low": low,
            "high": high,
            "degraded": self.degraded_share,
            "blurred": int(self.blurred.sum()) / n if n else float("nan"),
            "damaged": int(self.damaged.sum()) / n if n else float("nan"),
            "born": self.born,
            "threshold": self.threshold,
            "damaged_below": self.damaged_below,
            "min_active": self.min_active,
        }


def survival(
    dense: Float[Tensor, "token feature"],
    compressed: Float[Tensor, "token feature"],
    threshold: float = THRESHOLD,
    min_active: float = MIN_ACTIVE,
    damaged_below: float = DAMAGED_BELOW,
) -> Survival:
    """Which features of ``dense`` (:func:`encode_stream` of the dense model) survive in ``compressed``
    (the same SAE and tokens through the compressed model); the definitions are in the module docstring."""
    if not -1.0 <= damaged_below <= threshold <= 1.0:
        raise ValueError(f"Need -1 <= damaged_below <= threshold <= 1; got {damaged_below} and {threshold}.")
    if not 0.0 <= min_active <= 1.0:
        raise ValueError(f"min_active is a share of tokens in [0, 1]; got {min_active}.")
    r = pearson(dense, compressed)
    density = (dense > 0).double().mean(0)
    density_c = (compressed > 0).double().mean(0)
    active = (density >= min_active) & (density > 0)
    defined = ~torch.isnan(r)
    survived = active & defined & (r >= threshold)
    damaged = active & (~defined | (r < damaged_below))
    return Survival(
        r=r,
        active=active,
        survived=survived,
        damaged=damaged,
        density=density,
        density_compressed=density_c,
        peak=dense.double().amax(0),
        threshold=float(threshold),
        damaged_below=float(damaged_below),
        min_active=float(min_active),
        n_tokens=int(dense.shape[0]),
    )
