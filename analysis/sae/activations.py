"""Residual-stream activations collected once, and SAEs of several architectures trained on them.

A fair comparison of SAE architectures trains every SAE on the *same* activations. Collecting
them is the expensive part (a forward pass of the model), so :func:`collect_resid` runs the model
once over the training sequences, stopping after the deepest hooked layer, and keeps
``blocks.{l}.hook_resid_post`` of every requested layer; every SAE and every epoch then reads the
same tensors. (The ``hook_z`` stream of :mod:`analysis.sae.stream` serves attention outputs to
sae-lens's multi-SAE trainer; this module serves residual states to single SAEs, whose training
curves we keep.) Positions holding the BOS token are left out, as SAEBench does, since the
attention sink's activations are outliers that no SAE should spend latents on.

:func:`train` steps any sae-lens ``TrainingSAE`` through its own ``training_forward_pass`` with
AdamW and records a training curve; :func:`baseline` builds the sae-lens baselines (standard
ReLU + L1, TopK, BatchTopK) at a given width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from jaxtyping import Float, Int
from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
from sae_lens.saes.sae import SAE, TrainStepInput
from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
from torch import Tensor
from transformer_lens import HookedTransformer

from analysis import hooks
from analysis.forward import stream
from analysis.progress import progress

BASELINES = ("standard", "topk", "batchtopk")


def check_layers(model: HookedTransformer, layers: Sequence[int]) -> list[int]:
    """``layers`` sorted, or ``ValueError`` naming the model's layer range."""
    n = model.cfg.n_layers
    bad = [l for l in layers if not 0 <= int(l) < n]
    if bad or not layers:
        raise ValueError(f"Layers {bad or list(layers)} are not in the model's 0..{n - 1}; pick layers below {n}.")
    return sorted({int(l) for l in layers})


def relative_layers(model: HookedTransformer, seed_layers: Sequence[int], seed_n_layers: int) -> list[int]:
    """The seed's layers moved to the same relative depth of ``model``: ``round(l · n / n_seed)``."""
    n = model.cfg.n_layers
    for l in seed_layers:
        if not 0 <= l < seed_n_layers:
            raise ValueError(f"Seed layer {l} is not in 0..{seed_n_layers - 1}.")
    return [min(n - 1, round(l * n / seed_n_layers)) for l in seed_layers]


@torch.no_grad()
def collect_resid(
    model: HookedTransformer,
    seqs: Int[Tensor, "seq pos"],
    layers: Sequence[int],
    batch_size: int = 8,
    bos: int | None = None,
) -> dict[int, Float[Tensor, "n d_model"]]:
    """``hook_resid_post`` of each layer at every position of ``seqs`` not holding ``bos`` (default: the
    tokenizer's BOS), one forward per batch stopped after the deepest layer; rows in sequence order."""
    layers = check_layers(model, layers)
    if bos is None and model.tokenizer is not None:
        bos = model.tokenizer.bos_token_id
    out: dict[int, list[Tensor]] = {l: [] for l in layers}
    for batch in stream(model, seqs, [hooks.resid_post(l) for l in layers], batch_size, "residual activations"):
        keep = (batch.tokens != bos) if bos is not None else torch.ones_like(batch.tokens, dtype=torch.bool)
        for l in layers:
            out[l].append(batch.acts[hooks.resid_post(l)][keep].float().cpu())
    return {l: torch.cat(v) for l, v in out.items()}


@dataclass(frozen=True)
class TrainConfig:
    """How each SAE is trained (the seed's recipe: AdamW, lr 3e-4, weight decay 0.01)."""

    steps: int
    batch_tokens: int = 4096
    """Tokens per step (the seed: 32 sequences of 128)."""
    lr: float = 3e-4
    weight_decay: float = 0.01
    log_every: int = 10
    dead_window: int = 50
    """A latent silent for this many steps counts as dead (TopK's auxiliary loss revives it)."""


def train(
    sae, acts: Float[Tensor, "n d_in"], cfg: TrainConfig, seed: int = 0, desc: str = "SAE"
) -> tuple[Any, list[dict[str, float]]]:
    """Train ``sae`` (a sae-lens ``TrainingSAE``) on rows of ``acts`` drawn with ``seed``; returns it and
    its curve: ``{step, loss, mse, l0, <aux losses>}`` every ``cfg.log_every`` steps."""
    if cfg.steps < 1 or cfg.batch_tokens < 1:
        raise ValueError(f"Need steps >= 1 and batch_tokens >= 1; got {cfg.steps}, {cfg.batch_tokens}.")

    g = torch.Generator().manual_seed(seed)
    params = [p for p in sae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    coeffs = {k: (v.value if hasattr(v, "value") else v) for k, v in sae.get_coefficients().items()}
    if sae.b_dec.requires_grad:  # start the decoder bias at the data mean (sae-lens's "mean" init)
        with torch.no_grad():
            sae.b_dec.copy_(acts.mean(0).to(sae.b_dec))
    last_fired = torch.zeros(sae.cfg.d_sae, dtype=torch.long)
    curve = []
    sae.train()
    for step in progress(range(cfg.steps), desc=desc):
        x = acts[torch.randint(len(acts), (cfg.batch_tokens,), generator=g)].to(sae.W_dec)
        dead = (step - last_fired) > cfg.dead_window
        out = sae.training_forward_pass(TrainStepInput(x, coeffs, dead.to(x.device), step, False))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        fired = (out.feature_acts != 0).any(0).cpu()
        last_fired[fired] = step
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            row = {"step": step, "loss": float(out.loss.detach())}
            row.update({k: float(v.detach()) for k, v in out.losses.items()})
            row["l0"] = float((out.feature_acts != 0).float().sum(-1).mean())
            curve.append(row)
    sae.eval()
    return sae, curve


def baseline(kind: str, d_in: int, width: int, k: float = 32, l1: float = 1.0, device: str = "cpu"):
    """A sae-lens training SAE of ``kind`` (:data:`BASELINES`) and width ``width``: ``standard``
    (ReLU + L1 of coefficient ``l1``), ``topk`` (``k`` per token) or ``batchtopk`` (``k`` per token
    on average over a batch)."""
    if width < 1:
        raise ValueError(f"An SAE needs a width of at least 1; got {width}.")
    if kind == "standard":
        return StandardTrainingSAE(StandardTrainingSAEConfig(d_in=d_in, d_sae=width, l1_coefficient=l1, device=device))
    if kind == "topk":
        return TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d_in, d_sae=width, k=max(1, round(k)), device=device))
    if kind == "batchtopk":
        return BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(d_in=d_in, d_sae=width, k=max(1.0, k), device=device))
    raise ValueError(f"Unknown baseline {kind!r}; use one of {', '.join(BASELINES)}.")


def for_inference(sae, folder) -> Any:
    """The inference form of a trained SAE, through sae-lens's save and load (BatchTopK becomes
    JumpReLU with its learned threshold)."""

    sae.save_inference_model(folder)
    return SAE.load_from_disk(str(folder), device=str(sae.device))
