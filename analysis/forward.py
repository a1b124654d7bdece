"""The forward core: every pass of a model over text goes through these few functions.

A study never writes its own batching loop. It cuts a token stream into windows (:func:`windows`),
streams the activations of the hooks it needs batch by batch (:func:`stream`), pools them per
sequence where one vector per text is wanted (:func:`pool`, :func:`text_features`), and turns
logits into per-token log-probabilities (:func:`logprobs`). Prompts of different lengths are
right-padded (:func:`right_pad`, :func:`prompt_batch`): with causal attention, right padding
leaves every real position's activations exactly as they are unpadded, so a prompt's last real
position (``last``) is where its next-token prediction is read.

The hook names are TransformerLens's (``blocks.{l}.hook_resid_post``, ``hook_z``…); a pass that
only needs blocks up to layer ``l`` stops there (``stop_at_layer``), so no unembedding is paid for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Literal, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.utilities.activation_functions import apply_softcap

from analysis import hooks
from analysis.progress import progress

Pool = Literal["all", "last", "mean"]


def windows(tokens: Int[Tensor, " n"], context: int, bos: int | None = None) -> Int[Tensor, "window context"]:
    """A 1-D token stream cut into disjoint windows of ``context`` tokens (the tail that does not fill
    one is dropped). With ``bos``, each window holds ``context - 1`` stream tokens after ``bos``."""
    tokens = torch.as_tensor(tokens).flatten()
    if context < 2:
        raise ValueError(f"context must be at least 2 tokens, got {context}.")
    body = context if bos is None else context - 1
    n = tokens.numel() // body
    if n == 0:
        raise ValueError(
            f"Need at least context={body} tokens for one window, got {tokens.numel()}. Pass more text, e.g. "
            "analysis.data.lm_tokens(tokenizer, 'calib', n_tokens=...)."
        )
    out = tokens[: n * body].view(n, body)
    if bos is not None:
        out = torch.cat([torch.full((n, 1), bos, dtype=out.dtype), out], 1)
    return out


def batch_rows(n: int, batch_size: int, desc: str | None = None) -> Iterator[slice]:
    """Row slices of at most ``batch_size`` covering ``0..n``, on a progress bar when ``desc`` is given."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    starts = range(0, n, batch_size)
    for i in progress(starts, desc=desc) if desc else starts:
        yield slice(i, min(i + batch_size, n))


def stop_layer(names: Sequence[str]) -> int | None:
    """The layer after the deepest block the hook ``names`` read (``None`` if one lies past the blocks)."""
    layers = [hooks.layer_of(n) if n.startswith("blocks.") else None for n in names]
    return None if not layers or None in layers else max(layers) + 1


@dataclass(frozen=True)
class Batch:
    """One batch of a :func:`stream`: its rows, tokens ``[batch, pos]`` and the hooks' activations."""

    rows: slice
    tokens: Int[Tensor, "batch pos"]
    acts: dict[str, Tensor]
    """``{hook name: [batch, pos, ...]}`` as the hook saw it (on the model's device)."""


def hook_activations(model: HookedTransformer, x: Int[Tensor, "batch pos"], names: Sequence[str]) -> dict[str, Tensor]:
    """``{hook name: [batch, pos, ...]}`` for ``x`` (on the model's device) from one forward pass,
    stopped after the deepest block a name reads (:func:`stop_layer`)."""
    wanted = set(names)
    _, cache = model.run_with_cache(
        x.to(model.cfg.device), names_filter=lambda n: n in wanted, stop_at_layer=stop_layer(names), return_type=None
    )
    return {n: cache[n] for n in names}


def stream(
    model: HookedTransformer,
    inputs: Int[Tensor, "n pos"],
    names: Sequence[str],
    batch_size: int = 8,
    desc: str | None = None,
) -> Iterator[Batch]:
    """The activations at hook ``names`` for ``inputs``, one batch at a time (:func:`hook_activations`).
    Run it under ``torch.inference_mode()``."""
    for rows in batch_rows(len(inputs), batch_size, desc):
        x = inputs[rows].to(model.cfg.device)
        yield Batch(rows, x, hook_activations(model, x, names))


def pool(
    act: Float[Tensor, "batch pos ..."], how: Pool, last: Int[Tensor, " batch"] | None = None, skip_first: int = 0
) -> Tensor:
    """One batch of activations pooled per row: ``"all"`` keeps ``[batch, pos, ...]``; ``"last"`` takes
    position ``last`` of each row (default: the final one), ``[batch, ...]``; ``"mean"`` averages
    positions ``skip_first..last`` of each row."""
    rows = torch.arange(act.shape[0], device=act.device)
    if last is None:
        last = torch.full((act.shape[0],), act.shape[1] - 1, device=act.device)
    last = last.to(act.device)
    if how == "all":
        return act
    if how == "last":
        return act[rows, last]
    if how == "mean":
        pos = torch.arange(act.shape[1], device=act.device)
        mask = ((pos[None] >= skip_first) & (pos[None] <= last[:, None])).to(act.dtype)
        mask = mask.reshape(*mask.shape, *(1,) * (act.ndim - 2))
        return (act * mask).sum(1) / mask.sum(1).clamp(min=1)
    raise ValueError(f"pool must be 'all', 'last' or 'mean', got {how!r}.")


