"""AdaptiveCompress (seed 000): an SAE whose latents are gated by an EMA of their own activity.

Seed 000 ("AdaptiveCompress: dynamic feature selection for interpretable language model
compression") compresses a hidden state ``h`` (``[d_in]``) into a code and back:

- importance ``g ∈ [0, 1]^{d_sae}``, an exponential moving average over training steps of how
  often each latent is on, ``g ← α g + (1 − α) mean_batch 1[· > 0]`` with ``α = 0.99`` (its
  equation 2);
- encoder ``f(h) = LayerNorm(h) W_θ ⊙ g`` (equation 3), with only the ``⌈r(t) d_sae⌉`` most
  important latents kept, where the *retention* ``r(t)`` falls linearly from 0.999 to 0.95
  after a warmup (equation 6);
- decoder ``f⁻¹(z) = z W′_θ + 0.1 h`` (equation 4), a light skip connection;
- loss ``‖h − f⁻¹(f(h))‖² + λ ‖f(h)‖₁ + γ L_cont`` with ``λ = 0.04``, ``γ = 0.1`` (equation 5).

What the seed leaves open is ours, and each choice is a config field so the chapter can ablate it:

- *whose* activity the EMA counts (``importance_source``): the seed writes ``1[h_i > 0]`` with ``i``
  running over latents; we read it as the gated code ``f(h)`` itself (``"code"``, the literal,
  self-referential reading) or the latent before the gate (``"latent"``);
- where the EMA starts (``importance_init``): 0, as an EMA conventionally does. With the code
  reading this never opens: ``g = 0`` makes ``f = 0``, whose indicator keeps ``g`` at 0;
- the contrastive term, which the seed names but never defines: we use the mean squared cosine
  similarity between distinct decoder rows (a standard "distinct features" penalty);
- no ReLU (the seed has none; ``relu=True`` adds one) and no biases (``bias=True`` adds them).

The skip ``0.1 h`` needs the *input* in the decoder, which sae-lens's ``decode(feature_acts)``
does not receive. :meth:`AdaptiveCompressSAE.encode` therefore remembers its last input and
:meth:`~AdaptiveCompressSAE.decode` adds the skip from it (and raises if the code's shape does
not match), so ``decode(encode(x))``, the contract every sae-lens evaluation uses, is the seed's
``f⁻¹(f(h))``.

The architecture registers itself with sae-lens as ``"adaptive_compress"`` (:func:`register`,
called on first construction or load, not at import), so a trained SAE saves with
``save_model`` / ``save_inference_model`` and loads back with sae-lens's ``SAE.load_from_disk``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from jaxtyping import Float
from sae_lens.registry import (
    SAE_CLASS_REGISTRY,
    SAE_TRAINING_CLASS_REGISTRY,
    register_sae_class,
    register_sae_training_class,
)
from sae_lens.saes.sae import (
    SAE,
    SAEConfig,
    TrainCoefficientConfig,
    TrainingSAE,
    TrainingSAEConfig,
    TrainStepInput,
    TrainStepOutput,
)
from torch import Tensor, nn

ARCHITECTURE = "adaptive_compress"


def register() -> None:
    """Register AdaptiveCompress with sae-lens's SAE registries (idempotent)."""

    if ARCHITECTURE not in SAE_CLASS_REGISTRY:
        register_sae_class(ARCHITECTURE, AdaptiveCompressSAE, AdaptiveCompressSAEConfig)
    if ARCHITECTURE not in SAE_TRAINING_CLASS_REGISTRY:
        register_sae_training_class(ARCHITECTURE, AdaptiveCompressTrainingSAE, AdaptiveCompressTrainingSAEConfig)


def retention(t: int, r_init: float = 0.999, r_final: float = 0.95, warmup: int = 0, decay: int = 1) -> float:
    """The seed's schedule (equation 6): ``r_init − (r_init − r_final) · clip((t − warmup) / decay, 0, 1)``."""
    check_schedule(r_init, r_final, warmup, decay)
    return r_init - (r_init - r_final) * min(1.0, max(0.0, (t - warmup) / decay))


def check_schedule(r_init: float, r_final: float, warmup: int, decay: int) -> None:
    """Raise ``ValueError`` for a retention schedule that is not a decreasing share in (0, 1]."""
    if not (0 < r_final <= 1 and 0 < r_init <= 1):
        raise ValueError(f"Retention must lie in (0, 1]; got r_init={r_init}, r_final={r_final}.")
    if r_final > r_init:
        raise ValueError(
            f"The retention schedule must not increase (r_final={r_final} > r_init={r_init}); "
            "swap them or set r_final <= r_init."
        )
    if warmup < 0 or decay < 1:
        raise ValueError(f"Need warmup >= 0 and decay >= 1 steps; got warmup={warmup}, decay={decay}.")


def ema_closed_form(g0: float, p: float, alpha: float, t: int) -> float:
    """``g_t`` of ``g ← α g + (1 − α) p`` after ``t`` steps from ``g0`` on a constant ``p``."""
    return alpha**t * g0 + (1 - alpha**t) * p


