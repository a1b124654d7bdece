"""The activation stream that feeds the SAEs: every layer's ``hook_z`` from one forward pass.

An SAE learns from activations, not from text. sae-lens's own runner reads one hook per run,
so training an SAE on each of 30 layers would run the model 30 times over the same tokens.
Here one forward pass (stopped after the last layer needed) yields ``blocks.{l}.attn.hook_z``
for every layer at once, and :class:`HookZStream` serves ``{sae key: [batch_tokens, d_in]}``
dictionaries: the ``MultiHookDataProvider`` that sae-lens's ``MultiSAETrainer`` consumes.

Like sae-lens's activation store, the stream mixes several forward batches before serving
them (tokens of one sequence are correlated, and an SAE trained on them in order overfits
each document in turn). The first ``skip_first`` positions of every sequence are left out:
position 0 is the attention sink, whose outputs are outliers a small SAE should not spend
latents on.

An SAE is named by its hook (``blocks.3.attn.hook_z``), plus ``:h{head}`` when it reads one
head only (``granularity="head"``); :func:`parse_key` reads the layer and head back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Literal, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from analysis import hooks


@dataclass(frozen=True)
class SAETrainConfig:
    """How the hook_z SAEs are trained (sae-lens TopK SAEs, one shared activation stream)."""

    train_tokens: int
    """Training tokens per SAE (every SAE sees every token once)."""
    granularity: Literal["layer", "head"] = "layer"
    """One SAE per layer on all heads concatenated, or one per head."""
    expansion: int = 2
    """``d_sae = expansion * d_in``."""
    k: int = 32
    """Active latents per token (TopK)."""
    context: int = 128
    """Tokens per training sequence."""
    batch_tokens: int = 256
    """SAE training batch (tokens per optimizer step)."""
    lr: float = 4e-3
    forward_batch: int = 8
    """Sequences per model forward pass while collecting activations."""
    buffer_batches: int = 4
    """Forward batches mixed (shuffled together) before they are served."""
    epochs: int = 1
    """Passes over the training tokens (activations of one forward pass, kept in memory)."""
    skip_first: int = 1
    """Leading positions of each sequence left out (position 0 is an attention sink)."""
    seed: int = 0


def sae_key(layer: int, head: int | None = None) -> str:
    """The name of one SAE: its hook name, plus ``:h{head}`` for a per-head SAE."""
    return hooks.z(layer) if head is None else f"{hooks.z(layer)}:h{head}"


def parse_key(key: str) -> tuple[int, int | None]:
    """``(layer, head)`` of an SAE key (``head`` is None for a per-layer SAE)."""
    hook, _, head = key.partition(":h")
    return hooks.layer_of(hook), (int(head) if head else None)


def sae_keys(model, granularity: str, layers: Sequence[int] | None = None) -> list[tuple[str, int, int | None]]:
    """``(key, layer, head)`` for every SAE of a granularity."""
    layers = range(model.cfg.n_layers) if layers is None else layers
    if granularity == "layer":
        return [(sae_key(l), l, None) for l in layers]
    if granularity == "head":
        return [(sae_key(l, h), l, h) for l in layers for h in range(model.cfg.n_heads)]
    raise ValueError(f"granularity must be 'layer' or 'head', got {granularity!r}.")


def sequences(tokens: Int[Tensor, " n"], context: int) -> Int[Tensor, "seq context"]:
    """A 1-D token stream cut into whole sequences of ``context`` tokens (the tail is dropped)."""
    tokens = torch.as_tensor(tokens).flatten()
    n = tokens.numel() // context
    if n == 0:
        raise ValueError(f"Need at least context={context} tokens, got {tokens.numel()}.")
    return tokens[: n * context].view(n, context)


def head_slices(z: Float[Tensor, "... head d_head"], head: int | None) -> Tensor:
    """``hook_z`` flattened over heads, ``[..., n_heads * d_head]``, or one head's ``[..., d_head]``."""
    return z.flatten(-2) if head is None else z[..., head, :]


