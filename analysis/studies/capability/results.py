"""The study's results, typed: what each step returns and the chapter reads by attribute.

Every head-level quantity is a ``[n_layers, n_heads]`` tensor indexed by layer ``l`` and head
``h``, the head whose output is slice ``h`` of ``blocks.{l}.attn.hook_z``. Results that are
cached on disk (:class:`HeadAblation`, :class:`Budget`) are stored as the plain dict of their
fields (:func:`dataclasses.asdict`), so a stored entry does not depend on this module's classes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import pandas as pd
from jaxtyping import Float
from torch import Tensor

from analysis import sae, stats

PARTIAL = "partial ρ given the other"
"""The importance table's column of :attr:`ImportanceTest.partial`."""


IMPORTANCE_MEASURES = {
    "loss": "ΔCE when ablated",
    "logp": "Δ log p(answer) when ablated",
    "recall": "Δ fact recall when ablated",
}
"""Each direct-importance measure (a field of :class:`HeadAblation`) and its name in the importance table."""


@dataclass(frozen=True)
class HeadTest:
    """Spearman ρ between two head-level signals with its layer-cluster bootstrap 95% interval,
    the within-layer ρ with its within-layer permutation p (NaN when no layer has 3 measured
    heads), and the numbers of heads and layers measured (:func:`~analysis.studies.capability.run.head_test`)."""

    rho: float
    ci_low: float
    ci_high: float
    rho_within: float
    p_within: float
    n: int
    n_layers: int

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> HeadTest:
        """The test stored in one row of a table (e.g. one rung of the SAE ladder)."""
        return cls(**{f.name: row[f.name] for f in dataclasses.fields(HeadTest)})

    def row(self) -> dict[str, float]:
        """The test as one table row, its fields in order."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ImportanceTest(HeadTest):
    """A signal against one direct-importance measure, and the partial ρ given the other signal
    (density given Wanda, or Wanda given density)."""

    partial: float

    def row(self) -> dict[str, float]:
        """The test as one row of the importance table (the partial ρ last, as :data:`PARTIAL`)."""
        out = dataclasses.asdict(self)
        out[PARTIAL] = out.pop("partial")
        return out


@dataclass(frozen=True)
class HeadMaps:
    """Capability density, its three parts (:func:`analysis.sae.density_map`) and Wanda per head,
    each ``[n_layers, n_heads]``."""

    breadth: Float[Tensor, "layer head"]
    entropy: Float[Tensor, "layer head"]
    consistency: Float[Tensor, "layer head"]
    density: Float[Tensor, "layer head"]
    wanda: Float[Tensor, "layer head"]

    def as_dict(self) -> dict[str, Tensor]:
        """``{name: map}`` in field order."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def correlations(self) -> pd.DataFrame:
        """Spearman ρ over all heads between every two maps (rows and columns in field order)."""
        maps = self.as_dict()
        return pd.DataFrame([[stats.spearman(maps[a], maps[b]) for b in maps] for a in maps], list(maps), list(maps))


@dataclass(frozen=True)
class DensityStudy:
    """The trained SAEs of one model and everything measured from them and from its weights."""

    model_name: str
    saes: dict[str, Any]
    stats: sae.LatentStats
    quality: pd.DataFrame
    """:func:`analysis.sae.sae_quality` per SAE."""
    maps: HeadMaps
    headline: HeadTest
    """ρ(density, Wanda) over all heads: the seed's headline test."""

    def layer_shares(self) -> dict[str, float]:
        """The share of each map's variance that lies between layers."""
        return {k: stats.layer_share(v) for k, v in self.maps.as_dict().items()}


@dataclass(frozen=True)
class CERecovered:
    """CE loss recovered over layers: its median, and its median over the layers whose ablation
    costs at least ``floor`` nats (:data:`~analysis.studies.capability.config.CE_COST_FLOOR`)."""

    median: float
    stable_median: float
    n_stable: int
    n_small: int
    floor: float


@dataclass(frozen=True)
class FactSet:
    """The evaluation facts (prompts and their answers) and the known-fact screen's statistics."""

    prompts: list[str]
    targets: list[str]
    screen: dict
    """The screen's statistics (:func:`analysis.data.known_facts`)."""
    relations: list[str] = dataclasses.field(default_factory=list)
    """Each fact's relation: facts of one relation share a template and often an answer, so
    intervals over facts resample relations (clusters)."""

    @property
    def n_screened(self) -> int:
        """Facts screened for ones the model knows."""
        return self.screen["n_total"]


@dataclass(frozen=True)
class HeadAblation:
    """Each head zero-ablated alone (:func:`~analysis.studies.capability.ablation.head_ablation`);
    heads of layers not ablated are NaN."""

    loss: Float[Tensor, "layer head"]
    """ΔCE (nats/token) on the evaluation text."""
    logp: Float[Tensor, "layer head"]
    """Drop in the answers' log-probability, mean over facts."""
    recall: Float[Tensor, "layer head"]
    """Drop in top-1 fact recall."""
    clean_loss: Tensor
    """The unablated model's loss on the same text (a 0-d tensor)."""


@dataclass(frozen=True)
class SignalTests:
    """Density and Wanda, each against one direct-importance measure."""

    density: ImportanceTest
    wanda: ImportanceTest


@dataclass(frozen=True)
class DirectImportance:
    """Density and Wanda against each measure of a head's direct importance (:class:`HeadAblation`)."""

    loss: SignalTests
    logp: SignalTests
    recall: SignalTests

    @property
    def table(self) -> pd.DataFrame:
        """One row per (measure, signal): :class:`ImportanceTest`'s fields."""
        rows = {}
        for name, label in IMPORTANCE_MEASURES.items():
            tests = getattr(self, name)
            for sig in ("density", "wanda"):
                rows[(label, sig)] = getattr(tests, sig).row()
        return pd.DataFrame(rows).T


@dataclass(frozen=True)
class Transitions:
    """Sparsity curves of single heads spread over the density range, and where each breaks."""

    heads: list[tuple[int, int]]
    """The traced heads ``(layer, head)``."""
    curves: Float[Tensor, "head level"]
    """ΔCE at each of ``cfg.transition_levels``."""
    breaks: Float[Tensor, " head"]
    """The sparsity where each head breaks (NaN without a positive ablation effect)."""
    density: Float[Tensor, " head"]
    ablation: Float[Tensor, " head"]
    """ΔCE when the head is ablated (its curve's end at sparsity 1)."""
    test: HeadTest | None
    """ρ(density, break point) over the heads that break, clustered by layer (None when fewer than 3)."""


@dataclass(frozen=True)
class Budget:
    """Allocation strategies at matched mean sparsity, each model evaluated
    (:func:`~analysis.studies.capability.budget.budget_comparison`)."""

    table: pd.DataFrame
    """One row per (mean sparsity, strategy): perplexity with its interval, fact recall, probe
    accuracy and the attention bits kept."""
    items: dict[tuple[float, str], dict[str, list]]
    """Per (mean sparsity, strategy): ``{"window_nll", "window_tokens", "recall"}`` for paired tests."""
