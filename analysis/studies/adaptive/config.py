"""The AdaptiveCompress study's sizes: the seed's numbers, its variants, and :class:`AdaptiveConfig` per profile."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from analysis.config import study_config

SEED_RESULTS: dict[str, Any] = {
    "paper": "AdaptiveCompress: dynamic feature selection for interpretable LM compression (seed 000)",
    "model": "gemma-2-2b",
    "layers": (5, 12, 19),
    "n_layers": 26,
    "d_model": 2304,
    "MSE": 47.25,
    "L0": 0.0,
    "explained variance": -0.785,
    "KL": 15.375,
    "top-1 (baseline -> ours)": (68.43, 70.00),
    "top-5 (baseline -> ours)": (77.46, 82.00),
    "top-50 (baseline -> ours)": (90.03, 93.00),
    "AG News": 93.75,
    "Amazon": 88.32,
    "Europarl": 99.94,
    "GitHub": 96.90,
}
"""The seed's numbers (theirs, not ours); the chapter prints them from here."""

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
    """Sizes of the AdaptiveCompress study for one run profile (:func:`config_for`)."""

    train_tokens: int
    """Training tokens, collected once per layer and reused by every SAE and step."""
    eval_tokens: int
    """Held-out tokens for L0, MSE, explained variance, dead and dense latents."""
    ce_seqs: int
    """Held-out sequences on which KL and CE are measured with the reconstruction spliced in (first
    seed of each SAE only: three forward passes per SAE)."""
    steps: int
    batch_tokens: int
    n_probe: int
    """Texts per probing task (fewer when a task has fewer)."""
    context: int = 128
    width_mult: int = 1
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
    seeds: tuple[int, ...] = (0, 1, 2)
    seed_layers: tuple[int, ...] = (5, 12, 19)
    seed_n_layers: int = 26
    ks: tuple[int, ...] = (1, 2, 5, 10, 20, 50)
    tasks: tuple[str, ...] = tuple(TASK_MAP)
    probe_max_len: int = 64
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


def config_for(profile: Any) -> AdaptiveConfig:
    """The :class:`AdaptiveConfig` of a profile (or its name); ``profile.extra["adaptive"]`` overrides."""
    return study_config(CONFIGS, profile, "adaptive")
