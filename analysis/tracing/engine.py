"""The restoration engine: many restored runs of one corrupted prompt, sharing their work.

Exact causal tracing needs one forward pass per restored state, ``layers x positions x
kinds`` of them per fact, each repeated for every noise sample. TransformerLens's
``patching`` module runs each as a full hooked forward pass. The engine computes the same
numbers with less work:

1. one forward pass over ``[clean, corrupted sample 1, ..., S]`` caches the clean states to
   restore and the corrupted run's residual stream, keys and values (:func:`clean_and_corrupted`);
2. restorations at the same position ``p`` form one batch (:func:`restore`); each row joins
   the batch at the layer it patches, starting from the corrupted residual stream cached there,
   since nothing before that layer differs from the corrupted run;
3. only positions ``p..end`` are recomputed; earlier positions are the corrupted run's, and
   attention reads their cached keys and values (a :class:`~.blocks.Prefix`, read by the
   block runners of :mod:`.blocks`);
4. states that provably equal their corrupted value (positions before the first corrupted
   token) are not recomputed at all (:func:`no_effect`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from analysis import hooks
from analysis.forward import final_logits
from analysis.progress import progress
from analysis.tracing.blocks import Patches, Prefix, TLBlocks, block_runner
from analysis.tracing.corrupt import embed_rows_hook
from analysis.tracing.inputs import WINDOWED, Prepared, window_layers


@dataclass
class Runs:
    """Clean activations and the corrupted run's cache, shared by every restoration."""

    clean: dict[str, Float[Tensor, "layer pos d_model"]]
    clean_logits: Float[Tensor, " d_vocab"]
    corrupt_resid: Float[Tensor, "sample layer pos d_model"]
    prefix: Prefix
    """The corrupted run's keys and values per layer."""
    corrupt_probs: Float[Tensor, " sample"]
    noise: Float[Tensor, "sample subj d_model"] | None
    corrupt_tokens: Int[Tensor, "sample pos"]
    first_changed: int


def clean_and_corrupted(
    model: HookedTransformer,
    fact: Prepared,
    corrupt_tokens: Tensor,
    eps: Tensor | None,
    first_changed: int,
    kinds: Iterable[str],
) -> Runs:
    """Clean activations of the kinds restored, plus the corrupted residual stream, keys and values.

    One forward pass over the batch ``[clean, corrupted sample 1, ..., corrupted sample S]``.
    """
    dev = model.cfg.device
    kinds = set(kinds)
    L = model.cfg.n_layers
    names = {hooks.act_name(h, l) for h in kinds for l in range(L)}
    names |= {n for l in range(L) for n in (hooks.resid_pre(l), hooks.k(l), hooks.v(l))}
    batch = torch.cat([fact.tokens[None], corrupt_tokens]).to(dev)
    with torch.no_grad(), model.hooks(fwd_hooks=[("hook_embed", embed_rows_hook(eps, fact.subject_span))]):
        logits, cache = model.run_with_cache(batch, names_filter=lambda n: n in names)
    clean = {h: torch.stack([cache[hooks.act_name(h, l)][0] for l in range(L)]) for h in kinds}
    resid = torch.stack([cache[hooks.resid_pre(l)][1:] for l in range(L)], dim=1)
    keys = tuple(cache[hooks.k(l)][1:] for l in range(L))
    values = tuple(cache[hooks.v(l)][1:] for l in range(L))
    prefix = Prefix(keys, values, n_samples=resid.shape[0])
    probs = torch.softmax(logits[1:, -1].float(), dim=-1)[:, fact.target_id]
    return Runs(clean, logits[0, -1], resid, prefix, probs.cpu(), eps, corrupt_tokens, first_changed)


@dataclass(frozen=True)
class Site:
    """One restoration: ``hook`` at ``layers`` (the window reported at ``layer``), position ``pos``."""

    hook: str
    layer: int
    layers: tuple[int, ...]
    pos: int

    @property
    def start(self) -> int:
        """The first layer the restoration patches (where its row joins the batch)."""
        return min(self.layers)


