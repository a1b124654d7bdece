"""The AdaptiveCompress study's settings: its probing tasks, its variants, and :class:`AdaptiveConfig` per profile.

Fields marked ``metadata={"size": True}`` are sizes (tokens, samples, steps, widths, seeds, ks): a toy run
shrinks them and keeps every other field, a choice."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from analysis.config import Profile, study_config

TASK_MAP: dict[str, tuple[str, str]] = {
    "sentiment": ("sentiment of a film review (Rotten Tomatoes critic snippets)", "Amazon"),
    "sst2": ("sentiment of a film-review sentence (the SST-2 validation set)", "Amazon"),
    "domain": ("source of a text (Wikipedia, film review, code, exam question, book passage)", "AG News"),
    "language_id": ("language of a Wikipedia lead (English, Spanish, French)", "Europarl"),
    "code_language": ("programming language of a snippet (Python, C, Perl, shell)", "GitHub"),
    "profession": ("profession of a person from a WordNet gloss", "bias-in-bios"),
}
"""Our probing task -> (what it is, the seed's SAEBench task it stands in for)."""

SEED_VARIANT = "seed (as specified)"
CORRECTED = "corrected"
VARIANTS: dict[str, dict[str, Any]] = {
    SEED_VARIANT: {},
    "gate open": {"importance_init": 1.0},
    "gate open, no skip": {"importance_init": 1.0, "skip": 0.0},
    "gate open, no skip, no LayerNorm": {"importance_init": 1.0, "skip": 0.0, "layer_norm": False},
    "gate open, no schedule": {"importance_init": 1.0, "r_init": 1.0, "r_final": 1.0},
    CORRECTED: {
        "importance_init": 1.0,
        "importance_source": "latent",
        "skip": 0.0,
        "layer_norm": False,
        "relu": True,
        "bias": True,
    },
}
"""AdaptiveCompress variants: fields changed from the seed's recipe (:mod:`analysis.sae.adaptive`)."""

MAIN = (SEED_VARIANT, CORRECTED, "standard", "topk", "batchtopk")
"""SAEs trained at every layer (the ablations run at the middle layer only)."""


@dataclass(frozen=True)
class AdaptiveConfig:
    """Settings of the AdaptiveCompress study for one run profile (:func:`config_for`)."""

    train_tokens: int = field(metadata={"size": True})
    """Training tokens, collected once per layer and reused by every SAE and step."""
    eval_tokens: int = field(metadata={"size": True})
    """Held-out tokens for L0, MSE, explained variance, dead and dense latents."""
    ce_seqs: int = field(metadata={"size": True})
    """Held-out sequences on which KL and CE are measured with the reconstruction spliced in (first
    seed of each SAE only: three forward passes per SAE)."""
    steps: int = field(metadata={"size": True})
    """Training steps per SAE."""
    batch_tokens: int = field(metadata={"size": True})
    """Tokens per training step."""
    n_probe: int = field(metadata={"size": True})
    """Texts per probing task (fewer when a task has fewer)."""
    context: int = field(default=128, metadata={"size": True})
    """Tokens per window (training, held-out and KL/CE sequences)."""
    width_mult: int = field(default=1, metadata={"size": True})
    """``d_sae = width_mult * d_model`` (the seed: ``W_θ ∈ R^{d x d}``)."""
    warmup_frac: float = 0.4
    """Warmup at ``r_init`` as a share of the steps (the seed: 12k steps)."""
    decay_frac: float = 0.4
    """Steps over which retention falls to ``r_final``."""
    lr: float = 3e-4
    standard_l1: float = 1.0
    """L1 coefficient of the sae-lens standard SAE (its default) in units of activations normalised
    to ``E‖x‖² = d``: the raw coefficient is this times ``s = sqrt(E‖x‖² / d)``."""
    corrected_l1: float = 0.04
    """The corrected variant's L1 coefficient: the seed's λ in the same normalised units."""
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata={"size": True})
    """One training (and probe-split) seed per entry: their number is a size."""
    seed_layers: tuple[int, ...] = (5, 12, 19)
    seed_n_layers: int = 26
    ks: tuple[int, ...] = field(default=(1, 2, 5, 10, 20, 50), metadata={"size": True})
    """The ``k`` of top-k sparse probing (latents kept per probe)."""
    tasks: tuple[str, ...] = tuple(TASK_MAP)
    probe_max_len: int = field(default=64, metadata={"size": True})
    """Tokens per probing text (longer texts are cut)."""
    variants: tuple[str, ...] = tuple(VARIANTS)
    extra: dict = field(default_factory=dict, compare=False, hash=False)


CONFIGS: dict[str, AdaptiveConfig] = {
    "smoke": AdaptiveConfig(
        train_tokens=2048,
        eval_tokens=512,
        ce_seqs=2,
        steps=30,
        batch_tokens=256,
        n_probe=32,
        context=64,
        lr=1e-3,
        seeds=(0, 1),
        probe_max_len=32,
        ks=(1, 5, 50),
    ),
    "cpu": AdaptiveConfig(
        train_tokens=24_576,
        eval_tokens=6144,
        ce_seqs=2,
        steps=120,
        batch_tokens=512,
        n_probe=112,
        lr=1e-3,
    ),
    "gpu": AdaptiveConfig(
        train_tokens=1_000_000,
        eval_tokens=1_048_576,
        ce_seqs=256,
        steps=30_000,
        batch_tokens=4096,
        n_probe=4000,
        warmup_frac=0.4,
        probe_max_len=128,
    ),
}
"""Sizes per profile. ``gpu`` keeps the seed's recipe (lr 3e-4, 32 x 128 tokens per step, 12k warmup steps)."""


def config_for(profile: Profile | str) -> AdaptiveConfig:
    """The :class:`AdaptiveConfig` of a profile (or its name); ``profile.extra["adaptive"]`` overrides."""
    return study_config(CONFIGS, profile, "adaptive")
