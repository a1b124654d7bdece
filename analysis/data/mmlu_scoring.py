"""MMLU, scored zero-shot: a fixed subject-stratified sample and the letter a model answers.

An MMLU question is scored the standard zero-shot way: after
:func:`analysis.data.benchmarks.mmlu_prompt` (which ends ``"Answer:"``), the letter A-D whose
token has the highest next-token logit is the model's answer (chance 0.25).

- :func:`mmlu_items`: the sample (prompt, answer, subject, id per question);
- :func:`prompt_tokens`: each item's prompt tokens, with BOS, as every scorer here reads them;
- :func:`letter_ids`, :func:`letter_scores`, :func:`letter_logits`: the letters' logits after each
  prompt (from a final residual state, or from a model run over the items);
- :func:`answer_hits`, :func:`mmlu_correct`: whether the top letter is the answer's.
"""

from __future__ import annotations

import random
from typing import Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from analysis.data import benchmarks
from analysis.forward import pad_id, right_pad


def mmlu_items(n: int | None, seed: int = 0, split: str = "test") -> list[dict]:
    """A fixed, subject-stratified sample of ``n`` MMLU questions (None: all of ``split``): prompt, answer, subject, id.

    Every subject gets ``n // subjects`` questions and the first ``n % subjects`` subjects of a
    ``seed``-shuffled subject order one more; within a subject the questions are a ``seed``-shuffled
    prefix. Items come out by subject, then in that order.
    """
    rows = benchmarks.mmlu(split)
    by_subject: dict[str, list[dict]] = {}
    for row in rows:
        by_subject.setdefault(row["subject"], []).append(row)
    subjects = sorted(by_subject)
    if n is None:
        take = {s: len(by_subject[s]) for s in subjects}
    else:
        order = subjects[:]
        random.Random(seed).shuffle(order)
        take = {s: n // len(subjects) + (order.index(s) < n % len(subjects)) for s in subjects}
        short = [s for s in subjects if take[s] > len(by_subject[s])]
        if short:
            raise ValueError(f"MMLU {split} has too few questions in {short} for a sample of {n}.")
    items = []
    for s in subjects:
        qs = by_subject[s][:]
        random.Random(f"{seed}-{s}").shuffle(qs)
        items += [
            {"prompt": benchmarks.mmlu_prompt(q), "answer": int(q["answer"]), "subject": s, "id": q["id"]}
            for q in qs[: take[s]]
        ]
    return items


def letter_ids(model: HookedTransformer, letters: Sequence[str] = benchmarks.MMLU_LETTERS) -> list[int]:
    """The token id of each answer letter as it follows ``"Answer:"`` (``" A"``; ``"A"`` where the
    spaced letter is not one token)."""
    ids = []
    for c in letters:
        for text in (" " + c, c):
            toks = model.to_tokens(text, prepend_bos=False)[0]
            if len(toks) == 1:
                ids.append(int(toks[0]))
                break
        else:
            raise ValueError(f"Answer letter {c!r} is not a single token for this tokenizer.")
    return ids


def prompt_tokens(model: HookedTransformer, items: Sequence[dict]) -> list[Int[Tensor, " pos"]]:
    """Each item's prompt as 1-D tokens with BOS (what :func:`letter_logits` runs)."""
    return [model.to_tokens(it["prompt"], prepend_bos=True)[0] for it in items]


def letter_scores(
    model: HookedTransformer, resid: Float[Tensor, "item d_model"], ids: Sequence[int]
) -> Float[Tensor, "item letter"]:
    """The letters' logits (token ``ids``) from final residual states ``[n_items, d_model]`` (after the
    last block): ``ln_final`` and the unembedding, before any logit soft cap (which keeps their order)."""
    x = resid[:, None]
    norm = getattr(model, "ln_final", None)
    return model.unembed(norm(x) if norm is not None else x)[:, 0, list(ids)]


@torch.inference_mode()
def letter_logits(model: HookedTransformer, items: Sequence[dict], batch_size: int = 8) -> Float[Tensor, "item letter"]:
    """Next-token logits of the letters A-D after each item's prompt, ``[n_items, 4]`` (before any logit
    soft cap, which keeps their order); only the last position of each prompt is unembedded."""
    ids = letter_ids(model)
    seqs = prompt_tokens(model, items)
    out = torch.zeros(len(seqs), len(ids))
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))  # similar lengths share a batch
    device = next(model.parameters()).device
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        toks, lengths = right_pad([seqs[j] for j in idx], pad_id(model))
        resid = model(toks.to(device), stop_at_layer=model.cfg.n_layers)  # unembed the last positions only
        last = resid[torch.arange(len(idx)), (lengths - 1).to(resid.device)]
        out[idx] = letter_scores(model, last, ids).float().cpu()
    return out


def answer_hits(letter_logits: Float[Tensor, "item letter"], items: Sequence[dict]) -> Bool[Tensor, " item"]:
    """Per item: is the letter with the highest logit the answer's."""
    return letter_logits.argmax(-1).cpu() == torch.tensor([int(it["answer"]) for it in items], dtype=torch.long)


def mmlu_correct(model: HookedTransformer, items: Sequence[dict], batch_size: int = 8) -> list[bool]:
    """Per MMLU item: is the letter with the highest next-token logit the answer's."""
    if not items:
        return []
    return answer_hits(letter_logits(model, items, batch_size), items).tolist()
