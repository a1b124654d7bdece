"""What the factorization study's steps return, read by attribute: the decoder grid with the per-window
and per-item scores behind each of its numbers, and the probe grids with the datasets they probed.

The paired tests of :mod:`~analysis.studies.factorization.verdicts` compare two cells unit by unit
(evaluation windows for perplexity, questions for accuracy, probe items for probes), so a result
keeps those units beside the table that summarises them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from analysis.probing import ProbeResult
from analysis.studies.factorization.config import METHOD_LABELS

Cell = tuple[str, float]
"""A grid cell: ``(method, ratio)``; ``("none", 0.0)`` is the uncompressed model."""


@dataclass(frozen=True)
class FactScreen:
    """Which known facts judge the compressed decoders (:func:`~analysis.studies.factorization.evaluation.eval_facts`)."""

    split: str
    """Where the facts come from (``'fact_splits(...)["eval"]'``)."""
    n_total: int
    """Facts screened."""
    n_eval_known: int
    """Known facts of the split, before :attr:`~analysis.studies.factorization.config.FactorConfig.max_fact_mc`."""


@dataclass(frozen=True)
class CellScores:
    """The per-window and per-item scores of one decoder cell (the units of the paired tests)."""

    window_nll: list[float]
    """Summed next-token loss of each evaluation window, ``[n_windows]``."""
    window_tokens: list[int]
    """Tokens scored in each window, ``[n_windows]``."""
    fact_mc: list[bool]
    """Per fact question: is the highest-likelihood choice the true one."""
    mmlu: list[bool]
    """Per MMLU question (empty where MMLU was not scored)."""
    fact_recall: list[bool]
    """Per known fact: is it still recalled."""

    @classmethod
    def from_units(cls, units: dict[str, Any]) -> CellScores:
        """From a cached cell's ``"units"`` (:func:`~analysis.studies.factorization.run.score_decoder`)."""
        return cls(units["window_nll"], units["window_tokens"], units["fact mc"], units["mmlu"], units["fact recall"])

    def hits(self, metric: str) -> list[bool]:
        """Per-item correctness on ``metric``: ``"fact mc"``, ``"mmlu"`` or ``"fact recall"``."""
        return {"fact mc": self.fact_mc, "mmlu": self.mmlu, "fact recall": self.fact_recall}[metric]

    @property
    def perplexity(self) -> float:
        """Perplexity from the per-window NLL sums and token counts."""
        return math.exp(sum(self.window_nll) / sum(self.window_tokens))


@dataclass(frozen=True)
class DecoderGrid:
    """The decoder grid (:func:`~analysis.studies.factorization.run.decoder_grid`)."""

    frame: pd.DataFrame
    """One row per cell: method (its label), ratio, perplexity, ppl low, ppl high, fact mc acc, mmlu acc,
    fact recall and removed (the share of MLP parameters)."""
    units: dict[Cell, CellScores]
    """``{(method label, ratio): scores}``, the units behind each row."""


@dataclass(frozen=True)
class ProbeGrid:
    """Probes on every layer of each cell (:func:`~analysis.studies.factorization.probes.encoder_grid`,
    :func:`~analysis.studies.factorization.probes.decoder_probe_grid`)."""

    cells: dict[Cell, dict[str, ProbeResult]]
    """``{(method, ratio): {seed task: result}}``."""
    tasks: dict[str, Any]
    """The probed datasets (``datasets.Dataset``) by the seed's task name."""

    def labels(self) -> dict[Cell, str]:
        """Each cell's method label in the decoder grid's table (``"none"``: uncompressed)."""
        return {cell: METHOD_LABELS.get(cell[0], "none") for cell in self.cells}

    def groups(self) -> dict[str, list[str]]:
        """Each task's item groups (items of one group stay on one side of every split)."""
        return {t: ds["group"][:] for t, ds in self.tasks.items()}
