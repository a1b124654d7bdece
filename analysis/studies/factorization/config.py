"""The factorization study's sizes per run profile (:class:`FactorConfig`) and its labels."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from analysis import probing
from analysis.compress.lowrank import SENSITIVITY_KEEP
from analysis.config import get_profile, study_config

CACHE_VERSION = 5
"""Part of every cached cell's key; bumped when a cell's output for the same inputs changes."""

METHOD_LABELS = {
    "svd": "SVD",
    "fwsvd": "FWSVD",
    "asvd_rank": "ASVD",
    "asvd": "ASVD (uniform rank)",
    "svdllm": "SVD-LLM",
}
"""Display name of each study method (rows of every table). ``"asvd_rank"`` is ASVD as Yuan et al.
define it (activation scaling and a sensitivity-based rank per layer at the same total size);
``"asvd"`` is its activation scaling alone at one uniform rank; the rest are
:data:`analysis.compress.FACTOR_METHODS` at one uniform rank."""

STUDY_METHODS = tuple(METHOD_LABELS)

METHOD_OPS = {"asvd_rank": "asvd"}
"""Study method -> the compress operation whose statistics it reads (where the two names differ)."""


@dataclass(frozen=True)
class FactorConfig:
    """Sizes of the factorization study for one run profile (see :func:`config_for`).

    A field whose metadata says ``{"size": True}`` is a size (tokens, samples, steps, widths, windows,
    and the grids of ratios and kept fractions a run steps through): what a profile scales. The other
    fields are choices (names, methods, switches, layers)."""

    ratios: tuple[float, ...] = field(default=(0.05, 0.10, 0.15, 0.25, 0.35), metadata={"size": True})
    """Fractions of the MLP parameters removed (the seed's decoder grid)."""
    methods: tuple[str, ...] = STUDY_METHODS
    side_methods: tuple[str, ...] = ("asvd", "svdllm")
    """Methods no verdict rests on: run only at :attr:`side_ratios` (cut before samples are cut)."""
    side_ratios: tuple[float, ...] = field(default=(0.10, 0.25), metadata={"size": True})
    decoder_layers: tuple[int, ...] | None = None
    """Decoder layers whose MLPs are factorized (None: all, as in the seed)."""
    eval_tokens: int = field(default=4096, metadata={"size": True})
    """Held-out tokens scored for perplexity per grid cell (windows of ``context``: the bootstrap unit)."""
    calib_tokens: int = field(default=16_384, metadata={"size": True})
    """Calibration tokens for every statistic (>= 10x the widest MLP input, 1536 for SmolLM2)."""
    calib_sizes: tuple[int, ...] = field(default=(2048, 8192, 32_768), metadata={"size": True})
    """Calibration sizes of the calibration curve (one pass over the largest; the others are prefixes)."""
    calib_ratio: float = 0.10
    """The ratio at which the calibration curve is measured."""
    context: int = field(default=256, metadata={"size": True})
    unigram_tokens: int = field(default=1_000_000, metadata={"size": True})
    """Train-split tokens behind the unigram line between usable and broken decoders
    (:func:`analysis.studies.verdicts.unigram_line`)."""
    grad_examples: int | None = field(default=None, metadata={"size": True})
    """Calibration windows with one backward pass each for FWSVD's Fisher (None: every window)."""
    sensitivity_keep: tuple[float, ...] = field(default=SENSITIVITY_KEEP, metadata={"size": True})
    sensitivity_unit: str = "layer"
    """ASVD's sensitivity unit: ``"layer"`` (one MLP) or ``"weight"`` (one matrix, as in ASVD's code)."""
    sensitivity_windows: int = field(default=2, metadata={"size": True})
    """Calibration windows whose perplexity scores each candidate truncation."""
    n_facts: int | None = field(default=None, metadata={"size": True})
    """Facts screened (:func:`analysis.data.fact_splits`; None: the profile's ``n_facts``, the one screen
    every chapter shares); every known "eval" fact is asked as 4-way multiple choice and re-tested
    for recall in every cell."""
    max_fact_mc: int | None = field(default=None, metadata={"size": True})
    """At most this many "eval" facts (a seeded random subset) are asked as multiple choice and
    re-tested for recall (None: every one)."""
    n_mmlu: int | None = field(default=285, metadata={"size": True})
    """MMLU test questions scored zero-shot: a fixed, subject-stratified sample
    (:func:`~analysis.studies.factorization.evaluation.mmlu_items`; 285 = 5 per subject, 5700 = 100 per
    subject, as many as the smallest subjects have; None: all 14,042, unbalanced)."""
    mmlu_ratios: tuple[float, ...] | None = field(default=None, metadata={"size": True})
    """Ratios at which MMLU is scored besides the uncompressed model (None: every decoder cell)."""
    mc_choices: int = 4
    """Choices per fact question: the true answer and ``mc_choices - 1`` answers of other facts (4, as MMLU)."""
    n_probe: int = field(default=300, metadata={"size": True})
    """Examples per probing task on the encoder."""
    probe: probing.ProbeConfig = field(default=probing.ProbeConfig(), metadata={"size": True})
    encoder_methods: tuple[str, ...] = ("svd", "fwsvd")
    """The seed's encoder methods (its BERT grid has SVD and FWSVD)."""
    encoder_ratios: tuple[float, ...] = field(default=(0.10, 0.30, 0.50), metadata={"size": True})
    """The seed's Table 3 ratios."""
    encoder_calib_tokens: int = field(default=8192, metadata={"size": True})
    encoder_grad_examples: int = field(default=64, metadata={"size": True})
    """:attr:`fisher_task` texts (none of them in a probe set) whose task-head gradients give the encoder's Fisher."""
    fisher_task: str = "sentiment"
    """The labelled task behind the encoder's Fisher (the seed's came from fine-tuning BERT on CoLA, which
    ships nowhere here): Rotten Tomatoes snippets, a sentiment task beside the SST-2 probe."""
    batch_size: int = field(default=8, metadata={"size": True})
    decoder_probe_ratios: tuple[float, ...] = field(default=(0.10,), metadata={"size": True})
    """Ratios at which the decoder is probed too, to set probes beside perplexity."""
    decoder_probe_methods: tuple[str, ...] = ("svd", "fwsvd", "asvd_rank")
    n_decoder_probe: int = field(default=400, metadata={"size": True})
    """Examples per probing task on the decoder; every one is tested once (``decoder_probe.folds``)."""
    decoder_probe: probing.ProbeConfig = field(
        default=probing.ProbeConfig(seeds=(0,), folds=5, steps=80), metadata={"size": True}
    )
    baselines: tuple[str, ...] = ("prune", "quantize")
    """The seed's comparison arms, "quantization and pruning ... on same compression": magnitude pruning
    of the MLP matrices zeroing the grid's fraction of their entries, and round-to-nearest quantization to
    ``round(16 * (1 - ratio))`` bits (the same stored size as a 16-bit matrix with that fraction removed)."""
    baseline_ratios: tuple[float, ...] | None = field(default=None, metadata={"size": True})
    """Ratios of the comparison arms (None: :attr:`ratios`)."""
    decoders: tuple[str, ...] = ()
    """Decoders to try first (the seed's); the profile's model is the fallback."""
    encoders: tuple[str, ...] = ()

    def cells(self) -> list[tuple[str, float]]:
        """The decoder grid: the uncompressed model, then each method at its ratios."""
        return [("none", 0.0)] + [
            (m, r) for m in self.methods for r in (self.side_ratios if m in self.side_methods else self.ratios)
        ]


CONFIGS: dict[str, FactorConfig] = {
    "smoke": FactorConfig(
        ratios=(0.10, 0.35),
        side_ratios=(0.35,),
        decoder_layers=(0,),
        eval_tokens=256,
        calib_tokens=256,
        calib_sizes=(64, 128, 256),
        calib_ratio=0.35,
        context=64,
        unigram_tokens=20_000,
        grad_examples=2,
        sensitivity_keep=(0.5, 0.8),
        sensitivity_windows=1,
        n_mmlu=8,
        mmlu_ratios=(0.35,),
        baseline_ratios=(0.35,),
        n_probe=24,
        probe=probing.ProbeConfig(seeds=(0,), steps=20),
        encoder_ratios=(0.35,),
        encoder_calib_tokens=128,
        encoder_grad_examples=4,
        batch_size=8,
        decoder_probe_ratios=(0.35,),
        n_decoder_probe=16,
        decoder_probe=probing.ProbeConfig(seeds=(0,), folds=2, steps=20),
    ),
    "cpu": FactorConfig(
        side_ratios=(0.10,),
        # cut for the 90-minute cpu budget: the 32k-token calibration size (the curve is a table no verdict
        # reads; its largest size is now the main 16k, so the one calibration pass is half as long)
        calib_sizes=(2048, 8192, 16_384),
        grad_examples=64,
        max_fact_mc=150,
        # MMLU judges nothing here (SmolLM2-135M is near chance on it): cut for the 90-minute cpu budget to
        # a 2-per-subject sample of the uncompressed model only (114 questions at about 0.35 s each)
        n_mmlu=114,
        mmlu_ratios=(),
        # the comparison arms at the grid's two ends only (4 cells of perplexity and fact questions)
        baseline_ratios=(0.10, 0.35),
        sensitivity_windows=1,
        n_probe=300,
        probe=probing.ProbeConfig(steps=80),
        n_decoder_probe=300,
        decoder_probe=probing.ProbeConfig(seeds=(0,), folds=5, steps=80, kinds=("mlp",)),
    ),
    "gpu": FactorConfig(
        side_ratios=(0.05, 0.10, 0.15, 0.25, 0.35),
        eval_tokens=131_072,
        calib_tokens=262_144,
        calib_sizes=(2048, 8192, 32_768, 262_144),
        context=1024,
        grad_examples=256,
        sensitivity_keep=(0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95),
        sensitivity_unit="weight",
        sensitivity_windows=8,
        n_mmlu=5700,
        mmlu_ratios=(0.05, 0.10, 0.15, 0.25, 0.35),
        n_probe=4000,
        probe=probing.ProbeConfig(steps=300, hidden=256),
        encoder_methods=("svd", "fwsvd", "asvd"),
        encoder_calib_tokens=65_536,
        encoder_grad_examples=1000,
        decoder_probe_ratios=(0.05, 0.15, 0.25),
        decoder_probe_methods=("svd", "fwsvd", "asvd_rank", "svdllm"),
        n_decoder_probe=2000,
        decoder_probe=probing.ProbeConfig(seeds=(0,), folds=5, steps=300, hidden=256),
        decoders=("llama-2-7b", "mistral-7b"),
        encoders=("bert-base-uncased",),
    ),
}
"""Sizes per profile: ``smoke`` for the test suite, ``cpu`` for the book on 2 cores, ``gpu`` for the seed's models."""


def config_for(profile: Any) -> FactorConfig:
    """The :class:`FactorConfig` for a profile (or its name); ``profile.extra["factorization"]`` overrides fields."""
    cfg = study_config(CONFIGS, profile, "factorization")
    if cfg.n_facts is None:
        prof = get_profile(profile) if isinstance(profile, str) else profile
        cfg = dataclasses.replace(cfg, n_facts=prof.n_facts)
    return cfg
