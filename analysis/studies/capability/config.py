"""The capability-density study's sizes: the seed's claims and :class:`DensityConfig` per run profile."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from analysis import sae
from analysis.config import PROFILES, study_config

SEED_RESULTS: dict[str, Any] = {
    "paper": "Capability-Guided Compression (seed 001), arXiv 2026-03",
    "model": "gpt2-medium",
    "n_heads": 384,
    "spearman_density_wanda": -0.054,
    "orthogonality claim": "capability density is statistically independent of Wanda importance scores",
    "phase-transition claim": "components with higher capability density exhibit lower structural redundancy "
    "and reach their individual phase transition points at lower compression ratios",
    "perplexity claim": "the insensitivity of perplexity-based evaluation to reasoning capability loss "
    "(a negative result on PPL-based compression comparison on GPT-2 Medium)",
    "allocation claim": "SAE-derived capability density maps allocate differential compression budgets "
    "across transformer components (Capability-Guided Compression)",
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
    """Facts screened for ones the model knows (the same screen as the tracing study's, so one
    cached screen serves both)."""
    n_facts: int
    """Evaluation facts (the ``"eval"`` split of the shared screen) that score each budget allocation."""
    transition_heads: int
    """Heads (spread over the density range) whose sparsity curve is traced."""
    ablation_facts: int = 16
    """The first of those facts used for per-head fact-recall drops (one forward per head and fact)."""
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
    domains: tuple[str, ...] = ("wikipedia", "film_review", "code", "exam_question", "book_passage")
    """Evaluation groups (:func:`~analysis.studies.capability.runner.domain_tokens`): held-out Wikipedia
    prose, then labels of the ``domain`` task (Rotten Tomatoes snippets, source code, MMLU questions,
    LAMBADA book passages)."""
    breadth_eps: float = 0.1
    """A latent is *used* when it gets at least this share of a uniform share (``ε``)."""
    n_boot: int = 2000
    n_perm: int = 2000
    n_random: int = 5
    """Random allocations (seeds): each is evaluated, and capability-guided allocation is compared
    with their mean."""
    seed: int = 0
    layers: tuple[int, ...] | None = None
    """Layers whose heads are ablated and traced, and whose SAEs' CE loss recovered is measured
    (``None``: all). The density map and Wanda always cover every head."""
    extra_models: tuple[str, ...] = ()
    """Models on which the headline test is repeated when their weights are available."""
    ladder: tuple[sae.SAETrainConfig, ...] = ()
    """Cheaper SAE settings (rising quality, ending below ``sae``) on which the headline test is
    repeated, so the orthogonality verdict can depend on SAE fidelity."""


CONFIGS: dict[str, DensityConfig] = {
    "smoke": DensityConfig(
        sae=sae.SAETrainConfig(
            train_tokens=512, context=32, batch_tokens=128, expansion=1, k=8, forward_batch=8, buffer_batches=2
        ),
        eval_tokens_per_domain=64,
        ce_tokens=64,
        calib_tokens=128,
        ablation_tokens=32,
        n_screen=PROFILES["smoke"].n_facts,
        n_facts=16,
        ablation_facts=2,
        transition_heads=2,
        transition_levels=(0.5,),
        budget_sparsities=(0.5,),
        ppl_tokens=128,
        n_probe=16,
        n_boot=200,
        n_perm=200,
        layers=(0, 29),
        ladder=(
            sae.SAETrainConfig(
                train_tokens=256, context=32, batch_tokens=128, expansion=1, k=4, forward_batch=8, buffer_batches=2
            ),
        ),
    ),
    "cpu": DensityConfig(
        sae=sae.SAETrainConfig(train_tokens=8192, context=128, batch_tokens=512, expansion=2, k=64, lr=4e-3, epochs=3),
        eval_tokens_per_domain=768,
        ce_tokens=256,
        calib_tokens=2048,
        ablation_tokens=128,
        n_screen=PROFILES["cpu"].n_facts,
        n_facts=200,
        ablation_facts=16,
        transition_heads=24,
        budget_sparsities=(0.3, 0.5),
        ppl_tokens=2048,
        n_probe=100,
        ladder=(  # the same training tokens (one activation pass), fewer steps and active latents
            sae.SAETrainConfig(train_tokens=4096, context=128, batch_tokens=512, expansion=2, k=16, lr=4e-3),
            sae.SAETrainConfig(train_tokens=8192, context=128, batch_tokens=512, expansion=2, k=32, lr=4e-3),
        ),
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
        n_screen=PROFILES["gpu"].n_facts,
        n_facts=1000,
        ablation_facts=200,
        transition_heads=120,
        transition_levels=(0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95),
        budget_sparsities=(0.3, 0.5, 0.7),
        ppl_tokens=65_536,
        n_probe=2000,
        n_boot=10_000,
        n_perm=10_000,
        n_random=10,
        extra_models=("gpt2-medium",),
        ladder=(
            sae.SAETrainConfig(train_tokens=250_000, context=256, batch_tokens=4096, expansion=4, k=16, lr=3e-4),
            sae.SAETrainConfig(train_tokens=1_000_000, context=256, batch_tokens=4096, expansion=8, k=32, lr=3e-4),
        ),
    ),
}
"""Sizes per profile. ``cpu`` keeps the SAE cost of the earlier chapter (one forward pass over
8,192 training tokens; the ladder only adds SAE steps on the same activations) and aims at about
15 minutes on 2 uncontended cores (not measured at this scale; see the chapter's timings)."""


def config_for(profile: Any) -> DensityConfig:
    """The :class:`DensityConfig` of a profile (or its name); ``profile.extra["sae"]`` overrides."""
    return study_config(CONFIGS, profile, "sae")
