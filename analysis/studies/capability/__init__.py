"""Seed 001, capability density versus Wanda: the study's config, runners and verdicts.

Seed 001 ("Capability-Guided Compression") claims that an attention head's *capability
density*, measured with sparse autoencoders (:mod:`analysis.sae.density`), is a signal
orthogonal to Wanda importance (:mod:`analysis.wanda`), that denser heads reach their phase
transition at lower compression, and that perplexity is blind to the capability loss this
signal protects. This package runs the experiments that test those claims on one model:

1. :func:`run_density_study`: train (or load) one TopK SAE per layer on ``hook_z``, measure
   their quality, the density map of every head and Wanda per head (:class:`DensityStudy`);
2. :func:`run_ablation`: each head's direct importance, the loss and fact-recall damage of
   zero-ablating it alone (:func:`head_ablation`);
3. :func:`run_transitions`: a spread of heads sparsified one at a time, and the sparsity where
   each breaks (:func:`transition_curves`, :func:`break_point`);
4. :func:`run_budget`: a fixed mean sparsity allocated by density, by Wanda, uniformly and at
   random (several seeds), each model scored by perplexity, fact recall and a sentiment probe;
5. :func:`run_sae_ladder`: the headline test repeated on SAEs of rising quality.

Heads are not independent units: every head-level correlation (:func:`head_test`) has a
layer-cluster bootstrap interval and a within-layer permutation p.

Each claim gets a verdict function (:func:`orthogonality_verdict`, :func:`importance_verdict`,
:func:`transition_verdict`, :func:`perplexity_verdict`, :func:`allocation_verdict`) that returns an
:class:`analysis.studies.verdicts.Verdict` with its criterion and interval; "no relation" is only
ever concluded by TOST (:func:`analysis.studies.verdicts.equivalence_verdict`).

The modules, one idea each:

- :mod:`~analysis.studies.capability.config`: ``SEED_RESULTS`` (the seed's claims) and
  :class:`DensityConfig`, sizes per run profile;
- :mod:`~analysis.studies.capability.ablation`: one head zero-ablated, or sparsified step by
  step, and where it breaks;
- :mod:`~analysis.studies.capability.budget`: allocations of a mean sparsity and how each
  allocated model scores;
- :mod:`~analysis.studies.capability.runner`: the study's steps, each cached on disk;
- :mod:`~analysis.studies.capability.verdicts`: the seed's claims, each with a verdict.
"""

from analysis.studies.capability.ablation import break_point, head_ablation, spread_heads, transition_curves
from analysis.studies.capability.budget import (
    BUDGET_METRICS,
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
from analysis.studies.capability.config import CONFIGS, SEED_RESULTS, DensityConfig, config_for
from analysis.studies.capability.runner import (
    DensityStudy,
    activation_pool,
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
from analysis.studies.capability.verdicts import (
    FIDELITY,
    VERDICTS,
    Verdict,
    allocation_verdict,
    binomial_noise,
    budget_findings,
    budget_report,
    effective_n,
    importance_verdict,
    min_heads_for_equivalence,
    orthogonality_verdict,
    paired_difference,
    perplexity_verdict,
    transition_verdict,
)

__all__ = [
    "BUDGET_METRICS",
    "CONFIGS",
    "FIDELITY",
    "PROBE_HOOK",
    "SEED_RESULTS",
    "VERDICTS",
    "DensityConfig",
    "DensityStudy",
    "Verdict",
    "activation_pool",
    "allocate",
    "allocation_verdict",
    "allocations",
    "binomial_noise",
    "break_point",
    "budget_comparison",
    "budget_findings",
    "budget_report",
    "config_for",
    "domain_tokens",
    "effective_n",
    "evaluate_model",
    "head_ablation",
    "head_sparsity_plan",
    "head_test",
    "importance_table",
    "importance_verdict",
    "min_heads_for_equivalence",
    "known_fact_set",
    "layer_labels",
    "orthogonality_verdict",
    "paired_difference",
    "perplexity_verdict",
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
]
