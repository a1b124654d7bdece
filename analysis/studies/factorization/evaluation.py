"""What every decoder cell of the factorization study is scored on: held-out text, known facts,
fact multiple choice and MMLU.

A fact question is scored by the summed log-probability of each choice after the prompt, the highest
one being the model's answer (chance ``1 / choices``). MMLU is scored by :mod:`analysis.data.mmlu_scoring`
(the zero-shot letter with the highest next-token logit; chance 0.25), whose names are re-exported here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from analysis import data
from analysis.data.mmlu_scoring import letter_ids as letter_ids  # re-exported: the factorization package's names
from analysis.data.mmlu_scoring import letter_logits as letter_logits
from analysis.data.mmlu_scoring import mmlu_correct as mmlu_correct
from analysis.data.mmlu_scoring import mmlu_items
from analysis.forward import pad_id, right_pad
from analysis.studies.factorization.config import FactorConfig
from analysis.studies.factorization.results import FactScreen


def fact_mc_items(rows, choices: int = 4, seed: int = 0) -> list[dict]:
    """Facts as multiple choice: each row's prompt, its answer and ``choices - 1`` distractors.

    ``rows``: fact rows (a ``datasets.Dataset`` of :func:`analysis.data.facts`' schema, e.g. the
    known "eval" facts). Distractors are answers of other facts of the same relation among all
    facts (never one of this fact's accepted answers), drawn with ``seed``; the true answer comes
    first. Rows whose relation has too few other answers are skipped.
    """
    every = data.facts()
    pool: dict[str, list[str]] = {}
    for rel, target in zip(every["relation"][:], every["target"][:]):
        pool.setdefault(rel, [])
        if target.strip() not in pool[rel]:
            pool[rel].append(target.strip())
    rng = random.Random(seed)
    items = []
    for row in rows:
        accepted = {a.strip() for a in row["answers"]} | {row["target"].strip()}
        others = [a for a in pool.get(row["relation"], []) if a not in accepted]
        if len(others) < choices - 1:
            continue
        items.append(
            {
                "prompt": row["prompt"],
                "choices": [row["target"].strip(), *rng.sample(others, choices - 1)],
                "answer": 0,
                "relation": row["relation"],
            }
        )
    return items


@torch.inference_mode()
def choice_logprobs(
    model: HookedTransformer, items: Sequence[dict], batch_size: int = 16
) -> Float[Tensor, "item choice"]:
    """Summed log-probability of each choice (after a space) following its item's prompt, ``[n_items, n_choices]``."""
    seqs, spans = [], []
    for it in items:
        prefix = model.to_tokens(it["prompt"], prepend_bos=True)[0]
        for c in it["choices"]:
            full = torch.cat([prefix, model.to_tokens(" " + c.strip(), prepend_bos=False)[0]])
            seqs.append(full)
            spans.append((len(prefix), len(full)))
    out = torch.zeros(len(seqs))
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))  # similar lengths share a batch
    device = next(model.parameters()).device
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        ids, _ = right_pad([seqs[j] for j in idx], pad_id(model))
        logp = model(ids.to(device), return_type="logits").float().log_softmax(-1).cpu()
        for k, j in enumerate(idx):
            a, b = spans[j]
            out[j] = logp[k, a - 1 : b - 1].gather(-1, ids[k, a:b, None]).sum()
    return out.view(len(items), -1)


def mc_correct(model: HookedTransformer, items: Sequence[dict], batch_size: int = 16) -> list[bool]:
    """Per question: is the highest-likelihood choice the true one."""
    if not items:
        return []
    lp = choice_logprobs(model, items, batch_size)
    return (lp.argmax(-1) == torch.tensor([it["answer"] for it in items])).tolist()


def mc_accuracy(model: HookedTransformer, items: Sequence[dict], batch_size: int = 16) -> float:
    """Fraction of questions whose highest-likelihood choice is the true one."""
    hits = mc_correct(model, items, batch_size)
    return float(sum(hits) / len(hits)) if hits else float("nan")


@dataclass(frozen=True)
class DecoderData:
    """What every decoder cell is scored on (all of it disjoint from what chose anything)."""

    eval_tokens: Int[Tensor, " token"]
    calib_tokens: Int[Tensor, " token"]
    """The calibration stream: ``max(calib_tokens, calib_sizes)`` tokens; statistics read prefixes of it."""
    known: Any
    """The known facts of the "eval" split (``datasets.Dataset``): recall is re-tested on them."""
    screen: FactScreen
    mmlu: list[dict]
    """The MMLU sample (:func:`mmlu_items`)."""
    fact_mc: list[dict]
    """The same "eval" facts as 4-way multiple choice."""


def eval_facts(model: HookedTransformer, n_screen: int):
    """The known facts reserved for judging compressed models, and the screen's statistics.

    :func:`analysis.data.fact_splits` ``["eval"]`` (facts that never chose anything); where that
    API is not there yet, the known facts of :func:`analysis.data.known_facts` (then say so).
    """
    known, stats = data.known_facts(model, n_screen)
    splits = getattr(data, "fact_splits", None)
    if splits is None:
        return known, {**stats, "split": "all known facts (fact_splits not available)"}
    return splits(model, n_screen)["eval"], {**stats, "split": 'fact_splits(...)["eval"]'}


def _at_most(rows, n: int | None):
    """``rows``, or a seeded random ``n`` of them (relations stay mixed)."""
    return rows if n is None or len(rows) <= n else rows.shuffle(seed=0).select(range(n))


def decoder_data(model: HookedTransformer, cfg: FactorConfig) -> DecoderData:
    """Evaluation text, calibration text, the known "eval" facts, the MMLU sample and the fact questions for ``model``."""
    known, stats = eval_facts(model, cfg.n_facts)
    screen = FactScreen(stats["split"], stats["n_total"], len(known))
    known = _at_most(known, cfg.max_fact_mc)
    return DecoderData(
        data.lm_tokens(model.tokenizer, "eval", cfg.eval_tokens),
        data.lm_tokens(model.tokenizer, "calib", max(cfg.calib_tokens, *cfg.calib_sizes)),
        known,
        screen,
        mmlu_items(cfg.n_mmlu),
        fact_mc_items(known, cfg.mc_choices),
    )
