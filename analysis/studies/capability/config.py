"""The capability-density study's sizes: :class:`DensityConfig` per run profile, and the one
threshold that decides how CE loss recovered is summarised.

Fields that are sizes (token, fact and example counts, heads traced, bootstrap and permutation
draws, seeds, grids of levels, the SAE settings) carry ``metadata={"size": True}``; the rest are
choices (names, methods, switches, layers)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from analysis import sae
from analysis.config import PROFILES, study_config


@dataclass(frozen=True)
class DensityConfig:
    """Sizes of the capability-density study for one run profile (:func:`config_for`)."""

    sae: sae.SAETrainConfig = field(metadata={"size": True})
    eval_tokens_per_domain: int = field(metadata={"size": True})
    """Evaluation tokens per domain for latent statistics (density, EV, L0, dead latents)."""
    ce_tokens: int = field(metadata={"size": True})
    """Tokens on which CE loss recovered is measured (one forward per layer and variant)."""
    calib_tokens: int = field(metadata={"size": True})
    """Calibration tokens for Wanda's input norms."""
    ablation_tokens: int = field(metadata={"size": True})
    """Tokens on which each head's ablation loss increase is measured."""
    n_screen: int = field(metadata={"size": True})
    """Facts screened for ones the model knows (the same screen as the tracing study's, so one
    cached screen serves both)."""
    n_facts: int = field(metadata={"size": True})
    """Evaluation facts (the ``"eval"`` split of the shared screen) that score each budget allocation."""
    transition_heads: int = field(metadata={"size": True})
    """Heads (spread over the density range) whose sparsity curve is traced."""
    ablation_facts: int = field(default=16, metadata={"size": True})
    """The first of those facts used for per-head fact-recall drops (one forward per head and fact)."""
    transition_levels: tuple[float, ...] = field(default=(0.3, 0.5, 0.7, 0.9), metadata={"size": True})
    """Per-head sparsities of the transition curves (1.0 = ablation is added)."""
    break_fraction: float = 0.5
    """A head breaks where its loss increase reaches this share of its ablation increase."""
    budget_sparsities: tuple[float, ...] = field(default=(0.3, 0.5), metadata={"size": True})
    """Mean attention-weight sparsities at which allocations are compared."""
    budget_spread: float = 0.5
    """Allocation spread: sparsities run from ``mean (1 - spread)`` to ``mean (1 + spread)``."""
    ppl_tokens: int = field(default=2048, metadata={"size": True})
    """Held-out tokens for the perplexity of each allocation."""
    probe_task: str = "sentiment"
    n_probe: int = field(default=160, metadata={"size": True})
    """Probe examples (half train, half test)."""
    domains: tuple[str, ...] = ("wikipedia", "film_review", "code", "exam_question", "book_passage")
    """Evaluation groups (:func:`~analysis.studies.capability.run.domain_tokens`): held-out Wikipedia
    prose, then labels of the ``domain`` task (Rotten Tomatoes snippets, source code, MMLU questions,
    LAMBADA book passages)."""
    breadth_eps: float = 0.1
    """A latent is *used* when it gets at least this share of a uniform share (``ε``)."""
    n_boot: int = field(default=2000, metadata={"size": True})
    n_perm: int = field(default=2000, metadata={"size": True})
    n_random: int = field(default=5, metadata={"size": True})
    """Random allocations (seeds): each is evaluated, and capability-guided allocation is compared
    with their mean."""
    seed: int = 0
    layers: tuple[int, ...] | None = None
    """Layers whose heads are ablated and traced, and whose SAEs' CE loss recovered is measured
    (``None``: all). The density map and Wanda always cover every head."""
    extra_models: tuple[str, ...] = ()
    """Models on which the headline test is repeated when their weights are available."""
    gradient_tokens: int = field(default=512, metadata={"size": True})
    """Calibration tokens (the first of Wanda's) for the gradient importance ``|W · ∂L/∂W|``."""
    patch_facts: int = field(default=48, metadata={"size": True})
    """``"score"``-split facts (before pairing) whose subject-swapped pairs give the per-head
    causal-tracing and attribution-patching importance."""
    ladder: tuple[sae.SAETrainConfig, ...] = field(default=(), metadata={"size": True})
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
        gradient_tokens=64,
        patch_facts=8,
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
        gradient_tokens=8192,
        patch_facts=400,
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
    """The :class:`DensityConfig` of a profile (or its name); ``profile.extra["capability"]`` overrides."""
    return study_config(CONFIGS, profile, "capability")


CE_COST_FLOOR = 0.02
"""Nats: CE loss recovered divides by the cost of zero-ablating a layer's ``hook_z``; below this
cost the ratio divides by almost nothing and can fall far outside [0, 1], so the summary of CE
loss recovered also gives its median over the layers that cost at least this much to ablate."""


PPL_MARGIN = math.log(1.01)
"""Nats per token: the TOST margin within which two allocations' perplexities count as the same,
a 1% perplexity ratio. Compression tables report perplexity to two decimals at perplexities of
10-30, so 1% (0.1-0.3 perplexity) is about the smallest gap they print as a difference; the
margin is set from that convention, not from our data."""