def sites(hook_names: Sequence[str], positions: Sequence[int], n_layers: int, window: int) -> list[Site]:
    """Every restoration of a trace: each hook at each layer (with its window) and position."""
    return [
        Site(h, l, window_layers(l, window, n_layers) if h in WINDOWED else (l,), p)
        for h in hook_names
        for l in range(n_layers)
        for p in positions
    ]


def no_effect(site: Site, runs: Runs) -> bool:
    """True when the site's clean state provably equals its corrupted state (nothing to recompute)."""
    if site.pos < runs.first_changed:
        return True  # causal attention: earlier positions are untouched by the corruption
    if site.hook == "hook_resid_pre":
        clean = runs.clean["hook_resid_pre"][site.layers[0], site.pos]
        return bool(
            torch.equal(runs.corrupt_resid[:, site.layers[0], site.pos], clean.expand(runs.corrupt_resid.shape[0], -1))
        )
    return False


def restore(
    model: HookedTransformer,
    runs: Runs,
    todo: Sequence[Site],
    target_id: int,
    max_rows: int = 1024,
    desc: str = "restore",
    fast: bool | None = None,
) -> Float[Tensor, "site sample"]:
    """Target probability, per noise sample, with each site's clean state restored.

    Sites are grouped by position ``p``. A group is one batch whose rows join at the layer
    they patch, from the corrupted residual stream, and whose forward pass covers only
    positions ``p..end``; earlier positions come from the corrupted run's keys and values.
    """
    runner = block_runner(model, fast)
    S = runs.corrupt_resid.shape[0]
    out = torch.empty(len(todo), S)
    by_pos: dict[int, list[int]] = {}
    for i, site in enumerate(todo):
        by_pos.setdefault(site.pos, []).append(i)
    per_chunk = max(1, max_rows // S)
    chunks: list[tuple[int, list[int]]] = []
    for p, idx in sorted(by_pos.items()):
        idx = sorted(idx, key=lambda i: todo[i].start)
        chunks += [(p, idx[k : k + per_chunk]) for k in range(0, len(idx), per_chunk)]
    with torch.no_grad():
        for p, idx in progress(chunks, desc=desc):
            out[idx] = restore_chunk(runner, runs, [todo[i] for i in idx], p, target_id)
    return out


def restore_chunk(
    runner: TLBlocks, runs: Runs, chunk: list[Site], p: int, target_id: int
) -> Float[Tensor, "site sample"]:
    """One batched, suffix-only, start-at-layer forward pass for sites at one position."""
    model = runner.model
    dev = model.cfg.device
    S, L = runs.corrupt_resid.shape[0], model.cfg.n_layers
    n = len(chunk)
    sample = torch.arange(S, device=dev).repeat(n)  # row r = site r // S, sample r % S
    first = min(s.start for s in chunk)
    resid = None
    for j in range(first, L):
        joining = [i for i in range(n) if chunk[i].start == j]
        if joining:
            new = runs.corrupt_resid[:, j, p:].repeat(len(joining), 1, 1)  # [len*S, suffix, d]
            for k, i in enumerate(joining):
                if chunk[i].hook == "hook_resid_pre":
                    new[k * S : (k + 1) * S, 0] = runs.clean["hook_resid_pre"][j, p]
            resid = new if resid is None else torch.cat([resid, new])
        rows = resid.shape[0]
        patches: Patches = {}
        for hook in ("hook_attn_out", "hook_mlp_out", "hook_resid_post"):
            idx = [
                r for i, s in enumerate(chunk) if s.hook == hook and j in s.layers for r in range(i * S, (i + 1) * S)
            ]
            if idx:
                patches[hook] = (torch.tensor(idx, device=dev), runs.clean[hook][j, p])
        resid = runner.block(j, resid, runs.prefix, p, sample[:rows], patches, last=(j == L - 1))
    probs = torch.softmax(final_logits(model, resid[:, -1]).float(), dim=-1)[:, target_id]
    return probs.view(n, S).cpu()
