"""Seed 003, "Variance Is Not Importance" (Salfati 2026): directions, block linearity, linear block
replacement, rotation quantization and early exit on one model.

- :mod:`~analysis.studies.variance.config`: :class:`VarianceConfig` per profile (:func:`config_for`);
- :mod:`~analysis.studies.variance.seed`: :data:`SEED_RESULTS`, the seed's claims and numbers;
- :mod:`~analysis.studies.variance.run`: the cached experiments, the chapter's steps in order:
  :func:`fits`, :func:`linearity`, :func:`directions`, :func:`ablation`, :func:`replacement`,
  :func:`quantization`, :func:`exits`;
- :mod:`~analysis.studies.variance.results`: the typed results they return (:class:`Fits`,
  :class:`Linearity`, :class:`Directions`, :class:`Quantization`, :class:`Exits`);
- :mod:`~analysis.studies.variance.verdicts`: one verdict function per claim, and :func:`verdicts`,
  every claim's verdict from the steps' results;
- :mod:`~analysis.studies.variance.plots`: the chapter's figures.
"""

from __future__ import annotations

from analysis.studies.variance.blocks import level_per_block
from analysis.studies.variance.config import CONFIGS, TOKENS_PER_UNKNOWN, VarianceConfig, config_for
from analysis.studies.variance.results import Directions, Exits, Fits, LensExit, Linearity, Quantization
from analysis.studies.variance.run import (
    ablation,
    depth_layers,
    directions,
    exits,
    fits,
    linearity,
    quantization,
    replacement,
    tokens,
)
from analysis.studies.variance.seed import ANCHORS, SEED_RESULTS
from analysis.studies.variance.verdicts import verdicts

__all__ = [
    "ANCHORS",
    "SEED_RESULTS",
    "CONFIGS",
    "TOKENS_PER_UNKNOWN",
    "Directions",
    "Exits",
    "Fits",
    "LensExit",
    "Linearity",
    "Quantization",
    "VarianceConfig",
    "ablation",
    "config_for",
    "depth_layers",
    "directions",
    "exits",
    "fits",
    "level_per_block",
    "linearity",
    "quantization",
    "replacement",
    "tokens",
    "verdicts",
]
