"""Hiding the subject: the corrupted run of causal tracing.

ROME corrupts a fact by adding Gaussian noise to the embeddings of the subject tokens, with a
standard deviation ``factor = 3`` times that of the *subject* tokens' embeddings over the facts
traced (ROME's ``collect_embedding_std``; :func:`subject_embedding_std`, the default of
:func:`noise_scale` when given facts; the std over evaluation text is the option kept beside
it), and averages over several seeded noise samples (:func:`subject_noise`); every restoration of one
fact sees the same samples, so differences between restorations are not noise. The symmetric
alternative (Zhang & Nanda 2024, "Towards Best Practices of Activation Patching") replaces the
subject by another subject of the same token length, so the corrupted prompt is an ordinary
sentence; :func:`pair_subjects` finds such a replacement for each fact.
"""

from __future__ import annotations

import random
from typing import Any, Iterable, Literal, Mapping

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from analysis.data import lm_tokens
from analysis.models import model_key
from analysis.progress import progress
from analysis.tracing.inputs import Prepared, fact_fields, prepare

Corruption = Literal["noise", "tokens"]


def embedding_std(model: HookedTransformer, tokens: Int[Tensor, " n"]) -> float:
    """Standard deviation of the token embeddings (``hook_embed``) over ``tokens``, all dims pooled."""
    tokens = torch.as_tensor(tokens).reshape(-1).to(model.cfg.device)
    with torch.no_grad():
        emb = model.embed(tokens[None])  # [1, n, d_model]
    return float(emb.float().std())


def subject_tokens(model: HookedTransformer, facts: Iterable[Any]) -> Int[Tensor, " n"]:
    """The token ids of every fact's subject, as tokenized inside its prompt, concatenated.

    ``facts`` are fact rows (``prompt``, ``subject``), ``(prompt, subject)`` tuples, or
    :class:`~analysis.tracing.inputs.Prepared` facts; facts that fail validation are left out.
    """
    ids = []
    for f in facts:
        if not isinstance(f, Prepared):
            row = fact_fields(f)
            try:
                f = prepare(model, row["prompt"], row["subject"], 0)
            except ValueError:
                continue  # a fact the tracer cannot use (it is skipped there too, with its reason)
        s, e = f.subject_span
        ids.append(f.tokens[s:e])
    if not ids:
        raise ValueError(
            "No usable fact given: the subject embedding std needs at least one fact whose subject "
            "appears in its prompt."
        )
    return torch.cat(ids)


def subject_embedding_std(model: HookedTransformer, facts: Iterable[Any]) -> float:
    """ROME's spread: the std of the token embeddings of the facts' subject tokens, pooled.

    ROME (``collect_embedding_std`` in ``experiments/causal_trace.py``) embeds each known fact's
    subject and takes the std over all tokens and dimensions; we take the subject's tokens as
    they stand in its prompt (the tokens that the corruption perturbs).
    """
    return embedding_std(model, subject_tokens(model, facts))


_DEFAULT_NOISE: dict[tuple[str, int, float], float] = {}


def noise_scale(
    model: HookedTransformer,
    tokens: Int[Tensor, " n"] | None = None,
    factor: float = 3.0,
    n_tokens: int = 4096,
    facts: Iterable[Any] | None = None,
) -> float:
    """ROME's noise level: ``factor`` x an embedding std.

    With ``facts`` (ROME's way): the std of their subject tokens' embeddings
    (:func:`subject_embedding_std`). With ``tokens``: the std over those tokens. With neither:
    over ``n_tokens`` tokens of the evaluation split from :func:`analysis.data.lm_tokens`
    (remembered per model for the session).
    """
    if facts is not None:
        if tokens is not None:
            raise ValueError("Pass facts (ROME's subject-token std) or tokens (a text's std), not both.")
        return factor * subject_embedding_std(model, facts)
    if tokens is not None:
        return factor * embedding_std(model, tokens)
    key = (model_key(model), n_tokens, factor)
    if key not in _DEFAULT_NOISE:
        if model.tokenizer is None:
            raise ValueError(
                "This model has no tokenizer, so the embedding std cannot be measured on the "
                "evaluation text. Pass noise=<absolute std> (or noise_scale(model, tokens))."
            )
        toks = lm_tokens(model.tokenizer, split="eval", n_tokens=n_tokens)
        _DEFAULT_NOISE[key] = factor * embedding_std(model, toks)
    return _DEFAULT_NOISE[key]


