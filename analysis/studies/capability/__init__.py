"""Seed 001, capability density versus Wanda: the study's config, runners, results and verdicts.

Seed 001 ("Capability-Guided Compression") claims that an attention head's *capability
density*, measured with sparse autoencoders (:mod:`analysis.sae.density`), is a signal
orthogonal to Wanda importance (:mod:`analysis.wanda`), that denser heads reach their phase
transition at lower compression, and that perplexity is blind to the capability loss this
signal protects. This package runs the experiments that test those claims on one model, one
step at a time (the chapter puts text between them), each step returning a typed result:

1. :func:`run_density_study`: train (or load) one TopK SAE per layer on ``hook_z``, measure
   their quality, the density map of every head, Wanda per head and the headline test
   ρ(density, Wanda) (:class:`DensityStudy`);
2. :func:`run_sae_ladder`: the headline test repeated on SAEs of rising quality;
3. :func:`known_fact_set` and :func:`run_ablation`: each head's direct importance, the loss and
   fact-recall damage of zero-ablating it alone (:class:`HeadAblation`), tested against density
   and Wanda by :func:`importance_table` (:class:`DirectImportance`);
4. :func:`run_transitions`: a spread of heads sparsified one at a time, and the sparsity where
   each breaks (:class:`Transitions`);
5. :func:`run_budget`: a fixed mean sparsity allocated by density, by Wanda, uniformly and at
   random (several seeds), each model scored by perplexity, fact recall and a sentiment probe
   (:class:`Budget`).

Heads are not independent units: every head-level correlation (:func:`head_test`, a
:class:`HeadTest`) has a layer-cluster bootstrap interval and a within-layer permutation p.
:func:`verdicts` turns the results into one :class:`analysis.studies.verdicts.Verdict` per claim
of the seed; "no relation" is only ever concluded by TOST
(:func:`analysis.studies.verdicts.equivalence_verdict`).

The modules, one idea each:

- :mod:`~analysis.studies.capability.config`: :class:`DensityConfig`, sizes per run profile;
- :mod:`~analysis.studies.capability.seed`: ``SEED_RESULTS`` (the seed's claims) and ours beside them;
- :mod:`~analysis.studies.capability.results`: the typed results the chapter reads;
- :mod:`~analysis.studies.capability.ablation`: one head zero-ablated, or sparsified step by
  step, and where it breaks;
- :mod:`~analysis.studies.capability.budget`: allocations of a mean sparsity and how each
  allocated model scores;
- :mod:`~analysis.studies.capability.run`: the study's steps, each cached on disk;
- :mod:`~analysis.studies.capability.texts`: which text chooses and which judges (never the same);
- :mod:`~analysis.studies.capability.metrics`: the importance metrics besides Wanda, per head;
- :mod:`~analysis.studies.capability.verdicts`: the seed's claims, each with a verdict;
- :mod:`~analysis.studies.capability.budget_verdicts`: the verdicts on the budget comparison;
- :mod:`~analysis.studies.capability.plots`: the study's figures.
"""

from analysis.studies.capability import plots
from analysis.studies.capability.ablation import break_point, head_ablation, spread_heads, transition_curves
from analysis.studies.capability.budget import (
    PROBE_HOOK,
    allocate,
    allocations,
    budget_comparison,
    evaluate_model,
    head_sparsity_plan,
    pool_random,
    pooled_features,
    probe_accuracy,
)
from analysis.studies.capability.config import CE_COST_FLOOR, CONFIGS, PPL_MARGIN, DensityConfig, config_for
from analysis.studies.capability.metrics import METRICS, MetricMaps, metric_tests, run_metrics, swap_pairs
from analysis.studies.capability.results import (
    IMPORTANCE_MEASURES,
    Budget,
    CERecovered,
    DensityStudy,
    DirectImportance,
    FactSet,
    HeadAblation,
    HeadMaps,
    HeadTest,
    ImportanceTest,
    SignalTests,
    Transitions,
)
from analysis.studies.capability.run import (
    activation_pool,
    ce_recovered,
    domain_tokens,
    head_test,
    importance_table,
    known_fact_set,
    layer_labels,
    quality_summary,
    run_ablation,
    run_budget,
    run_density_study,
    run_sae_ladder,
    run_transitions,
)
from analysis.studies.capability.seed import SEED_RESULTS, headline_rows
from analysis.studies.capability.texts import DENSITY_SPLIT, Span, overlaps, probe_examples, text_plan
from analysis.studies.capability.verdicts import (
    FIDELITY,
    Verdict,
    allocation_verdict,
    budget_findings,
    budget_report,
    effective_n,
    importance_verdict,
    metric_verdicts,
    orthogonality_verdict,
    perplexity_verdict,
    transition_verdict,
    verdicts,
    versus_random,
)

__all__ = [
    "CE_COST_FLOOR",
    "CONFIGS",
    "PPL_MARGIN",
    "FIDELITY",
    "IMPORTANCE_MEASURES",
    "PROBE_HOOK",
    "SEED_RESULTS",
    "Budget",
    "CERecovered",
    "DensityConfig",
    "DensityStudy",
    "DirectImportance",
    "FactSet",
    "HeadAblation",
    "HeadMaps",
    "HeadTest",
    "ImportanceTest",
    "SignalTests",
    "Transitions",
    "Verdict",
    "activation_pool",
    "allocate",
    "allocation_verdict",
    "allocations",
    "break_point",
    "budget_comparison",
    "budget_findings",
    "budget_report",
    "ce_recovered",
    "config_for",
    "domain_tokens",
    "effective_n",
    "evaluate_model",
    "head_ablation",
    "head_sparsity_plan",
    "head_test",
    "headline_rows",
    "importance_table",
    "importance_verdict",
    "known_fact_set",
    "layer_labels",
    "metric_verdicts",
    "orthogonality_verdict",
    "perplexity_verdict",
    "plots",
    "pool_random",
    "pooled_features",
    "probe_accuracy",
    "quality_summary",
    "run_ablation",
    "run_budget",
    "run_density_study",
    "run_sae_ladder",
    "run_transitions",
    "spread_heads",
    "transition_curves",
    "transition_verdict",
    "verdicts",
    "versus_random",
    "METRICS",
    "MetricMaps",
    "metric_tests",
    "run_metrics",
    "swap_pairs",
    "DENSITY_SPLIT",
    "Span",
    "overlaps",
    "probe_examples",
    "text_plan",
]
