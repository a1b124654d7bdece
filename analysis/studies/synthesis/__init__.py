"""Synthesis: which map of a model predicts where it can be compressed?

Every signal the book computes (causal tracing, attribution patching, weight and gradient
magnitude, Fisher, Wanda, SAE capability density, the update's nonlinearity, predictive-direction
mass, logit- and tuned-lens KL gain) and two published layer-removal criteria (ShortGPT's Block
Influence, Gromov et al.'s angular distance) are judged against one measured oracle (the cost of
compressing each component alone, :mod:`analysis.compress.oracle`), and drive one allocator at
matched size against uniform, random, oracle and published allocations.

- :mod:`~analysis.studies.synthesis.config`: sizes per profile (:func:`config_for`);
- :mod:`~analysis.studies.synthesis.seed`: the published anchors (``SEED_RESULTS``);
- :mod:`~analysis.studies.synthesis.signals`: :class:`Signal` (scores and their cost), :func:`cheap_signals`;
- :mod:`~analysis.studies.synthesis.run`: the texts, the oracle, the allocations, the leaderboard;
- :mod:`~analysis.studies.synthesis.allocate`: the one allocator and the baselines;
- :mod:`~analysis.studies.synthesis.leaderboard`: scoring allocations (:class:`Score`);
- :mod:`~analysis.studies.synthesis.agreement`: rank correlations with layer-resampling intervals;
- :mod:`~analysis.studies.synthesis.features`: SAE feature survival;
- :mod:`~analysis.studies.synthesis.heads`: the oracle and the signals per attention head;
- :mod:`~analysis.studies.synthesis.others`: the study on further models (:func:`run_other`);
- :mod:`~analysis.studies.synthesis.results`: :class:`SynthesisResult`;
- :mod:`~analysis.studies.synthesis.verdicts`: the three questions (:func:`verdicts`);
- :mod:`~analysis.studies.synthesis.plots`: the chapter's figures.
"""

from analysis.studies.synthesis import agreement, allocate, features, heads, leaderboard, plots
from analysis.studies.synthesis.config import CONFIGS, OPS, SynthesisConfig, config_for
from analysis.studies.synthesis.leaderboard import Score
from analysis.studies.synthesis.others import OtherModel, run_other
from analysis.studies.synthesis.results import SynthesisResult, answer
from analysis.studies.synthesis.run import (
    Setup,
    allocations,
    dense,
    feature_tokens,
    headline,
    measure_oracle,
    oracle_signals,
    perplexities,
    run_leaderboard,
    setup,
    survival_models,
    survival_saes,
    usable_line,
    with_mmlu,
)
from analysis.studies.synthesis.seed import PUBLISHED, SEED_RESULTS, SURVIVAL_ANCHORS
from analysis.studies.synthesis.signals import Cost, Signal, cheap_signals, costs, from_heads, from_layers, metered
from analysis.studies.synthesis.verdicts import any_beats, beats_published, beats_uniform, cheapest_near_best, verdicts

__all__ = [
    "CONFIGS",
    "OPS",
    "PUBLISHED",
    "SEED_RESULTS",
    "SURVIVAL_ANCHORS",
    "Cost",
    "OtherModel",
    "Score",
    "Setup",
    "Signal",
    "SynthesisConfig",
    "SynthesisResult",
    "agreement",
    "answer",
    "allocate",
    "allocations",
    "any_beats",
    "beats_published",
    "beats_uniform",
    "cheap_signals",
    "cheapest_near_best",
    "config_for",
    "costs",
    "dense",
    "feature_tokens",
    "headline",
    "leaderboard",
    "perplexities",
    "survival_saes",
    "survival_models",
    "features",
    "heads",
    "from_heads",
    "from_layers",
    "measure_oracle",
    "metered",
    "oracle_signals",
    "plots",
    "run_leaderboard",
    "run_other",
    "setup",
    "usable_line",
    "verdicts",
    "with_mmlu",
]