def subject_noise(
    n_samples: int, n_subject: int, d_model: int, scale: float, seed: int = 0
) -> Float[Tensor, "sample subj d_model"]:
    """The seeded Gaussian noise added to the subject embeddings (the same for every restoration)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n_samples, n_subject, d_model, generator=gen) * scale


def replacement_tokens(
    model: HookedTransformer, fact: Prepared, replacement: str | Tensor, prepend_bos: bool
) -> Int[Tensor, " pos"]:
    """The corrupted prompt's tokens for symmetric token replacement, checked for equal length."""
    if isinstance(replacement, str):
        if replacement == fact.subject:
            raise ValueError(f"The replacement subject {replacement!r} equals the subject; choose another.")
        if not fact.from_text:
            raise ValueError("The prompt was given as tokens: give the corrupted prompt as tokens too.")
        # the clean prompt with the first occurrence of the subject replaced
        where = fact.prompt.find(fact.subject)
        corrupt_prompt = fact.prompt[:where] + replacement + fact.prompt[where + len(fact.subject) :]
        tokens = model.to_tokens(corrupt_prompt, prepend_bos=prepend_bos)[0].cpu()
    else:
        tokens = torch.as_tensor(replacement).reshape(-1).cpu()
        corrupt_prompt = None
    if tokens.numel() != fact.tokens.numel():
        raise ValueError(
            f"Token replacement needs a corrupted prompt of the same token length: the clean prompt "
            f"{fact.prompt!r} has {fact.tokens.numel()} tokens but the corrupted one "
            f"{corrupt_prompt or 'given'!r} has {tokens.numel()}. Choose a replacement subject with "
            f"as many tokens as {fact.subject!r} ({fact.subject_span[1] - fact.subject_span[0]}); "
            "pair_subjects() finds one."
        )
    if torch.equal(tokens, fact.tokens):
        raise ValueError("The corrupted prompt is identical to the clean one; nothing would be traced.")
    return tokens


def corrupt_inputs(
    model: HookedTransformer,
    fact: Prepared,
    corruption: Corruption,
    n_samples: int,
    noise: float | None,
    seed: int,
    replacement: str | Tensor | None,
    prepend_bos: bool,
) -> tuple[Int[Tensor, "sample pos"], Tensor | None, int]:
    """Corrupted tokens (one row per sample), the noise tensor (noise mode) and the first changed position."""
    if corruption == "noise":
        if noise is None:
            noise = noise_scale(model)
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1 (got {n_samples}).")
        s, e = fact.subject_span
        eps = subject_noise(n_samples, e - s, model.cfg.d_model, noise, seed)
        return fact.tokens[None].expand(n_samples, -1), eps, s
    if corruption == "tokens":
        if replacement is None:
            raise ValueError(
                "Token-replacement corruption needs replacement=<another subject of the same token "
                "length> (or a corrupted token tensor); see pair_subjects()."
            )
        toks = replacement_tokens(model, fact, replacement, prepend_bos)
        changed = (toks != fact.tokens).nonzero()
        return toks[None], None, int(changed[0])
    raise ValueError(f"Unknown corruption {corruption!r}; use 'noise' or 'tokens'.")


def embed_rows_hook(noise: Tensor | None, span: tuple[int, int], grad: bool = False):
    """``hook_embed`` for a batch [clean, corrupted...]: noise on the corrupted rows' subject."""
    s, e = span

    def hook(x: Tensor, hook=None) -> Tensor:  # x: [1 + samples, pos, d_model]
        x = x.detach().clone() if grad else x.clone()
        if noise is not None:
            x[1:, s:e] = x[1:, s:e] + noise.to(x.device, x.dtype)
        return x.requires_grad_(True) if grad else x

    return hook


def pair_subjects(
    model: HookedTransformer, facts: Iterable[Any], pool: Iterable[Any] | None = None, seed: int = 0
) -> list[str | None]:
    """For each fact, a subject from ``pool`` (default: the facts) of the same token length.

    Prefers a subject of the same relation with a different answer, so the corrupted prompt
    asks the same question about something else; checks that the corrupted prompt has exactly
    as many tokens as the clean one. ``None`` when no subject fits.
    """

    def rows(fs):
        return [dict(fact_fields(f), relation=(f.get("relation") if isinstance(f, Mapping) else None)) for f in fs]

    items = rows(facts)
    candidates = items if pool is None else rows(pool)
    by_length: dict[int, list[dict]] = {}
    for c in progress(candidates, desc="subject lengths"):
        try:
            s, e = prepare(model, c["prompt"], c["subject"], 0).subject_span
        except ValueError:
            continue
        by_length.setdefault(e - s, []).append(c)
    rng = random.Random(seed)
    out: list[str | None] = []
    for it in progress(items, desc="pair subjects"):
        fact = prepare(model, it["prompt"], it["subject"], 0)
        order = list(by_length.get(fact.subject_span[1] - fact.subject_span[0], []))
        rng.shuffle(order)
        order.sort(key=lambda c: c["relation"] != it["relation"])  # same relation first
        choice = None
        for c in order:
            if c["subject"] == it["subject"] or c["target"] == it["target"]:
                continue
            try:
                replacement_tokens(model, fact, c["subject"], True)
            except ValueError:
                continue
            choice = c["subject"]
            break
        out.append(choice)
    return out
