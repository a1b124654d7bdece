"""What one run of the information-aware compression study gives a chapter, read by attribute.

:func:`analysis.studies.sweep.run` scores every component three ways, builds the one reference
every cell is scored on (held-out windows and ``"eval"`` facts) and the unigram line between
usable and broken models, and evaluates three grids of cells on that reference: the seed's grid,
the size-matched controls (random allocations and uniform compression), and the tercile
allocations with their own random controls. :class:`SweepResult` holds all of it; the
statistics that every later comparison shares (:attr:`SweepResult.boot`) are derived from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from analysis.evaluate import Comparison, LMScore, Reference
from analysis.scores import ComponentScores
from analysis.studies.sweep.cells import CellResult
from analysis.studies.sweep.compare import Bootstrap
from analysis.studies.sweep.config import SweepConfig


@dataclass(frozen=True)
class ReferenceSetup:
    """The evaluation every cell is scored by (:func:`analysis.studies.sweep.reference_for`)."""

    reference: Reference
    """Held-out windows and ``"eval"`` facts, with the uncompressed model's predictions on them."""
    cache_config: dict
    """The reference's settings (tokens, context, fact ids) that key the cell cache."""
    reference_args: dict
    """The arguments that rebuild :attr:`reference` in a worker process."""
    relations: tuple[str, ...] = ()
    """Each eval fact's relation, in the reference's order: the clusters of fact-recall intervals."""


@dataclass(frozen=True)
class SweepResult:
    """One run of the study under one profile (:func:`analysis.studies.sweep.run`)."""

    config: SweepConfig
    """The sizes it ran with."""
    scores: dict[str, ComponentScores]
    """The seed's three redundancy scores of every component, by score name (causal tracing,
    weight magnitude, gradient magnitude)."""
    curve: dict[int, ComponentScores]
    """The gradient-magnitude score at each calibration size in tokens, to show it has settled."""
    base: Comparison
    """The uncompressed model on the reference: ``n_tokens`` held-out tokens in
    ``len(window_nll)`` windows and ``n_facts`` eval facts, which every cell is scored on too."""
    bar: LMScore
    """The unigram model on the same windows: a cell counts as usable below its perplexity."""
    seed_grid: tuple[CellResult, ...]
    """The seed's design: every score and the two constant baselines at every (prune, bits)."""
    controls: tuple[CellResult, ...]
    """The size-matched controls: each score's random allocations at ``config.controls``, then
    uniform compression at ``config.uniform``."""
    terciles: tuple[CellResult, ...]
    """Each of ``config.tercile_scores`` bucketed by equal-count terciles at ``config.terciles``,
    then its random controls."""
    relations: tuple[str, ...] = ()
    """Each eval fact's relation (:attr:`ReferenceSetup.relations`): fact-recall intervals resample
    relations, since facts of one relation share a template and often an answer."""

    @property
    def limit(self) -> float:
        """The unigram model's perplexity: the line between usable and broken models."""
        return self.bar.perplexity

    @property
    def results(self) -> list[CellResult]:
        """The seed grid and the controls: every cell the seed's claims are judged on."""
        return list(self.seed_grid) + list(self.controls)

    @property
    def uniform(self) -> list[CellResult]:
        """The cells of :attr:`results` that compress every component alike (the constant
        baselines among them): the cells the uniform Pareto frontier is built from."""
        return [r for r in self.results if r.cell.is_uniform]

    @cached_property
    def boot(self) -> Bootstrap:
        """The window resamples every interval over :attr:`results` and :attr:`terciles` shares
        (``config.n_boot`` draws, seed 0)."""
        return Bootstrap.of(self.results, self.config.n_boot)
