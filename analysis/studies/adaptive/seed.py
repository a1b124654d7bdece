"""Seed 000's numbers (AdaptiveCompress on Gemma-2-2B), as the seed reports them, and the rows that set
them beside ours in the chapter's tables."""

from __future__ import annotations

from typing import Any

import pandas as pd

SEED_RESULTS: dict[str, Any] = {
    "paper": "AdaptiveCompress: dynamic feature selection for interpretable LM compression (seed 000)",
    "model": "gemma-2-2b",
    "layers": (5, 12, 19),
    "n_layers": 26,
    "d_model": 2304,
    "MSE": 47.25,
    "L0": 0.0,
    "explained variance": -0.785,
    "KL": 15.375,
    "top-1 (baseline -> ours)": (68.43, 70.00),
    "top-5 (baseline -> ours)": (77.46, 82.00),
    "top-50 (baseline -> ours)": (90.03, 93.00),
    "AG News": 93.75,
    "Amazon": 88.32,
    "Europarl": 99.94,
    "GitHub": 96.90,
}
"""The seed's numbers (theirs, not ours); the chapter prints them from here."""

SEED_KS = (1, 5, 50)
"""The ``k`` of the seed's top-k sparse-probing numbers."""


def core_row() -> pd.Series:
    """The seed's core metrics under our column names (:func:`~analysis.studies.adaptive.verdicts.metric_summary`)."""
    columns = {"L0": "L0", "MSE": "MSE", "explained variance": "explained variance", "kl_div_with_sae": "KL"}
    return pd.Series({ours: SEED_RESULTS[theirs] for ours, theirs in columns.items()}, name="seed 000 (Gemma-2-2B)")


def probing_rows() -> pd.DataFrame:
    """The seed's top-k probing accuracy (a fraction): rows baseline and AdaptiveCompress, columns k."""
    pairs = [SEED_RESULTS[f"top-{k} (baseline -> ours)"] for k in SEED_KS]
    frame = pd.DataFrame(
        {"seed baseline": [p[0] for p in pairs], "seed AdaptiveCompress": [p[1] for p in pairs]}, index=list(SEED_KS)
    )
    return frame.T / 100
