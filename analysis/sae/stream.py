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

Several SAE settings trained on the same tokens (a sweep of ``k`` or width) need the
activations only once: an :class:`ActivationPool` collects them on first use and serves every
stream built on it (on a prefix of its tokens), so a sweep costs one forward pass.

An SAE is named by its hook (``blocks.3.attn.hook_z``), plus ``:h{head}`` when it reads one
head only (``granularity="head"``); :func:`parse_key` reads the layer and head back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Literal, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from analysis import hooks
from analysis.forward import hook_activations, windows


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


def sae_keys(
    model: HookedTransformer, granularity: str, layers: Sequence[int] | None = None
) -> list[tuple[str, int, int | None]]:
    """``(key, layer, head)`` for every SAE of a granularity."""
    layers = range(model.cfg.n_layers) if layers is None else layers
    if granularity == "layer":
        return [(sae_key(l), l, None) for l in layers]
    if granularity == "head":
        return [(sae_key(l, h), l, h) for l in layers for h in range(model.cfg.n_heads)]
    raise ValueError(f"granularity must be 'layer' or 'head', got {granularity!r}.")


def head_slices(z: Float[Tensor, "... head d_head"], head: int | None) -> Tensor:
    """``hook_z`` flattened over heads, ``[..., n_heads * d_head]``, or one head's ``[..., d_head]``."""
    return z.flatten(-2) if head is None else z[..., head, :]


@torch.no_grad()
def collect_z(
    model: HookedTransformer, seqs: Int[Tensor, "batch pos"], layers: Sequence[int], skip_first: int = 1
) -> dict[int, Float[Tensor, "batch pos head d_head"]]:
    """``hook_z`` of each of ``layers`` on ``seqs`` from one forward pass (stopped after the last
    layer needed), without the first ``skip_first`` positions."""
    layers = sorted(set(layers))
    acts = hook_activations(model, seqs, [hooks.z(l) for l in layers])
    return {l: acts[hooks.z(l)][:, skip_first:] for l in layers}


class ActivationPool:
    """``hook_z`` of every SAE key on a token stream, collected by one forward pass on first use.

    :class:`HookZStream` objects built with ``pool=`` read the first rows (their tokens must be a
    prefix of the pool's) instead of running the model again.
    """

    def __init__(
        self,
        model,
        tokens: Int[Tensor, " n"],
        context: int,
        skip_first: int = 1,
        granularity: str = "layer",
        forward_batch: int = 8,
        layers: Sequence[int] | None = None,
    ):
        self.model, self.tokens = model, torch.as_tensor(tokens).flatten()
        self.context, self.skip_first, self.granularity, self.forward_batch = (
            context,
            skip_first,
            granularity,
            forward_batch,
        )
        self.keys = sae_keys(model, granularity, layers)
        self._data: dict[str, Tensor] | None = None

    def matches(self, tokens: Tensor, cfg: "SAETrainConfig") -> bool:
        """Whether a stream of ``tokens`` under ``cfg`` can read from this pool."""
        tokens = torch.as_tensor(tokens).flatten()
        same = (cfg.context, cfg.skip_first, cfg.granularity) == (self.context, self.skip_first, self.granularity)
        return same and tokens.numel() <= self.tokens.numel() and torch.equal(tokens, self.tokens[: tokens.numel()])

    def rows(self, n_seqs: int) -> dict[str, Float[Tensor, "rows d_in"]]:
        """The activations of the first ``n_seqs`` sequences, ``{key: [n_seqs * (context - skip_first), d_in]}``."""
        if self._data is None:
            seqs = windows(self.tokens, self.context)
            layers = sorted({l for _, l, _ in self.keys})
            chunks = []
            for s in range(0, seqs.shape[0], self.forward_batch):
                z = collect_z(self.model, seqs[s : s + self.forward_batch], layers, self.skip_first)
                out = {}
                for key, l, h in self.keys:
                    x = head_slices(z[l], h)
                    out[key] = x.reshape(-1, x.shape[-1]).cpu()
                chunks.append(out)
            self._data = {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]}
        n = n_seqs * (self.context - self.skip_first)
        return {k: v[:n] for k, v in self._data.items()}


class HookZStream:
    """A multi-hook activation provider: ``{sae key: [batch_tokens, d_in]}`` per ``next()``.

    One forward pass of the model fills every key at once; ``buffer_batches`` forward batches
    are mixed (one random permutation of their tokens) before being served. The first
    ``skip_first`` positions of each sequence (the attention sink at position 0, whose outputs
    are outliers) are left out. With ``epochs > 1`` the activations of the single pass are kept
    in memory and served ``epochs`` times, reshuffled. With ``pool`` (an :class:`ActivationPool`
    whose tokens begin with ``tokens``) the activations are read from it, not recomputed.
    """

    def __init__(
        self,
        model,
        tokens: Int[Tensor, " n"],
        cfg: SAETrainConfig,
        layers: Sequence[int] | None = None,
        pool: ActivationPool | None = None,
    ):
        self.model, self.cfg = model, cfg
        if pool is not None and not pool.matches(tokens, cfg):
            raise ValueError("The activation pool does not hold these tokens under this context/skip/granularity.")
        self.pool = pool
        self.seqs = windows(tokens, cfg.context)
        self.keys = sae_keys(model, cfg.granularity, layers)
        self.layers = sorted({l for _, l, _ in self.keys})
        self.gen = torch.Generator().manual_seed(cfg.seed)
        per_epoch = (self.seqs.shape[0] * (cfg.context - cfg.skip_first)) // cfg.batch_tokens
        self.n_batches = per_epoch * cfg.epochs
        self._iter = self._batches() if cfg.epochs == 1 and pool is None else self._epochs()

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
        if self.pool is not None:
            rows = self.pool.rows(self.seqs.shape[0])
            data = {k: rows[k] for k, _, _ in self.keys}
        else:
            fb = self.cfg.forward_batch
            chunks = [self._collect(self.seqs[s : s + fb]) for s in range(0, self.seqs.shape[0], fb)]
            data = {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]}
            del chunks
        for _ in range(self.cfg.epochs):
            yield from self._serve(data, next(iter(data.values())).shape[0])