def contrastive_loss(W_dec: Float[Tensor, "d_sae d_in"]) -> Tensor:
    """Mean squared cosine similarity between distinct decoder rows (0 when they are orthogonal)."""
    unit = W_dec / W_dec.norm(dim=1, keepdim=True).clamp(min=1e-8)
    cos = unit @ unit.T
    n = cos.shape[0]
    if n < 2:
        return cos.new_zeros(())
    return (cos.pow(2).sum() - cos.diagonal().pow(2).sum()) / (n * (n - 1))


@dataclass
class AdaptiveCompressSAEConfig(SAEConfig):
    """An AdaptiveCompress SAE for inference (the seed's defaults; ``d_sae`` is the width)."""

    skip: float = 0.1
    """Weight of the input added back by the decoder (the seed's ``0.1 h``)."""
    layer_norm: bool = True
    """LayerNorm (no affine) on the encoder's input."""
    relu: bool = False
    """ReLU on the latents before the gate (the seed has none)."""
    bias: bool = False
    """Learned encoder and decoder biases (the seed has none)."""
    apply_b_dec_to_input: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.d_sae < 1 or self.d_in < 1:
            raise ValueError(f"An SAE needs d_in >= 1 and width d_sae >= 1; got d_in={self.d_in}, d_sae={self.d_sae}.")
        register()

    @classmethod
    def architecture(cls) -> str:
        return ARCHITECTURE


