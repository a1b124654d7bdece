"""The capability-density study's sizes: the seed's claims and :class:`DensityConfig` per run profile."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from analysis import sae
from analysis.config import study_config

SEED_RESULTS: dict[str, Any] = {
    "paper": "Capability-Guided Compression (seed 001), arXiv 2026-03",
    "model": "gpt2-medium",
    "n_heads": 384,
    "spearman_density_wanda": -0.054,
    "orthogonality claim": "capability density is statistically independent of Wanda importance",
    "phase-transition claim": "higher-density components reach their phase transition at lower compression ratios",
    "perplexity claim": "perplexity is insensitive to capability loss; PPL-based comparison "
    "on GPT-2 Medium was a negative result",
}
"""The seed's numbers and claims, printed by the chapter from here (theirs, not ours)."""


@dataclass(frozen=True)
class DensityConfig:
    """Sizes of the capability-density study for one run profile (:func:`config_for`)."""

    sae: sae.SAETrainConfig
    eval_tokens_per_domain: int
    """Evaluation tokens per domain for latent statistics (density, EV, L0, dead latents)."""
    ce_tokens: int
    """Tokens on which CE loss recovered is measured (one forward per layer and variant)."""
    calib_tokens: int
    """Calibration tokens for Wanda's input norms."""
    ablation_tokens: int
    """Tokens on which each head's ablation loss increase is measured."""
    n_screen: int
    """Facts screened for ones the model knows."""
    n_facts: int
    """Known facts used for per-head fact-recall drops and budget evaluation."""
    transition_heads: int
    """Heads (spread over the density range) whose sparsity curve is traced."""
    transition_levels: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9)
    """Per-head sparsities of the transition curves (1.0 = ablation is added)."""
    break_fraction: float = 0.5
    """A head breaks where its loss increase reaches this share of its ablation increase."""
    budget_sparsities: tuple[float, ...] = (0.3, 0.5)
    """Mean attention-weight sparsities at which allocations are compared."""
    budget_spread: float = 0.5
    """Allocation spread: sparsities run from ``mean (1 - spread)`` to ``mean (1 + spread)``."""
    ppl_tokens: int = 2048
    """Held-out tokens for the perplexity of each allocation."""
    probe_task: str = "sentiment"
    n_probe: int = 160
    """Probe examples (half train, half test)."""
    domains: tuple[str, ...] = ("wikipedia", "nyt", "reddit", "amazon", "code")
    breadth_eps: float = 0.1
    """A latent is *used* when it gets at least this share of a uniform share (``ε``)."""
    n_boot: int = 2000
    n_perm: int = 2000
    n_random: int = 1
    """Random allocations (seeds) averaged."""
    seed: int = 0
    layers: tuple[int, ...] | None = None
    """Layers whose heads are ablated and traced, and whose SAEs' CE loss recovered is measured
    (``None``: all). The density map and Wanda always cover every head."""
    extra_models: tuple[str, ...] = ()
    """Models on which the headline test is repeated when their weights are available."""


CONFIGS: dict[str, DensityConfig] = {
    "smoke": DensityConfig(
        sae=sae.SAETrainConfig(
            train_tokens=512, context=32, batch_tokens=128, expansion=1, k=8, forward_batch=8, buffer_batches=2
        ),
        eval_tokens_per_domain=64,
        ce_tokens=64,
        calib_tokens=128,
        ablation_tokens=32,
        n_screen=48,
        n_facts=2,
        transition_heads=2,
        transition_levels=(0.5,),
        budget_sparsities=(0.5,),
        ppl_tokens=128,
        n_probe=16,
        n_boot=200,
        n_perm=200,
        layers=(0, 29),
    ),
    "cpu": DensityConfig(
        sae=sae.SAETrainConfig(train_tokens=8192, context=128, batch_tokens=512, expansion=2, k=32, lr=4e-3, epochs=3),
        eval_tokens_per_domain=768,
        ce_tokens=256,
        calib_tokens=2048,
        ablation_tokens=128,
        n_screen=400,
        n_facts=16,
        transition_heads=24,
        budget_sparsities=(0.3, 0.5),
        ppl_tokens=1024,
        n_probe=100,
    ),
    "gpu": DensityConfig(
        sae=sae.SAETrainConfig(
            train_tokens=2_000_000,
            context=256,
            batch_tokens=4096,
            expansion=8,
            k=32,
            forward_batch=32,
            buffer_batches=16,
            lr=3e-4,
        ),
        eval_tokens_per_domain=16_384,
        ce_tokens=16_384,
        calib_tokens=131_072,
        ablation_tokens=8192,
        n_screen=4000,
        n_facts=200,
        transition_heads=120,
        transition_levels=(0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95),
        budget_sparsities=(0.3, 0.5, 0.7),
        ppl_tokens=65_536,
        n_probe=2000,
        n_boot=10_000,
        n_perm=10_000,
        n_random=3,
        extra_models=("gpt2-medium",),
    ),
}
"""Sizes per profile. ``cpu`` fits the chapter in about 15 minutes on 2 cores."""


def config_for(profile: Any) -> DensityConfig:
    """The :class:`DensityConfig` of a profile (or its name); ``profile.extra["sae"]`` overrides."""
    return study_config(CONFIGS, profile, "sae")
