"""The factorization study's sizes per run profile (:class:`FactorConfig`) and its labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from analysis import compress, probing
from analysis.config import study_config

CACHE_VERSION = 3
"""Part of every cached cell's key; bumped when a cell's output for the same inputs changes."""

METHOD_LABELS = {"svd": "SVD", "fwsvd": "FWSVD", "asvd": "ASVD", "svdllm": "SVD-LLM"}
"""Display name of each :data:`analysis.compress.FACTOR_METHODS` entry (rows of every table)."""


@dataclass(frozen=True)
class FactorConfig:
    """Sizes of the factorization study for one run profile (see :func:`factor_config_for`)."""

    ratios: tuple[float, ...] = (0.05, 0.10, 0.15, 0.25, 0.35)
    """Fractions of each MLP matrix's parameters removed (the seed's decoder grid)."""
    methods: tuple[str, ...] = compress.FACTOR_METHODS
    decoder_layers: tuple[int, ...] | None = None
    """Decoder layers whose MLPs are factorized (None: all, as in the seed)."""
    eval_tokens: int = 4096
    """Held-out tokens scored for perplexity per grid cell."""
    calib_tokens: int = 4096
    """Calibration tokens for activation statistics (ASVD, SVD-LLM)."""
    context: int = 256
    grad_examples: int = 16
    """Calibration windows of ``context`` tokens, one backward pass each, for FWSVD's Fisher."""
    n_facts: int = 800
    """Facts screened; those the uncompressed model knows are re-tested in every cell."""
    n_mc: int = 60
    """TruthfulQA multiple-choice questions."""
    n_fact_mc: int = 60
    """Wikidata facts asked as 4-way multiple choice (the MMLU stand-in: knowledge, 4 choices)."""
    mc_choices: int = 4
    """Choices per question: the true answer and the first ``mc_choices - 1`` false ones (MMLU has 4)."""
    n_probe: int = 300
    """Examples per probing task."""
    probe: probing.ProbeConfig = probing.ProbeConfig()
    encoder_calib_tokens: int = 4096
    encoder_grad_examples: int = 64
    """Acceptability-task sentences whose task-head gradients give the encoder's Fisher."""
    batch_size: int = 8
    decoder_probe_ratios: tuple[float, ...] = (0.10,)
    """Ratios at which the decoder is probed too (every method), to set probes beside perplexity."""
    decoder_probe_methods: tuple[str, ...] = compress.FACTOR_METHODS
    n_decoder_probe: int = 150
    """Examples per probing task on the decoder (a forward pass of the decoder per example)."""
    decoders: tuple[str, ...] = ()
    """Decoders to try first (the seed's); the profile's model is the fallback."""
    encoders: tuple[str, ...] = ()


FACTOR_CONFIGS: dict[str, FactorConfig] = {
    "smoke": FactorConfig(
        ratios=(0.35,),
        decoder_layers=(0,),
        eval_tokens=128,
        calib_tokens=128,
        context=64,
        grad_examples=1,
        n_facts=24,
        n_mc=2,
        n_fact_mc=4,
        n_probe=24,
        probe=probing.ProbeConfig(seeds=(0,), steps=20),
        encoder_calib_tokens=128,
        encoder_grad_examples=4,
        batch_size=8,
        decoder_probe_ratios=(0.35,),
        decoder_probe_methods=("svd", "svdllm"),
        n_decoder_probe=8,
    ),
    "cpu": FactorConfig(
        eval_tokens=2048,
        calib_tokens=2048,
        grad_examples=8,
        n_facts=400,
        n_mc=24,
        n_fact_mc=48,
        n_probe=200,
        probe=probing.ProbeConfig(steps=80),
        n_decoder_probe=100,
    ),
    "gpu": FactorConfig(
        eval_tokens=131_072,
        calib_tokens=65_536,
        context=1024,
        grad_examples=128,
        n_facts=8000,
        n_mc=236,
        n_fact_mc=2000,
        mc_choices=4,
        n_probe=4000,
        probe=probing.ProbeConfig(steps=300, hidden=256),
        encoder_calib_tokens=65_536,
        encoder_grad_examples=1000,
        batch_size=8,
        decoder_probe_ratios=(0.05, 0.15, 0.25),
        n_decoder_probe=2000,
        decoders=("llama-2-7b", "mistral-7b"),
        encoders=("bert-base-uncased",),
    ),
}
"""Sizes per profile: ``smoke`` for the test suite, ``cpu`` for the book on 2 cores, ``gpu`` for the seed's models."""


def factor_config_for(profile: Any) -> FactorConfig:
    """The :class:`FactorConfig` for a profile (or its name); ``profile.extra["factorization"]`` overrides fields."""
    return study_config(FACTOR_CONFIGS, profile, "factorization")
