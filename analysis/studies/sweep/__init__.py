"""Information-aware compression (seed 004, Scarlatescu and Mehta): prune fractions and bit
widths per information-density level, and whether density knows *where* to compress.

The seed scores each layer's attention and MLP (causal tracing after ROME, Meng et al. 2022;
weight and gradient magnitude as baselines), z-scores each score over the layers within each
kind, buckets it into low / medium / high density at ±0.5 and compresses low-density
components hardest. High density means *compress least*: the seed writes prune
``[0.3, 0.2, 0.1]`` and bits ``[8, 16, 24]`` in the order (low, medium, high).

The seed's design compares allocations of different sizes. This package adds two size-matched
controls and judges every claim with an interval:

- :mod:`~analysis.studies.sweep.config`: :class:`SweepConfig` per profile (:func:`config_for`);
- :mod:`~analysis.studies.sweep.seed`: the seed's numbers and claims (``SEED_RESULTS``);
- :mod:`~analysis.studies.sweep.cells`: cells (allocation x setting), evaluated and cached;
- :mod:`~analysis.studies.sweep.inputs`: the scores (causal tracing on the ``"score"`` facts)
  and the reference (fact recall on the ``"eval"`` facts);
- :mod:`~analysis.studies.sweep.run`: :func:`run`, the inputs and the three grids of one run,
  as a :class:`SweepResult` (:mod:`~analysis.studies.sweep.results`);
- :mod:`~analysis.studies.sweep.compare`: the uniform Pareto frontier, random controls, and
  the shared paired bootstrap over evaluation windows;
- :mod:`~analysis.studies.sweep.claims`: one verdict per seed claim, assembled by
  :func:`verdicts` (:mod:`~analysis.studies.sweep.verdicts`);
- :mod:`~analysis.studies.sweep.plots`: the chapter's heatmaps and size/perplexity figure.
"""

from analysis.studies.sweep.cells import (
    CACHE_VERSION,
    Cell,
    CellResult,
    control_grid,
    evaluate_cell,
    frame,
    grid,
    level_assignment,
    plan_for,
    run_sweep,
    seed_grid,
    tercile_grid,
    uniform_grid,
)
from analysis.studies.sweep.claims import (
    SCORES,
    aggressive_setting,
    aggressive_settings,
    claim_aggressive,
    claim_comparable,
    claim_perform_well,
    claim_pruning,
    open_question,
    pruning_pairs,
    score_versus_random,
    score_versus_uniform,
)
from analysis.studies.sweep.compare import (
    Bootstrap,
    Delta,
    frontier_at,
    intervals,
    pareto_front,
    pooled,
    random_deltas,
    size_frame,
    uniform_frontier,
    uniform_matched,
    usable,
    versus_random,
    versus_uniform,
)
from analysis.studies.sweep.config import (
    CONFIGS,
    CONSTANT,
    TERCILES,
    UNIFORM,
    Setting,
    SweepConfig,
    config_for,
)
from analysis.studies.sweep.inputs import fact_split, gradient_curve, redundancy_scores, reference_for, unigram_bar
from analysis.studies.sweep.plots import pareto, sweep_heatmaps
from analysis.studies.sweep.results import ReferenceSetup, SweepResult
from analysis.studies.sweep.run import run
from analysis.studies.sweep.seed import SEED_RESULTS
from analysis.studies.sweep.verdicts import UNIGRAM, verdicts, verdicts_by_limit

__all__ = [
    "CACHE_VERSION",
    "CONSTANT",
    "SCORES",
    "SEED_RESULTS",
    "CONFIGS",
    "TERCILES",
    "UNIFORM",
    "UNIGRAM",
    "Bootstrap",
    "Cell",
    "CellResult",
    "Delta",
    "ReferenceSetup",
    "Setting",
    "SweepConfig",
    "SweepResult",
    "aggressive_setting",
    "aggressive_settings",
    "claim_aggressive",
    "claim_comparable",
    "claim_perform_well",
    "claim_pruning",
    "config_for",
    "control_grid",
    "evaluate_cell",
    "fact_split",
    "frame",
    "frontier_at",
    "gradient_curve",
    "grid",
    "intervals",
    "level_assignment",
    "open_question",
    "pareto",
    "pareto_front",
    "plan_for",
    "pooled",
    "pruning_pairs",
    "random_deltas",
    "redundancy_scores",
    "reference_for",
    "run",
    "run_sweep",
    "score_versus_random",
    "score_versus_uniform",
    "seed_grid",
    "size_frame",
    "sweep_heatmaps",
    "tercile_grid",
    "uniform_frontier",
    "uniform_grid",
    "uniform_matched",
    "unigram_bar",
    "usable",
    "verdicts",
    "verdicts_by_limit",
    "versus_random",
    "versus_uniform",
]