@torch.no_grad()
def collect_z(
    model, seqs: Int[Tensor, "batch pos"], layers: Sequence[int], skip_first: int = 1
) -> dict[int, Float[Tensor, "batch pos head d_head"]]:
    """``hook_z`` of each of ``layers`` on ``seqs`` from one forward pass (stopped after the last
    layer needed), without the first ``skip_first`` positions."""
    store: dict[int, Tensor] = {}

    def grab(act, hook):
        store[hooks.layer_of(hook.name)] = act[:, skip_first:].detach()

    model.run_with_hooks(
        seqs.to(model.cfg.device),
        return_type=None,
        stop_at_layer=max(layers) + 1,
        fwd_hooks=[(hooks.z(l), grab) for l in sorted(set(layers))],
    )
    return store


class HookZStream:
    """A multi-hook activation provider: ``{sae key: [batch_tokens, d_in]}`` per ``next()``.

    One forward pass of the model fills every key at once; ``buffer_batches`` forward batches
    are mixed (one random permutation of their tokens) before being served. The first
    ``skip_first`` positions of each sequence (the attention sink at position 0, whose outputs
    are outliers) are left out. With ``epochs > 1`` the activations of the single pass are kept
    in memory and served ``epochs`` times, reshuffled.
    """

    def __init__(self, model, tokens: Int[Tensor, " n"], cfg: SAETrainConfig, layers: Sequence[int] | None = None):
        self.model, self.cfg = model, cfg
        self.seqs = sequences(tokens, cfg.context)
        self.keys = sae_keys(model, cfg.granularity, layers)
        self.layers = sorted({l for _, l, _ in self.keys})
        self.gen = torch.Generator().manual_seed(cfg.seed)
        per_epoch = (self.seqs.shape[0] * (cfg.context - cfg.skip_first)) // cfg.batch_tokens
        self.n_batches = per_epoch * cfg.epochs
        self._iter = self._batches() if cfg.epochs == 1 else self._epochs()

    def __iter__(self) -> "HookZStream":
        return self

    def __next__(self) -> dict[str, Tensor]:
        return next(self._iter)

    def _collect(self, seqs: Tensor) -> dict[str, Tensor]:
        z = collect_z(self.model, seqs, self.layers, self.cfg.skip_first)
        out = {}
        for key, l, h in self.keys:
            x = head_slices(z[l], h)
            out[key] = x.reshape(-1, x.shape[-1]).cpu()
        return out

    def _serve(self, data: dict[str, Tensor], n: int) -> Iterator[dict[str, Tensor]]:
        """Every full batch of one random permutation of ``data``'s ``n`` rows; the rest is returned."""
        perm = torch.randperm(n, generator=self.gen)
        n_full = n // self.cfg.batch_tokens
        for b in range(n_full):
            idx = perm[b * self.cfg.batch_tokens : (b + 1) * self.cfg.batch_tokens]
            yield {k: v[idx] for k, v in data.items()}
        return perm[n_full * self.cfg.batch_tokens :]

    def _batches(self) -> Iterator[dict[str, Tensor]]:
        cfg, fb = self.cfg, self.cfg.forward_batch
        starts = list(range(0, self.seqs.shape[0], fb))
        leftover: dict[str, Tensor] | None = None
        for i in range(0, len(starts), cfg.buffer_batches):
            chunks = [self._collect(self.seqs[s : s + fb]) for s in starts[i : i + cfg.buffer_batches]]
            buf = {k: torch.cat(([leftover[k]] if leftover else []) + [c[k] for c in chunks]) for k in chunks[0]}
            rest = yield from self._serve(buf, next(iter(buf.values())).shape[0])
            leftover = {k: v[rest] for k, v in buf.items()} if rest.numel() else None

    def _epochs(self) -> Iterator[dict[str, Tensor]]:
        fb = self.cfg.forward_batch
        chunks = [self._collect(self.seqs[s : s + fb]) for s in range(0, self.seqs.shape[0], fb)]
        data = {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]}
        del chunks
        for _ in range(self.cfg.epochs):
            yield from self._serve(data, next(iter(data.values())).shape[0])
