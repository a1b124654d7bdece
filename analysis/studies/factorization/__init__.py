"""The factorization study (seed 002): low-rank MLPs judged by perplexity, accuracy and probes.

Seed 002 (Pletenev 2024, "Probing the Pitfalls: Understanding SVD's Shortcomings in Language
Model Compression") factorizes the MLP matrices of Llama-2-7B (gate, up, down) and of
BERT-base (intermediate, output) at a uniform compression ratio with plain SVD, Fisher-weighted
SVD (FWSVD) and activation-aware SVD (ASVD), and judges the result three ways: a downstream
benchmark (MMLU for Llama, CoLA after fine-tuning for BERT), and 2-layer MLP probes with
control tasks on every layer's hidden states for an acceptability (CoLA), a sentiment (SST-2)
and a truthfulness (TruthfulQA) task. Its claims: plain SVD collapses already at 5-10 %
compression, weighted methods (ASVD best) hold up much better, and probes show *which*
knowledge goes first (TruthfulQA before SST-2). We score MMLU itself (zero-shot, on a
subject-stratified sample) and probe the real SST-2 and an answer-truth task built from MMLU;
CoLA ships nowhere here, so acceptability is not probed (:data:`analysis.probing.PROBE_TASKS`).

This package runs the same grid on the book's models with the operations of
:mod:`analysis.compress` (which adds SVD-LLM's whitening, Wang et al. 2024) and the probes of
:mod:`analysis.probing`. "ASVD" is ASVD as Yuan et al. define it: activation scaling *and* a
sensitivity-based rank per layer at the same total size; "ASVD (uniform rank)" is the scaling
alone at one rank for every matrix:

- :mod:`~analysis.studies.factorization.config`: :class:`FactorConfig`, sizes per run profile
  (:func:`config_for`);
- :mod:`~analysis.studies.factorization.seed`: ``SEED_RESULTS`` (the seed's Tables 2-4) and
  our numbers beside them;
- :mod:`~analysis.studies.factorization.evaluation`: what a decoder cell is scored on
  (held-out text, known facts, fact multiple choice, MMLU);
- :mod:`~analysis.studies.factorization.run` (the decoder grid, ASVD's rank search, the calibration
  curve) and :mod:`~analysis.studies.factorization.probes` (the encoder and decoder probe grids):
  the steps the chapter runs one by one, each cell cached on disk by its configuration and the
  model, so an interrupted sweep resumes;
- :mod:`~analysis.studies.factorization.results`: what the steps return, read by attribute
  (:class:`DecoderGrid`, :class:`ProbeGrid`);
- :mod:`~analysis.studies.factorization.verdicts` and :mod:`~analysis.studies.factorization.claims`: the
  seed's claims, each with a verdict (:func:`verdicts` returns them all), on the statistics of
  :mod:`~analysis.studies.factorization.shares` (kept shares, cluster-robust contrasts);
- :mod:`~analysis.studies.factorization.plots`: the study's own figures.
"""

from analysis.studies.factorization import plots
from analysis.studies.factorization.claims import (
    baselines_verdict,
    decoder_worse_verdict,
    degradation_verdict,
    knowledge_first_verdict,
    rq1_verdict,
    selectivity_verdict,
)
from analysis.studies.factorization.config import (
    CACHE_VERSION,
    CONFIGS,
    METHOD_LABELS,
    STUDY_METHODS,
    FactorConfig,
    config_for,
)
from analysis.studies.factorization.evaluation import (
    DecoderData,
    choice_logprobs,
    decoder_data,
    eval_facts,
    fact_mc_items,
    letter_ids,
    letter_logits,
    mc_accuracy,
    mc_correct,
    mmlu_correct,
    mmlu_items,
)
from analysis.studies.factorization.probes import (
    control_coverage,
    decoder_probe_grid,
    encoder_context,
    encoder_grid,
    fisher_sample,
    probe_frame,
    probe_tasks,
)
from analysis.studies.factorization.results import CellScores, DecoderGrid, FactScreen, ProbeGrid
from analysis.studies.factorization.run import (
    BASELINE_LABELS,
    allocation_table,
    asvd_sensitivity,
    baseline_grid,
    baseline_plan,
    calibration_contexts,
    calibration_curve,
    decoder_grid,
    interval_table,
    plan_for,
    rank_allocation,
    rank_table,
    score_decoder,
)
from analysis.studies.factorization.seed import (
    SEED_RESULTS,
    decoder_beside_seed,
    probes_beside_seed,
    seed_claims,
    seed_downstream_table,
    seed_probe_table,
)
from analysis.studies.factorization.shares import CHANCE, Share, kept_share
from analysis.studies.factorization.verdicts import (
    collapse_verdict,
    first_ratio_changes,
    mean_damage,
    ordering_verdict,
    probe_damage,
    probes_hide_verdict,
    retained_share,
    seed_collapse_share,
    verdicts,
)

__all__ = [
    "BASELINE_LABELS",
    "CACHE_VERSION",
    "CHANCE",
    "CONFIGS",
    "METHOD_LABELS",
    "SEED_RESULTS",
    "Share",
    "STUDY_METHODS",
    "CellScores",
    "DecoderData",
    "DecoderGrid",
    "FactScreen",
    "FactorConfig",
    "ProbeGrid",
    "allocation_table",
    "asvd_sensitivity",
    "baseline_grid",
    "baseline_plan",
    "baselines_verdict",
    "calibration_contexts",
    "calibration_curve",
    "choice_logprobs",
    "collapse_verdict",
    "config_for",
    "control_coverage",
    "decoder_beside_seed",
    "decoder_data",
    "decoder_grid",
    "decoder_probe_grid",
    "decoder_worse_verdict",
    "degradation_verdict",
    "encoder_context",
    "encoder_grid",
    "eval_facts",
    "fact_mc_items",
    "first_ratio_changes",
    "fisher_sample",
    "interval_table",
    "kept_share",
    "knowledge_first_verdict",
    "letter_ids",
    "letter_logits",
    "mc_accuracy",
    "mc_correct",
    "mean_damage",
    "mmlu_correct",
    "mmlu_items",
    "ordering_verdict",
    "plan_for",
    "plots",
    "probe_damage",
    "probe_frame",
    "probe_tasks",
    "probes_beside_seed",
    "probes_hide_verdict",
    "rank_allocation",
    "rank_table",
    "retained_share",
    "rq1_verdict",
    "score_decoder",
    "seed_claims",
    "seed_collapse_share",
    "seed_downstream_table",
    "seed_probe_table",
    "selectivity_verdict",
    "verdicts",
]
