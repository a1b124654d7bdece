"""What the AdaptiveCompress study measured, as the chapter reads it: :class:`AdaptiveResults`.

One row per SAE in ``metrics`` (SAEBench's core metrics, :mod:`analysis.sae.saebench`), one per logged
training step in ``curves``, one per sparse probe in ``probes``; every SAE reads ``hook_resid_post``
of the layers in ``layers``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True, eq=False)
class AdaptiveResults:
    """Everything the chapter shows (:func:`~analysis.studies.adaptive.run.run`), for one profile."""

    layers: list[int]
    """Our layers at the seed's relative depths (``blocks.{l}.hook_resid_post``)."""
    probe_layer: int
    """The middle layer: the ablations train and the probes read there."""
    metrics: pd.DataFrame
    """One row per (layer, sae, seed): ``k`` (TopK/BatchTopK only), ``L0``, ``MSE``, ``explained variance``,
    ``FVU``, ``dead fraction``, ``dense fraction``, ...; KL and CE columns on the first seed only."""
    curves: pd.DataFrame
    """One row per (layer, sae, seed, logged step): ``step`` and the training losses (``mse_loss``, ...)."""
    probes: pd.DataFrame
    """One row per (task, seed, class, features, k): ``accuracy`` of the probe on held-out texts."""
    tokens: dict[str, int]
    """Tokens measured on: ``train``, ``held-out`` (BOS excluded) and ``KL/CE``."""
    skip_only: dict[int, float]
    """Per layer: the explained variance of ``x̂ = 0.1 x``, the skip alone (sae-lens's formula)."""