def text_stream(
    model: HookedTransformer,
    texts: Sequence[str],
    names: Sequence[str],
    batch_size: int = 8,
    max_len: int | None = 128,
    desc: str | None = None,
) -> Iterator[tuple[Batch, Int[Tensor, " batch"]]]:
    """:func:`stream` over texts: each tokenized with BOS (at most ``max_len`` tokens) and right-padded
    in batches; yields each :class:`Batch` with its rows' last real positions ``[batch]``."""
    if len(texts) == 0:
        raise ValueError("No texts given; pass at least one text.")
    for rows in batch_rows(len(texts), batch_size, desc):
        toks, last = prompt_batch(model, list(texts[rows]), max_len)
        yield Batch(rows, toks, hook_activations(model, toks, names)), last


@torch.inference_mode()
def text_features(
    model: HookedTransformer,
    texts: Sequence[str],
    names: Sequence[str],
    how: Pool = "last",
    batch_size: int = 8,
    max_len: int | None = 128,
    skip_first: int = 0,
    desc: str | None = None,
) -> dict[str, Float[Tensor, "n d"]]:
    """One float32 vector per text and hook, ``{name: [n_texts, d]}``: each text's activations pooled by
    :func:`pool` over its real positions (:func:`text_stream`)."""
    out: dict[str, list[Tensor]] = {n: [] for n in names}
    for batch, last in text_stream(model, texts, names, batch_size, max_len, desc):
        for n in names:
            out[n].append(pool(batch.acts[n].float(), how, last, skip_first).cpu())
    return {n: torch.cat(v) for n, v in out.items()}


def logprobs(model: HookedTransformer, x: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_vocab"]:
    """Next-token log-probabilities (float32) at every position of ``x``."""
    return model(x.to(model.cfg.device), return_type="logits").float().log_softmax(-1)


def right_pad(seqs: Sequence[Tensor], pad: int = 0) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, " batch"]]:
    """Stack 1-D token sequences into a right-padded ``[batch, max_len]`` tensor, and their lengths."""
    if len(seqs) == 0:
        raise ValueError("right_pad: no sequences given.")
    lengths = torch.tensor([int(t.numel()) for t in seqs])
    batch = torch.full((len(seqs), int(lengths.max())), pad, dtype=torch.long)
    for i, t in enumerate(seqs):
        batch[i, : t.numel()] = t.reshape(-1).cpu()
    return batch, lengths


def pad_id(model: HookedTransformer) -> int:
    """The tokenizer's padding id (0 when it has none)."""
    tok = getattr(model, "tokenizer", None)
    return (getattr(tok, "pad_token_id", None) or 0) if tok is not None else 0


def prompt_batch(
    model: HookedTransformer, prompts: Sequence[str], max_len: int | None = None
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, " batch"]]:
    """Right-padded tokens ``[batch, pos]`` (with BOS, on the model's device) and each prompt's
    last real index ``[batch]``. Prompts longer than the context raise; ``max_len`` truncates."""
    toks = [model.to_tokens(p, prepend_bos=True, truncate=False)[0] for p in prompts]
    if max_len is not None:
        toks = [t[:max_len] for t in toks]
    for p, t in zip(prompts, toks):
        if t.numel() > model.cfg.n_ctx:
            raise ValueError(
                f"Prompt of {t.numel()} tokens is longer than the context ({model.cfg.n_ctx}): {p[:60]!r}…"
            )
    batch, lengths = right_pad(toks, pad_id(model))
    return batch.to(model.cfg.device), lengths - 1


def final_logits(model: HookedTransformer, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_vocab"]:
    """Logits from residual-stream states: ``ln_final``, unembed and the soft-cap, exactly as
    ``HookedTransformer.forward`` finishes (without its copy of the transposed unembedding).
    Decoding an intermediate layer's residual this way is the logit lens."""

    shape = resid.shape
    x = resid.reshape(-1, 1, shape[-1])
    x = model.ln_final(x)[:, 0] if model.cfg.normalization_type is not None else x[:, 0]
    logits = torch.addmm(model.unembed.b_U, x, model.unembed.W_U)
    logits = apply_softcap(logits, model.cfg.output_logits_soft_cap)
    return logits.reshape(*shape[:-1], logits.shape[-1])


def last_logits(
    model: HookedTransformer, toks: Int[Tensor, "batch pos"], last: Int[Tensor, " batch"]
) -> Float[Tensor, "batch d_vocab"]:
    """Logits at one position per row, unembedding only there (the unembedding is ~20% of a
    short prompt's cost). Falls back to full logits for models without ``stop_at_layer``."""
    rows = torch.arange(len(last))
    try:
        resid = model(toks, stop_at_layer=model.cfg.n_layers)  # [batch, pos, d_model]
    except TypeError:
        return model(toks, return_type="logits")[rows, last]
    return final_logits(model, resid[rows, last])


def first_target_token(model: HookedTransformer, target: str) -> int:
    """The first token id of ``target`` as it continues a prompt (no BOS)."""
    ids = model.to_tokens(target, prepend_bos=False)[0]
    if ids.numel() == 0:
        raise ValueError(f"Target {target!r} is empty; give the expected continuation, e.g. ' Paris'.")
    return int(ids[0])


@torch.inference_mode()
def next_token_predictions(
    model: HookedTransformer, prompts: Sequence[str], batch_size: int = 16, desc: str = "prompts"
) -> Float[Tensor, "n d_vocab"]:
    """Log-probabilities of the token after each prompt, ``[n_prompts, d_vocab]``."""
    if len(prompts) == 0:
        raise ValueError("No prompts given; pass at least one prompt.")
    out = []
    for rows in batch_rows(len(prompts), batch_size, desc):
        toks, last = prompt_batch(model, prompts[rows])
        out.append(last_logits(model, toks, last).float().log_softmax(-1).cpu())
    return torch.cat(out)
