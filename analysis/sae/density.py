"""Capability density: how many SAE features a component uses, how evenly, and how alike across inputs.

Seed 001 ("Capability-Guided Compression") defines a component's *capability density* from its
SAE activations over a diverse evaluation set; the seed only names the parts, so the
definitions here are ours. With one SAE per layer on ``hook_z`` (heads concatenated), latent
``j``'s decoder row splits into one slice per head, and the part of its activity that belongs
to head ``h`` is ``a_j · ‖d_j^{(h)}‖``. With ``M_{g,j}`` that mass summed over the tokens of
group (domain) ``g``, ``p_j = Σ_g M_{g,j} / Σ_{g,j} M_{g,j}``, and ``A`` the latents alive in
the layer's SAE on the evaluation set:

- feature breadth ``B = |{j ∈ A : p_j ≥ ε/|A|}| / |A|``: the share of live latents the
  component uses, a latent counting when it receives at least ``ε`` of a uniform share;
- activation entropy ``H = -Σ_j p_j log p_j / log |A|``, in ``[0, 1]``;
- cross-input consistency ``C = 1 - mean_{g<g'} JSD₂(q_g, q_{g'})``, with ``q_g`` the
  component's latent distribution in group ``g`` and ``JSD₂`` the Jensen–Shannon divergence in
  bits (in ``[0, 1]``): 1 when every domain uses the latents alike;
- capability density ``D = (B · H · C)^{1/3}``, their geometric mean (0 when any part is 0).

The measures take a mass array ``[..., G, F]`` (groups by latents; leading dimensions batch,
e.g. ``[layer, head, G, F]``), so they can be checked on constructed inputs;
:func:`density_map` builds the masses of every head from :class:`~analysis.sae.metrics.LatentStats`.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from analysis.sae.metrics import LatentStats
from analysis.sae.stream import sae_key


def effective_decoder(sae) -> Float[Tensor, "d_sae d_in"]:
    """Each latent's contribution to the reconstruction per unit activation:
    ``decode(e_j) - decode(0)`` (accounts for any decoder-norm rescaling)."""
    with torch.no_grad():
        eye = torch.eye(sae.cfg.d_sae, dtype=sae.W_dec.dtype, device=sae.W_dec.device)
        out = sae.decode(eye) - sae.decode(torch.zeros_like(eye[:1]))  # hook_z SAEs may decode to [.., head, d_head]
        return out.reshape(sae.cfg.d_sae, -1).float().cpu()


def _check_mass(mass: Tensor, alive: Tensor | None = None) -> tuple[Tensor, Tensor]:
    mass = torch.as_tensor(mass, dtype=torch.float64)
    if mass.numel() == 0 or mass.ndim < 2 or mass.shape[-1] == 0 or mass.shape[-2] == 0:
        raise ValueError(
            f"Empty activations (mass of shape {tuple(mass.shape)}): density needs at least "
            "one group of tokens and one latent. Pass evaluation tokens that the SAE encodes."
        )
    if (mass < 0).any() or not torch.isfinite(mass).all():
        raise ValueError("Latent mass must be finite and non-negative (SAE activations times decoder norms).")
    shape = mass.shape[:-2] + mass.shape[-1:]
    alive = (mass.sum(-2) > 0) if alive is None else torch.as_tensor(alive, dtype=torch.bool).expand(shape)
    if (alive.sum(-1) == 0).any():
        raise ValueError(
            "All SAE latents are dead on the evaluation set (no latent ever fired), so "
            "capability density is undefined. Train the SAE longer or on more varied text."
        )
    if (mass.sum((-2, -1)) == 0).any():
        raise ValueError(
            "A component has zero mass on every latent (its decoder slices or activations "
            "are all zero), so its latent distribution is undefined."
        )
    return mass, alive


def latent_distribution(mass: Float[Tensor, "... G F"]) -> Float[Tensor, "... F"]:
    """``p_j = Σ_g M_{g,j} / Σ_{g,j} M_{g,j}``: the component's share of mass on each latent."""
    pooled = torch.as_tensor(mass, dtype=torch.float64).sum(-2)
    return pooled / pooled.sum(-1, keepdim=True)


def feature_breadth(mass: Float[Tensor, "... G F"], alive: Tensor | None = None, eps: float = 0.1) -> Tensor:
    """Feature breadth ``B = |{j ∈ A : p_j ≥ ε / |A|}| / |A|``, the share of live latents used.

    ``A``: live latents (``alive``; default: latents with any mass). A uniform spread over the
    live latents gives 1; all mass on one latent gives ``1/|A|``.
    """
    mass, alive = _check_mass(mass, alive)
    p = latent_distribution(mass)
    n_alive = alive.sum(-1, keepdim=True).double()
    used = (p >= eps / n_alive) & alive
    return used.sum(-1) / n_alive.squeeze(-1)


