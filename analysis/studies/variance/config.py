"""The variance study's sizes per run profile (:class:`VarianceConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from analysis.config import study_config

CACHE_VERSION = 1
"""Part of every cached result's key; bumped when a result changes for the same inputs."""


TOKENS_PER_UNKNOWN = 35
"""Training tokens we require per unknown of a block's affine map (``d_model + 1`` per output): a
least-squares fit with fewer samples per parameter overfits and its held-out R² drops."""


@dataclass(frozen=True)
class VarianceConfig:
    """Sizes of seed 003's study for one run profile (see :func:`config_for`)."""

    fit_tokens: int = field(default=20_480, metadata={"size": True})
    """Training-split tokens for the block maps and the tuned lens: 35 per dimension of SmolLM2 (35 x 577)."""
    direction_tokens: int = field(default=2048, metadata={"size": True})
    """Training-split tokens for the gradient covariance (one backward pass each)."""
    eval_tokens: int = field(default=2048, metadata={"size": True})
    """Held-out tokens: R², perplexity of replaced and quantized models, CCA samples."""
    linearity_tokens: int = field(default=4096, metadata={"size": True, "cache_key": False})
    """Held-out tokens scoring the block maps (R² per window: the linearity verdicts' units); the
    linearity step's own key records it."""
    replace_tokens: int = field(default=4096, metadata={"size": True, "cache_key": False})
    """Held-out tokens scoring block replacement (perplexity per window); the replacement step's key records it."""
    ablation_tokens: int = field(default=512, metadata={"size": True})
    """Held-out tokens scored per ablation cell."""
    quant_tokens: int = field(default=4096, metadata={"size": True})
    """Held-out tokens scored per quantization cell (16 windows under ``cpu``: the direct-vs-factor
    verdict resamples windows and needs at least ``MIN_UNITS`` of them)."""
    exit_tokens: int = field(default=4096, metadata={"size": True})
    """Held-out tokens for the lenses and early exit (the easy share resamples these windows)."""
    cca_tokens: int = field(default=4096, metadata={"size": True})
    """Held-out tokens whose windows each give one canonical correlation per layer (the units of
    the variance-vs-predictive verdict)."""
    gap_tokens: int = field(default=4096, metadata={"size": True})
    """Held-out tokens scored with ``k_overlap`` variance / gradient directions removed at each
    ablation depth: the causal part of the variance-vs-predictive verdict, per window."""
    context: int = field(default=256, metadata={"size": True})
    batch_size: int = field(default=8, metadata={"size": True})
    ablation_layers: tuple[float, ...] = (0.1, 0.5, 0.9)
    """Depths (fractions of the layer count) where directions are projected out."""
    ks: tuple[int, ...] = field(default=(1, 8, 64), metadata={"size": True})
    """Directions removed (d_model is always added: everything removed)."""
    k_overlap: int = field(default=8, metadata={"size": True})
    """Subspace size for the overlap (principal angles, CCA) and the causal verdict."""
    uncorrelated_below: float = 0.3
    """A canonical correlation below this counts as "uncorrelated"."""
    keep_ranks: tuple[int, ...] = field(default=(8, 64), metadata={"size": True})
    """Ranks kept in the compression view (keep only the top-r variance directions)."""
    quant_bits: tuple[int, ...] = field(default=(2, 3, 4, 8), metadata={"size": True})
    quant_layers: tuple[float, ...] | None = None
    """Depths whose block weights are quantized (None: every block)."""
    amp_layers: tuple[float, ...] | None = None
    """Depths whose weights are measured for error amplification (None: every block; the verdict
    resamples blocks, so it needs at least ``MIN_UNITS`` of them)."""
    replace_ratio: float = 34.0
    """Compression of a rank-r block map (the seed's 34x)."""
    multi_blocks: tuple[int, ...] = field(default=(1, 2, 4, 8), metadata={"size": True})
    """How many of the last blocks are replaced together."""
    exit_threshold: float = 0.9
    """Confidence threshold of the easy-token verdict, fixed before looking (CALM-style)."""
    thresholds: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
    seed: int = 0
    models: tuple[str, ...] = field(default=(), metadata={"cache_key": False})  # model_key names the model
    """The seed's models, tried in order before the profile's (:func:`analysis.models.first_available`);
    run the chapter again with ``{"gpu": {"extra": {"variance": {"models": ["mistral-7b"]}}}}`` in
    ``$ANALYSIS_PROFILE_OVERRIDES`` for the other one."""


CONFIGS: dict[str, VarianceConfig] = {
    "smoke": VarianceConfig(
        fit_tokens=1024,
        direction_tokens=256,
        eval_tokens=256,
        linearity_tokens=256,
        replace_tokens=256,
        ablation_tokens=128,
        quant_tokens=256,
        exit_tokens=256,
        cca_tokens=256,
        gap_tokens=256,
        context=128,
        batch_size=4,
        ablation_layers=(0.5,),
        ks=(8,),
        keep_ranks=(8,),
        quant_bits=(4,),
        quant_layers=(0.5,),
        amp_layers=(0.5,),
        multi_blocks=(1, 2),
        thresholds=(0.5, 0.9),
    ),
    "cpu": VarianceConfig(),
    "gpu": VarianceConfig(
        fit_tokens=160_000,
        direction_tokens=16_384,
        eval_tokens=65_536,
        linearity_tokens=65_536,
        replace_tokens=65_536,
        ablation_tokens=16_384,
        quant_tokens=16_384,
        exit_tokens=16_384,
        cca_tokens=16_384,
        gap_tokens=16_384,
        context=1024,
        batch_size=8,
        ablation_layers=(0.0, 0.25, 0.5, 0.75, 0.97),
        ks=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
        keep_ranks=(1, 4, 16, 64, 256, 512),
        quant_bits=(2, 3, 4, 6, 8),
        multi_blocks=(1, 2, 4, 8, 16),
        models=("gpt2", "mistral-7b"),
    ),
}
"""``smoke``: the test suite; ``cpu``: the book on 2 cores; ``gpu``: larger samples (and the profile's model)."""


def config_for(profile: Any) -> VarianceConfig:
    """The :class:`VarianceConfig` for a profile (or its name); ``profile.extra["variance"]`` overrides fields."""
    return study_config(CONFIGS, profile, "variance")
