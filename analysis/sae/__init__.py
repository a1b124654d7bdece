"""Sparse autoencoders on attention heads' outputs, and the signals computed from them.

A *sparse autoencoder* (SAE) rewrites an activation ``x`` as a sparse, non-negative code
``a = f(x)`` over ``d_sae`` latents and decodes it back, ``x̂ = a @ W_dec + b_dec``; trained
to reconstruct while using few latents at a time, its latents tend to be human-readable
features (Bricken et al. 2023; Cunningham et al. 2023). We train one TopK SAE (Gao et al.
2024: exactly ``k`` latents active per token) per attention layer on ``attn.hook_z``, the
heads' outputs before ``W_O``, concatenated across heads. Each latent's decoder row then
splits into one slice per head, and the part of a latent's activity that belongs to head
``h`` is ``a_j · ‖d_j^{(h)}‖``, the latent's activation times the norm of its decoder slice
for that head. One SAE per layer lets a feature span heads (as it does when heads cooperate)
and costs 30 SAEs rather than 270; ``granularity="head"`` trains one SAE per head instead.

The package has one room per step, in the order they run:

- :mod:`~analysis.sae.stream`: the shared ``hook_z`` activation stream (one forward pass feeds
  every layer's SAE, and an :class:`ActivationPool` every setting of a sweep) and the SAE
  names (``blocks.{l}.attn.hook_z[:h{head}]``);
- :mod:`~analysis.sae.training`: sae-lens TopK SAEs trained from that stream, cached on disk;
- :mod:`~analysis.sae.storage`: saving and loading in sae-lens's format, checked against the model;
- :mod:`~analysis.sae.metrics`: explained variance, L0, dead latents, CE loss recovered;
- :mod:`~analysis.sae.density`: capability density (breadth, entropy, consistency) per head.

The package computes SAE signals only; the capability-density study that compares them with
Wanda importance is :mod:`analysis.studies.capability`.
"""

from analysis.sae.density import (
    activation_entropy,
    capability_density,
    cross_input_consistency,
    density_map,
    effective_decoder,
    feature_breadth,
    head_mass,
    js_divergence,
    latent_distribution,
)
from analysis.sae.metrics import (
    LATENT_STATS_VERSION,
    LatentStats,
    ce_loss_recovered,
    ce_losses,
    explained_variance,
    latent_stats,
    loss_from_layer,
    residual_cache,
    sae_quality,
)
from analysis.sae.storage import SAEMismatchError, check_sae, load_sae, load_saes, save_saes
from analysis.sae.stream import (
    ActivationPool,
    HookZStream,
    SAETrainConfig,
    collect_z,
    head_slices,
    parse_key,
    sae_key,
    sae_keys,
)
from analysis.sae.training import train_saes, trained_saes, training_sae_config

__all__ = [
    "LATENT_STATS_VERSION",
    "ActivationPool",
    "HookZStream",
    "LatentStats",
    "SAEMismatchError",
    "SAETrainConfig",
    "activation_entropy",
    "capability_density",
    "ce_loss_recovered",
    "ce_losses",
    "check_sae",
    "collect_z",
    "cross_input_consistency",
    "density_map",
    "effective_decoder",
    "explained_variance",
    "feature_breadth",
    "head_mass",
    "head_slices",
    "js_divergence",
    "latent_distribution",
    "latent_stats",
    "load_sae",
    "load_saes",
    "loss_from_layer",
    "parse_key",
    "residual_cache",
    "sae_key",
    "sae_keys",
    "sae_quality",
    "save_saes",
    "train_saes",
    "trained_saes",
    "training_sae_config",
]