def activation_entropy(mass: Float[Tensor, "... G F"], alive: Tensor | None = None) -> Tensor:
    """Normalised entropy ``H = -Σ_j p_j log p_j / log |A|`` of the mass over latents, in [0, 1].

    Uniform over the live latents gives 1, a single latent 0 (and ``|A| = 1`` gives 0).
    """
    mass, alive = _check_mass(mass, alive)
    p = latent_distribution(mass)
    h = -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(-1)
    n_alive = alive.sum(-1).double()
    return torch.where(n_alive > 1, h / n_alive.clamp(min=2).log(), torch.zeros_like(h))


def js_divergence(p: Tensor, q: Tensor) -> Tensor:
    """Jensen–Shannon divergence in bits, ``½ KL(p‖m) + ½ KL(q‖m)`` with ``m = ½(p + q)``; in [0, 1]."""
    m = (p + q) / 2

    def kl(a, b):
        return (a * torch.where(a > 0, (a / b.clamp(min=1e-300)).log2(), torch.zeros_like(a))).sum(-1)

    return (kl(p, m) + kl(q, m)) / 2


def cross_input_consistency(mass: Float[Tensor, "... G F"]) -> Tensor:
    """``C = 1 - mean_{g<g'} JSD₂(q_g, q_{g'})``, ``q_g = M_g / Σ_j M_{g,j}``: 1 when every
    group (domain) spreads its mass over latents alike, 0 when groups use disjoint latents."""
    mass, _ = _check_mass(mass)
    G = mass.shape[-2]
    if G < 2:
        raise ValueError("Cross-input consistency needs at least two groups of inputs (e.g. two domains).")
    totals = mass.sum(-1, keepdim=True)
    if (totals == 0).any():
        raise ValueError(
            "A component has no latent mass in one evaluation group; consistency across "
            "groups is undefined there. Use larger groups."
        )
    q = mass / totals
    pairs = [(a, b) for a in range(G) for b in range(a + 1, G)]
    jsd = torch.stack([js_divergence(q[..., a, :], q[..., b, :]) for a, b in pairs], -1)
    return 1 - jsd.mean(-1)


def capability_density(
    mass: Float[Tensor, "... G F"], alive: Tensor | None = None, eps: float = 0.1
) -> dict[str, Tensor]:
    """The three parts and their geometric mean ``D = (B · H · C)^{1/3}``."""
    b = feature_breadth(mass, alive, eps)
    h = activation_entropy(mass, alive)
    c = cross_input_consistency(mass)
    return {"breadth": b, "entropy": h, "consistency": c, "density": (b * h * c).clamp(min=0) ** (1 / 3)}


def head_mass(
    stats: LatentStats, saes: dict[str, Any], n_layers: int, n_heads: int
) -> tuple[Float[Tensor, "layer head G F"], Tensor]:
    """Per head: ``M_{g,j} = (Σ_{n∈g} a_{n,j}) · ‖d_j^{(h)}‖`` and the layer's live latents ``[L, H, F]``.

    With per-layer SAEs ``d_j^{(h)}`` is head ``h``'s slice of latent ``j``'s decoder row; with
    per-head SAEs, the head's own SAE gives the whole row.
    """
    per_layer = any(":h" not in k for k in saes)
    masses, alive = [], []
    for l in range(n_layers):
        if per_layer:
            k = sae_key(l)
            dec = effective_decoder(saes[k])  # [F, n_heads * d_head]
            dnorm = dec.view(dec.shape[0], n_heads, -1).norm(dim=-1).T.double()  # [H, F]
            masses.append(stats.sums[k][None] * dnorm[:, None, :])
            alive.append(stats.alive(k)[None].expand(n_heads, -1))
        else:
            ms, al = [], []
            for h in range(n_heads):
                k = sae_key(l, h)
                dnorm = effective_decoder(saes[k]).norm(dim=-1).double()
                ms.append(stats.sums[k] * dnorm[None])
                al.append(stats.alive(k))
            masses.append(torch.stack(ms))
            alive.append(torch.stack(al))
    return torch.stack(masses), torch.stack(alive)


def density_map(
    stats: LatentStats, saes: dict[str, Any], n_layers: int, n_heads: int, eps: float = 0.1
) -> dict[str, Float[Tensor, "layer head"]]:
    """Capability density and its three parts for every head, ``{part: [n_layers, n_heads]}``."""
    mass, alive = head_mass(stats, saes, n_layers, n_heads)
    return {k: v.float() for k, v in capability_density(mass, alive, eps).items()}
