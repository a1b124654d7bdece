"""What the variance chapter reads from the study's runners, as frozen values read by attribute.

The runners cache plain dicts (the layout results written before this module existed keep); each
runner turns its dict into one of these on the way out. The per-block, per-cell tables
(:func:`~analysis.studies.variance.linearity`, :func:`~analysis.studies.variance.ablation`,
:func:`~analysis.studies.variance.replacement`) are returned as pandas DataFrames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from jaxtyping import Float, Int
from torch import Tensor

from analysis.compress.linear_block import BlockMap
from analysis.geometry import PCA, LinearMap


@dataclass(frozen=True, eq=False)
class Fits:
    """One streamed pass over training-split text (:func:`~analysis.studies.variance.fits`)."""

    frame: pd.DataFrame
    """Per block (index ``block``): in-sample linearity scores with and without the residual, the
    ridge of the full map, training tokens per unknown, update variance in the top 16 components."""
    full: dict[int, BlockMap]
    """Per block: the full ``d x d`` affine map from ``blocks.l.hook_resid_pre`` to ``hook_resid_post``."""
    ranked: dict[int, BlockMap]
    """Per block among the last ``max(cfg.multi_blocks)``: the rank-r map at the seed's compression."""
    lens: dict[int, LinearMap]
    """Per block but the last: the least-squares tuned-lens translator to the final stream."""
    pca: dict[int, PCA]
    """Per layer: principal components of ``blocks.l.hook_resid_pre``."""


@dataclass(frozen=True, eq=False)
class Directions:
    """Rogue dimensions and subspace overlap per layer (:func:`~analysis.studies.variance.directions`)."""

    frame: pd.DataFrame
    """Per layer (index ``layer``): rogue dimensions, ``cos²`` of principal angles, CCA statistics."""
    gradient: dict[int, Float[Tensor, "d k"]]
    """Per layer: the top eigenvectors of the loss-gradient covariance at ``blocks.l.hook_resid_pre``."""
    readout: Float[Tensor, "d k"]
    """The top ``cfg.k_overlap`` left singular vectors of ``diag(w_final) W_U``."""
    windows: pd.DataFrame | None = None
    """One row per (``layer``, ``window``) of ``cfg.cca_tokens`` held-out tokens: the mean canonical
    correlation of the top-k variance subspace with the top-k gradient subspace (``CCA gradient``)
    and with a random k-subspace drawn afresh for each row (``CCA random``)."""
    removal: pd.DataFrame | None = None
    """One row per (``layer``, ``kind``): the per-window ``window nll`` / ``window tokens`` on
    ``cfg.gap_tokens`` held-out tokens with the top ``cfg.k_overlap`` directions of ``kind``
    (``variance``, ``gradient``) removed at each ablation depth, and the unablated model
    (``layer`` -1, ``kind`` ``none``)."""


@dataclass(frozen=True, eq=False)
class Quantization:
    """Direct, rotated and factored RTN (:func:`~analysis.studies.variance.quantization`)."""

    ppl: pd.DataFrame
    """One row per (scheme, bits), the unquantized model first: loss, perplexity, bits per weight,
    and the per-window ``window nll`` / ``window tokens`` for paired comparisons."""
    amplification: pd.DataFrame
    """One row per (weight, bits), with its ``layer``: direct RTN's error and the factors' and product's
    errors (:func:`analysis.compress.rotation.amplification`)."""


@dataclass(frozen=True, eq=False)
class LensExit:
    """One lens's early exit at the fixed threshold ``cfg.exit_threshold``."""

    kl: Float[np.ndarray, " layer"]
    """Mean KL of the lens's prediction to the final logits, per layer."""
    exit_layers: Int[np.ndarray, " token"]
    """Per token, the first layer whose lens is confident enough (the confidence rule)."""
    easy_layers: Int[np.ndarray, " token"]
    """Per token, the first layer that already has the final top-1 token confidently."""
    easy_share: float
    easy_low: float
    easy_high: float
    """The easy share and its 95% interval, resampling windows (a cluster-robust t interval)."""
    n: int
    """Tokens scored."""
    windows: int = 0
    """Windows the interval resamples (0 in results cached before windows were the unit)."""

    @classmethod
    def from_dict(cls, d: dict) -> LensExit:
        """From the cached dict (``kl``, ``exit layers``, ``easy layers``, ``easy``: share, low, high;
        ``n``; ``windows``)."""
        return cls(d["kl"], d["exit layers"], d["easy layers"], *d["easy"], d["n"], d.get("windows", 0))


@dataclass(frozen=True, eq=False)
class Exits:
    """The logit and tuned lens, early exit per threshold (:func:`~analysis.studies.variance.exits`)."""

    logit: LensExit
    tuned: LensExit
    curve: pd.DataFrame
    """One row per (lens, threshold): easy share, exit share, compute saved, ΔPPL, perplexity."""

    @property
    def lenses(self) -> dict[str, LensExit]:
        """Each lens by the name the ``curve`` table's ``lens`` column gives it."""
        return {"logit lens": self.logit, "tuned lens": self.tuned}

    @classmethod
    def from_dict(cls, d: dict) -> Exits:
        """From the cached dict (``logit lens``, ``tuned lens``, ``curve``)."""
        return cls(LensExit.from_dict(d["logit lens"]), LensExit.from_dict(d["tuned lens"]), d["curve"])


@dataclass(frozen=True, eq=False)
class Linearity:
    """Block linearity per position convention (:func:`~analysis.studies.variance.linearity`)."""

    frames: dict[str, pd.DataFrame]
    """Per convention (``"all positions"``, ``"position 0 left out"``), per block (index ``block``):
    in-sample scores with and without the residual, the fit's ridge and tokens per unknown, and the
    pooled held-out ``R² {output, update}, {clean, replaced}``."""
    windows: pd.DataFrame
    """One row per (``convention``, ``upstream``, ``block``): per held-out window, the map's squared
    error (``window sse``) and the squared deviations of the output and of the update from their
    pooled mean (``window sst output``, ``window sst update``)."""

    def window(self, convention: str, upstream: str, block: int) -> pd.Series:
        """The row of :attr:`windows` for one convention, upstream and block."""
        w = self.windows
        return w[(w["convention"] == convention) & (w["upstream"] == upstream) & (w["block"] == block)].iloc[0]