class AdaptiveCompressSAE(SAE[AdaptiveCompressSAEConfig]):
    """AdaptiveCompress for inference: ``encode`` gives ``f(h)`` ``[..., d_sae]``; ``decode`` adds the skip.

    Buffers: ``importance`` ``[d_sae]`` (the EMA ``g``) and ``retained`` ``[d_sae]`` (1 for the
    latents the retention schedule keeps), saved with the weights.
    """

    b_enc: nn.Parameter

    def __init__(self, cfg: AdaptiveCompressSAEConfig, use_error_term: bool = False):
        super().__init__(cfg, use_error_term)
        self.register_buffer("importance", torch.ones(cfg.d_sae, dtype=self.dtype, device=self.device))
        self.register_buffer("retained", torch.ones(cfg.d_sae, dtype=self.dtype, device=self.device))
        self.last_input: Tensor | None = None

    def initialize_weights(self) -> None:
        super().initialize_weights()
        self.b_enc = nn.Parameter(
            torch.zeros(self.cfg.d_sae, dtype=self.dtype, device=self.device), requires_grad=self.cfg.bias
        )
        self.b_dec.requires_grad_(self.cfg.bias)

    def gate(self) -> Float[Tensor, " d_sae"]:
        """``g ⊙ retained``: the multiplier of each latent."""
        return self.importance * self.retained

    def latents(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(f(h), pre-gate latents)``, both ``[..., d_sae]``; remembers ``h`` for the skip."""
        h = self.reshape_fn_in(x.to(self.dtype))
        self.last_input = h
        sae_in = self.process_sae_in(x)
        if self.cfg.layer_norm:
            sae_in = nn.functional.layer_norm(sae_in, sae_in.shape[-1:])
        pre = self.hook_sae_acts_pre(sae_in @ self.W_enc + self.b_enc)
        acts = torch.relu(pre) if self.cfg.relu else pre
        return self.hook_sae_acts_post(acts * self.gate()), acts

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        """``f(h) = LayerNorm(h) W_θ ⊙ g``."""
        return self.latents(x)[0]

    def decode(self, feature_acts: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_in"]:
        """``z W′_θ + b_dec + skip · h``, with ``h`` the input of the last :meth:`encode`."""
        out = feature_acts @ self.W_dec + self.b_dec
        if self.cfg.skip:
            h = self.last_input
            if h is None or h.shape[:-1] != feature_acts.shape[:-1]:
                raise ValueError(
                    "AdaptiveCompress's decoder adds skip * h, the input of the last encode(); call "
                    "decode(encode(h)) on the same h (or build it with skip=0 to decode arbitrary codes)."
                )
            out = out + self.cfg.skip * h
        out = self.hook_sae_recons(out)
        out = self.run_time_activation_norm_fn_out(out)
        return self.reshape_fn_out(out, self.d_head)


@dataclass
class AdaptiveCompressTrainingSAEConfig(TrainingSAEConfig):
    """AdaptiveCompress for training: the inference fields plus the seed's training recipe."""

    skip: float = 0.1
    layer_norm: bool = True
    relu: bool = False
    bias: bool = False
    apply_b_dec_to_input: bool = False
    alpha: float = 0.99
    """EMA decay of the importance (equation 2)."""
    importance_source: Literal["code", "latent"] = "code"
    """What the EMA counts: the gated code ``f(h) > 0`` or the pre-gate latent ``> 0``."""
    importance_init: float = 0.0
    """Where the EMA starts."""
    l1_coefficient: float = 0.04
    contrastive_coefficient: float = 0.1
    r_init: float = 0.999
    r_final: float = 0.95
    warmup_steps: int = 12_000
    decay_steps: int = 12_000
    decoder_init_norm: float | None = 0.1

    def __post_init__(self):
        if self.d_sae < 1 or self.d_in < 1:
            raise ValueError(f"An SAE needs d_in >= 1 and width d_sae >= 1; got d_in={self.d_in}, d_sae={self.d_sae}.")
        if not 0 < self.alpha < 1:
            raise ValueError(f"The EMA decay alpha must lie strictly between 0 and 1; got {self.alpha}.")
        if not 0 <= self.importance_init <= 1:
            raise ValueError(f"importance_init must lie in [0, 1]; got {self.importance_init}.")
        if self.importance_source not in ("code", "latent"):
            raise ValueError(f"importance_source must be 'code' or 'latent'; got {self.importance_source!r}.")
        check_schedule(self.r_init, self.r_final, self.warmup_steps, self.decay_steps)
        register()
        super().__post_init__()

    @classmethod
    def architecture(cls) -> str:
        return ARCHITECTURE

    def retention(self, step: int) -> float:
        """``r(step)`` of this config's schedule."""
        return retention(step, self.r_init, self.r_final, self.warmup_steps, self.decay_steps)


class AdaptiveCompressTrainingSAE(TrainingSAE[AdaptiveCompressTrainingSAEConfig]):
    """AdaptiveCompress with its training step: schedule, gated forward, loss, then the EMA update."""

    b_enc: nn.Parameter
    encode_with_gate = AdaptiveCompressSAE.latents
    gate = AdaptiveCompressSAE.gate
    decode = AdaptiveCompressSAE.decode  # type: ignore[assignment]

    def __init__(self, cfg: AdaptiveCompressTrainingSAEConfig, use_error_term: bool = False):
        super().__init__(cfg, use_error_term)
        self.register_buffer(
            "importance", torch.full((cfg.d_sae,), float(cfg.importance_init), dtype=self.dtype, device=self.device)
        )
        self.register_buffer("retained", torch.ones(cfg.d_sae, dtype=self.dtype, device=self.device))
        self.last_input: Tensor | None = None

    def initialize_weights(self) -> None:
        super().initialize_weights()
        self.b_enc = nn.Parameter(
            torch.zeros(self.cfg.d_sae, dtype=self.dtype, device=self.device), requires_grad=self.cfg.bias
        )
        self.b_dec.requires_grad_(self.cfg.bias)

    def get_coefficients(self) -> dict[str, float | TrainCoefficientConfig]:
        return {"l1": self.cfg.l1_coefficient, "contrastive": self.cfg.contrastive_coefficient}

    def encode_with_hidden_pre(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.encode_with_gate(x)

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        return self.encode_with_gate(x)[0]

    @torch.no_grad()
    def set_retention(self, step: int) -> float:
        """Keep the ``⌈r(step) d_sae⌉`` latents of highest importance (ties: lower index first)."""
        r = self.cfg.retention(step)
        keep = max(1, math.ceil(r * self.cfg.d_sae - 1e-9))
        order = torch.sort(self.importance, descending=True, stable=True).indices
        self.retained.zero_()
        self.retained[order[:keep]] = 1
        return r

    @torch.no_grad()
    def update_importance(self, feature_acts: Tensor, latents: Tensor) -> None:
        """``g ← α g + (1 − α) mean_batch 1[· > 0]`` on the code or the pre-gate latents."""
        on = (feature_acts if self.cfg.importance_source == "code" else latents) > 0
        frac = on.reshape(-1, self.cfg.d_sae).float().mean(0).to(self.importance)
        self.importance.mul_(self.cfg.alpha).add_((1 - self.cfg.alpha) * frac)

    def calculate_aux_loss(self, step_input, feature_acts, hidden_pre, sae_out) -> dict[str, Tensor]:
        l1 = feature_acts.abs().sum(-1).mean() * step_input.coefficients["l1"]
        cont = contrastive_loss(self.W_dec) * step_input.coefficients["contrastive"]
        return {"l1_loss": l1, "contrastive_loss": cont}

    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        r = self.set_retention(step_input.n_training_steps)
        out = super().training_forward_pass(step_input)
        self.update_importance(out.feature_acts, out.hidden_pre)
        out.metrics["retention"] = r
        out.metrics["importance_mean"] = float(self.importance.mean())
        return out


def training_config(d_in: int, width: int, **fields) -> AdaptiveCompressTrainingSAEConfig:
    """An AdaptiveCompress training config of width ``width`` (the seed's defaults, ``fields`` override)."""
    if width < 1:
        raise ValueError(f"AdaptiveCompress needs a width (d_sae) of at least 1; got {width}.")
    return AdaptiveCompressTrainingSAEConfig(d_in=d_in, d_sae=width, **fields)


def load(path: str | Path, device: str = "cpu") -> AdaptiveCompressSAE:
    """An AdaptiveCompress SAE saved by ``save_inference_model`` (sae-lens format), registering first."""
    register()
    sae = SAE.load_from_disk(str(path), device=device)
    if not isinstance(sae, AdaptiveCompressSAE):
        raise ValueError(f"{path} holds a {type(sae).__name__}, not an AdaptiveCompress SAE.")
    return sae
