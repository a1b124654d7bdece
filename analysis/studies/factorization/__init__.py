"""The factorization study (seed 002): low-rank MLPs judged by perplexity, accuracy and probes.

Seed 002 (Pletenev 2024, "Probing the Pitfalls: Understanding SVD's Shortcomings in Language
Model Compression") factorizes the MLP matrices of Llama-2-7B (gate, up, down) and of
BERT-base (intermediate, output) at a uniform compression ratio with plain SVD, Fisher-weighted
SVD (FWSVD) and activation-aware SVD (ASVD), and judges the result three ways: a downstream
benchmark (MMLU for Llama, CoLA after fine-tuning for BERT), and 2-layer MLP probes with
control tasks on every layer's hidden states for an acceptability (CoLA), a sentiment (SST-2)
and a truthfulness (TruthfulQA) task. Its claims: plain SVD collapses already at 5-10 %
compression, weighted methods (ASVD best) hold up much better, and probes show *which*
knowledge goes first (TruthfulQA before SST-2).

This package runs the same grid on the book's models with the operations of
:mod:`analysis.compress` (which adds SVD-LLM's whitening, Wang et al. 2024) and the probes of
:mod:`analysis.probing`:

- :mod:`~analysis.studies.factorization.config`: :class:`FactorConfig`, sizes per run profile;
- :mod:`~analysis.studies.factorization.seed`: ``SEED_RESULTS`` (the seed's Tables 2-4) and
  our numbers beside them;
- :mod:`~analysis.studies.factorization.evaluation`: what a decoder cell is scored on
  (held-out text, known facts, multiple choice);
- :mod:`~analysis.studies.factorization.runner`: the decoder and encoder grids, each cell
  cached on disk by its configuration and the model, so an interrupted sweep resumes;
- :mod:`~analysis.studies.factorization.verdicts`: the seed's claims, each with a verdict.
"""

from analysis.studies.factorization.config import (
    CACHE_VERSION,
    FACTOR_CONFIGS,
    METHOD_LABELS,
    FactorConfig,
    factor_config_for,
)
from analysis.studies.factorization.evaluation import (
    DecoderData,
    choice_logprobs,
    decoder_data,
    fact_mc_items,
    mc_accuracy,
    mc_items,
)
from analysis.studies.factorization.runner import (
    decoder_context,
    decoder_grid,
    decoder_probe_grid,
    encoder_context,
    encoder_grid,
    probe_frame,
    probe_tasks,
    rank_table,
    score_decoder,
)
from analysis.studies.factorization.seed import (
    SEED_RESULTS,
    cola_beside_seed,
    decoder_beside_seed,
    probes_beside_seed,
    seed_downstream_table,
    seed_probe_table,
)
from analysis.studies.factorization.verdicts import (
    discordant_pairs,
    first_ratio_changes,
    mean_damage,
    probe_damage,
    verdicts,
)

__all__ = [
    "CACHE_VERSION",
    "FACTOR_CONFIGS",
    "METHOD_LABELS",
    "SEED_RESULTS",
    "DecoderData",
    "FactorConfig",
    "choice_logprobs",
    "cola_beside_seed",
    "decoder_beside_seed",
    "decoder_context",
    "decoder_data",
    "decoder_grid",
    "decoder_probe_grid",
    "discordant_pairs",
    "encoder_context",
    "encoder_grid",
    "fact_mc_items",
    "factor_config_for",
    "first_ratio_changes",
    "mc_accuracy",
    "mc_items",
    "mean_damage",
    "probe_damage",
    "probe_frame",
    "probe_tasks",
    "probes_beside_seed",
    "rank_table",
    "score_decoder",
    "seed_downstream_table",
    "seed_probe_table",
    "verdicts",
]
