"""The oracle and the signals one level down: single attention heads.

The oracle removes each head of ``cfg.head_layers`` evenly spaced layers alone (its ``hook_z``
slice set to zero, :func:`analysis.compress.oracle.head`) and measures the oracle's windows. The
head-level signals are the ones defined per head: weight magnitude, Wanda and the gradient saliency
of :mod:`analysis.wanda`, and the capability chapter's SAE capability density. Each is compared with
the oracle by Spearman's ρ over the measured heads, with an interval that resamples whole layers
(a layer's heads share its input and its output).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
from jaxtyping import Float
from torch import Tensor

from analysis import stats, wanda
from analysis.compress import oracle as oracle_mod
from analysis.studies.synthesis.run import Setup, oracle_cells


def head_layers(n_layers: int, k: int) -> list[int]:
    """``k`` evenly spaced layers (the first and the last among them), or every layer when ``k >= n_layers``."""
    if k <= 0:
        return []
    if k >= n_layers:
        return list(range(n_layers))
    return sorted({round(i * (n_layers - 1) / max(1, k - 1)) for i in range(k)})


def measure_heads(s: Setup) -> oracle_mod.Oracle | None:
    """Every head of :func:`head_layers` removed alone, on the oracle's windows and facts (None when ``head_layers`` is 0)."""
    layers = head_layers(s.model.cfg.n_layers, s.cfg.head_layers)
    if not layers:
        return None
    return oracle_cells(s, oracle_mod.head_units(s.model, layers), {oracle_mod.REMOVE: None}, desc="oracle (heads)")


def head_signals(s: Setup) -> dict[str, Float[Tensor, "layer head"]]:
    """The per-head signals this study computes itself, from the calibration text."""
    model, cfg = s.model, s.cfg
    norms = wanda.input_norms(model, s.calib, cfg.context, cfg.batch_size)
    return {
        "weight magnitude": wanda.magnitude_head_scores(model),
        "Wanda": wanda.wanda_head_scores(model, norms),
        "gradient saliency": wanda.gradient_head_scores(model, s.calib, cfg.context, cfg.batch_size),
    }


def head_prediction(
    maps: Mapping[str, Tensor], measured: oracle_mod.Oracle, n_boot: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """A row per (signal, oracle metric): Spearman ρ over the measured heads with a layer-cluster interval."""
    rows = []
    for metric in ("ppl", "facts"):
        try:
            cost = measured.head_scores(metric).numpy()
        except ValueError:
            continue
        ok = ~np.isnan(cost)
        layers = np.broadcast_to(np.arange(cost.shape[0])[:, None], cost.shape)[ok]
        for name, m in maps.items():
            x = np.asarray(m, dtype=float)[: cost.shape[0]][ok]
            rho = stats.spearman(x, cost[ok])
            lo, hi = (
                stats.cluster_bootstrap_ci(x, cost[ok], layers, n_boot=n_boot, seed=seed)
                if len(set(layers)) > 1
                else (float("nan"), float("nan"))
            )
            rows.append({"signal": name, "oracle": f"remove head ({metric})", "spearman": rho, "low": lo, "high": hi})
    return pd.DataFrame(rows)
