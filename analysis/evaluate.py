"""Evaluation: how well does a (possibly compressed) model still model language?

Every chapter judges a model with the same few measurements:

- **Perplexity** on held-out text, ``exp`` of the mean next-token negative log-likelihood. Long
  text is scored with a sliding window of ``context`` tokens moved by ``stride``; each token is
  scored once, in the window where it has the most left context (the recipe of the
  Hugging Face perplexity guide). ``stride == context`` gives disjoint windows.
- **Next-token accuracy**: how often the top-1 prediction is the actual next token.
- **Fact recall**: how often the top-1 next token after a fact prompt is the first token of
  the target (``" Paris"`` after "The Eiffel Tower is located in the city of").
- **KL to the base model**: the mean per-token ``KL(p_base || p_model)``, which sees damage that
  leaves the top-1 prediction unchanged.
- **Logit lens** (nostalgebraist 2020): decode each layer's residual stream through the final
  norm and unembedding to see at what depth the next token becomes readable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Int
from torch import Tensor
from transformer_lens import HookedTransformer

from analysis import hooks, stats
from analysis.cache import cached, tensors_hash
from analysis.forward import (
    batch_rows,
    final_logits,
    first_target_token,
    logprobs,
    next_token_predictions,
    stream,
    windows,
)
from analysis.models import model_key
from analysis.progress import progress


@dataclass(frozen=True)
class LMScore:
    """Result of :func:`lm_score` over ``n_tokens`` scored tokens."""

    nll: float
    """Mean negative log-likelihood (nats per token)."""
    accuracy: float
    """Next-token top-1 accuracy."""
    n_tokens: int
    window_nll: tuple[float, ...] = ()
    """Summed NLL of each scored window (in window order), for intervals."""
    window_tokens: tuple[int, ...] = ()
    """Tokens scored in each window."""

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll)

    def perplexity_interval(self, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
        """A percentile bootstrap interval of the perplexity, resampling whole windows (tokens of one
        window are not independent)."""
        if len(self.window_nll) < 2:
            raise ValueError("A perplexity interval needs at least 2 scored windows; score more text.")
        return stats.ratio_ci(self.window_nll, self.window_tokens, np.exp, n_boot, seed, level)


def unigram_score(
    train: Int[Tensor, " n_train"], windows: Int[Tensor, "n_windows context"], vocab_size: int
) -> LMScore:
    """A unigram language model (token frequencies in ``train``, add-one smoothed over the
    ``vocab_size`` tokens) scored on ``[n_windows, context]`` windows the way :class:`Reference`
    and :func:`lm_score` (with disjoint windows) score a model: every token after each window's
    first, NLL summed per window.

    Its perplexity is what word frequencies alone achieve on the text: a model above it has lost
    everything it knew beyond them."""
    train, windows = torch.as_tensor(train).flatten(), torch.as_tensor(windows)
    if train.numel() == 0 or windows.ndim != 2 or windows.shape[1] < 2 or len(windows) == 0:
        raise ValueError(
            f"unigram_score needs training tokens and [n_windows, context >= 2] windows; got {train.numel()} "
            f"training tokens and windows of shape {tuple(windows.shape)}."
        )
    if int(max(train.max(), windows.max())) >= vocab_size or int(min(train.min(), windows.min())) < 0:
        raise ValueError(f"Token ids must lie in [0, {vocab_size}); pass the model's d_vocab as vocab_size.")
    counts = torch.bincount(train, minlength=vocab_size).double() + 1.0  # [d_vocab]
    logp = counts.log() - counts.sum().log()
    target = windows[:, 1:]  # [n_windows, context - 1]
    window_nll = -logp[target].sum(-1)  # [n_windows]
    n = target.numel()
    return LMScore(
        float(window_nll.sum()) / n,
        float((target == counts.argmax()).double().mean()),
        n,
        tuple(window_nll.tolist()),
        (target.shape[1],) * len(windows),
    )


def _cached_on(model, tokens: Tensor, name: str, compute, **config):
    """``compute()`` through the disk cache, keyed by the model's and the tokens' content and ``config``."""
    key = {"tokens": tensors_hash([torch.as_tensor(tokens)]), **config}
    return cached(f"evaluate/{name}", compute, config=key, model=model_key(model))


def _check_tokens(tokens: Tensor, context: int, stride: int, model) -> Int[Tensor, " n"]:
    tokens = torch.as_tensor(tokens)
    if tokens.ndim > 1 and any(d != 1 for d in tokens.shape[:-1]):
        raise ValueError(
            f"Expected one 1-D token stream, got a batch of shape {tuple(tokens.shape)}; its rows would be joined "
            "into one stream, each row's start scored with the previous row's end as context. Pass "
            "tokens.flatten() if the rows are consecutive text, or score each row separately."
        )
    tokens = tokens.flatten()
    if tokens.numel() < 2:
        raise ValueError(
            f"Need at least 2 tokens to score, got {tokens.numel()}. "
            "Pass more text (e.g. analysis.data.lm_tokens(tokenizer, 'eval', n_tokens=...))."
        )
    if not 1 <= stride <= context:
        raise ValueError(f"stride must be in [1, context={context}], got {stride}.")
    n_ctx = model.cfg.n_ctx
    if context > n_ctx:
        raise ValueError(
            f"context={context} is longer than the model's context window ({n_ctx} tokens). Use context <= {n_ctx}."
        )
    return tokens


def sliding_windows(n: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """``(begin, end, n_scored)`` windows covering tokens ``0..n-1``.

    The window ``tokens[begin:end]`` predicts its last ``n_scored`` targets
    (``tokens[end - n_scored : end]``). No token is scored twice. With ``stride < context``
    every token after the first is scored; with disjoint windows (``stride == context``) the
    first token of each window has no left context and is not scored, as in the Hugging Face
    recipe.
    """
    windows, prev_end = [], 1  # token 0 has no left context and is never a target
    for begin in range(0, n - 1, stride):
        end = min(begin + context, n)
        n_scored = end - max(prev_end, begin + 1)
        if n_scored > 0:
            windows.append((begin, end, n_scored))
        prev_end = end
        if end == n:
            break
    return windows


@torch.inference_mode()
def lm_score(
    model: HookedTransformer,
    tokens: Int[Tensor, " n"],
    context: int = 256,
    stride: int | None = None,
    batch_size: int = 8,
    desc: str = "perplexity",
    cache: bool = False,
) -> LMScore:
    """Mean NLL and next-token accuracy of ``model`` on a 1-D token stream (sliding window).

    ``cache=True`` stores the result on disk, keyed by the model's and the tokens' content.
    """
    stride = stride or context
    if cache:
        return _cached_on(
            model,
            tokens,
            "lm_score",
            lambda: lm_score(model, tokens, context, stride, batch_size, desc),
            context=context,
            stride=stride,
        )
    tokens = _check_tokens(tokens, context, stride, model)
    windows = sliding_windows(tokens.numel(), context, stride)
    device = model.cfg.device
    total_nll, total_correct, total = 0.0, 0, 0
    per_window: dict[int, tuple[float, int]] = {}
    # windows of equal length share a batch; only the last one can be shorter
    groups: dict[int, list[tuple[int, int, int]]] = {}
    for w in windows:
        groups.setdefault(w[1] - w[0], []).append(w)
    batches = [g[i : i + batch_size] for g in groups.values() for i in range(0, len(g), batch_size)]
    for batch in progress(batches, desc=desc):
        inputs = torch.stack([tokens[b:e] for b, e, _ in batch]).to(device)
        logits = model(inputs, return_type="logits")  # [batch, pos, d_vocab]
        for row, (b, e, n_scored) in enumerate(batch):
            pred = logits[row, e - b - 1 - n_scored : e - b - 1].float()  # [n_scored, d_vocab]
            target = inputs[row, e - b - n_scored :]
            nll = F.cross_entropy(pred, target, reduction="sum").item()
            total_nll += nll
            total_correct += (pred.argmax(-1) == target).sum().item()
            total += n_scored
            per_window[b] = (nll, n_scored)
    order = sorted(per_window)
    return LMScore(
        total_nll / total,
        total_correct / total,
        total,
        tuple(per_window[b][0] for b in order),
        tuple(per_window[b][1] for b in order),
    )


def perplexity(
    model: HookedTransformer,
    tokens: Int[Tensor, " n"],
    context: int = 256,
    stride: int | None = None,
    batch_size: int = 8,
) -> float:
    """Sliding-window perplexity of ``model`` on a 1-D token stream."""
    return lm_score(model, tokens, context, stride, batch_size).perplexity


def _check_facts(prompts: Sequence[str], targets: Sequence[str]) -> None:
    """Raise a ValueError unless prompts and targets pair up and no prompt is empty."""
    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets; they must pair up.")
    empty = [i for i, p in enumerate(prompts) if not isinstance(p, str) or not p.strip()]
    if empty:
        raise ValueError(
            f"{len(empty)} fact prompt(s) are empty or not text (at positions {empty[:5]}); the model would "
            "predict from the BOS token alone. Drop those facts or fill in their prompts."
        )


def fact_recall(
    model: HookedTransformer, prompts: Sequence[str], targets: Sequence[str], batch_size: int = 16
) -> Tensor:
    """Per-fact booleans ``[n]``: is the top-1 next token the target's first token?"""
    _check_facts(prompts, targets)
    logp = next_token_predictions(model, prompts, batch_size, desc="fact recall")
    target_ids = torch.tensor([first_target_token(model, t) for t in targets])
    return logp.argmax(-1) == target_ids


@torch.inference_mode()
def kl_to_base(
    model: HookedTransformer,
    base: HookedTransformer,
    tokens: Int[Tensor, " n"],
    context: int = 256,
    batch_size: int = 8,
) -> float:
    """Mean per-token ``KL(p_base || p_model)`` in nats over disjoint windows of ``tokens``."""
    wins = windows(_check_tokens(tokens, context, context, model), context)
    total, count = 0.0, 0
    for rows in batch_rows(len(wins), batch_size, "KL to base"):
        x = wins[rows]
        total += F.kl_div(logprobs(model, x), logprobs(base, x), log_target=True, reduction="sum").item()
        count += x.numel()
    return total / count


@torch.inference_mode()
def logit_lens(
    model: HookedTransformer, tokens: Int[Tensor, " n"], context: int = 256, batch_size: int = 8, cache: bool = False
) -> dict[str, Tensor]:
    """Per-layer next-token accuracy and NLL when each ``hook_resid_post`` is decoded directly.

    Returns ``{"accuracy": [n_layers], "nll": [n_layers]}``; the last entry equals the model's
    own next-token accuracy and NLL on the same disjoint windows. ``cache=True``: as :func:`lm_score`.
    """
    if cache:
        return _cached_on(
            model, tokens, "logit_lens", lambda: logit_lens(model, tokens, context, batch_size), context=context
        )
    wins = windows(_check_tokens(tokens, context, context, model), context)
    L = model.cfg.n_layers
    correct, nll, count = torch.zeros(L), torch.zeros(L), 0
    names = [hooks.resid_post(l) for l in range(L)]
    for batch in stream(model, wins, names, batch_size, desc="logit lens"):
        target = batch.tokens[:, 1:].reshape(-1)
        for l, name in enumerate(names):
            logits = final_logits(model, batch.acts[name][:, :-1]).reshape(-1, model.cfg.d_vocab_out)
            correct[l] += (logits.argmax(-1) == target).sum()
            nll[l] += F.cross_entropy(logits.float(), target, reduction="sum")
        count += target.numel()
    return {"accuracy": correct / count, "nll": nll / count}


@dataclass(frozen=True)
class Comparison:
    """A model scored against a :class:`Reference` on the same windows and facts.

    The per-window NLL sums and per-fact hits are kept, so every number comes with its interval
    (:meth:`perplexity_interval`, :meth:`fact_recall_interval`) and two models scored on one
    reference can be compared window by window (a paired bootstrap).
    """

    nll: float
    """Mean next-token NLL (nats) on the reference windows."""
    accuracy: float
    kl: float
    """Mean per-token ``KL(p_base || p_model)`` in nats."""
    fact_recall: float
    """Share of the reference facts whose first target token is still the top-1 prediction (nan without facts)."""
    n_tokens: int
    n_facts: int
    window_nll: tuple[float, ...] = ()
    """Summed NLL of each reference window, in window order."""
    window_tokens: tuple[int, ...] = ()
    """Tokens scored in each window."""
    fact_hits: tuple[bool, ...] = ()
    """Per reference fact: is its first target token still the top-1 prediction?"""

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll)

    def lm_score(self) -> LMScore:
        """The perplexity part as an :class:`LMScore` (with its per-window sums)."""
        return LMScore(self.nll, self.accuracy, self.n_tokens, self.window_nll, self.window_tokens)

    def perplexity_interval(self, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
        """:meth:`LMScore.perplexity_interval`: a bootstrap over the reference windows."""
        return self.lm_score().perplexity_interval(n_boot, seed, level)

    def fact_recall_interval(self, level: float = 0.95) -> tuple[float, float]:
        """Wilson score interval of the fact recall (a binomial proportion over the facts)."""
        return stats.proportion_ci(int(sum(self.fact_hits)), len(self.fact_hits), level)


class Reference:
    """The base model's predictions on fixed windows and facts, to score compressed variants against.

    Built once (one pass of ``base``), then :meth:`score` gives perplexity, accuracy, KL to the
    base and fact recall of any model in one pass over the same ``[n_windows, context]``
    disjoint windows. The base log-probabilities are kept in memory as float32
    (``n_tokens x d_vocab x 4`` bytes: 400 MB for 2,048 tokens of a 49k vocabulary).
    """

    @torch.inference_mode()
    def __init__(
        self,
        base,
        tokens: Int[Tensor, " n"],
        context: int = 256,
        batch_size: int = 8,
        prompts: Sequence[str] = (),
        targets: Sequence[str] = (),
    ):
        self.windows = windows(_check_tokens(tokens, context, context, base), context)
        _check_facts(prompts, targets)
        self.batch_size = batch_size
        self.prompts = list(prompts)
        self.target_ids = torch.tensor([first_target_token(base, t) for t in targets], dtype=torch.long)
        self.base_logp = [
            logprobs(base, self.windows[rows]).cpu() for rows in batch_rows(len(self.windows), batch_size, "reference")
        ]
        self.base = None  # the base model's own score, filled by the first call below
        self.base = self.score(base)

    @torch.inference_mode()
    def score(self, model: HookedTransformer) -> Comparison:
        """Perplexity, accuracy, KL to the base and fact recall of ``model`` (``[n_windows, context]``
        windows), with the per-window NLL sums and per-fact hits behind them."""
        correct = kl = 0.0
        window_nll: list[float] = []
        for j, rows in enumerate(batch_rows(len(self.windows), self.batch_size)):
            x = self.windows[rows]
            logp = logprobs(model, x).cpu()  # [batch, pos, d_vocab]
            pred, target = logp[:, :-1], x[:, 1:]
            window_nll += (-pred.gather(-1, target[..., None])[..., 0].double().sum(-1)).tolist()  # [batch]
            correct += (pred.argmax(-1) == target).sum().item()
            kl += F.kl_div(logp, self.base_logp[j], log_target=True, reduction="sum").item()
        per_window = self.windows.shape[1] - 1
        count = per_window * len(self.windows)
        n_pos = self.windows.numel()
        hits: tuple[bool, ...] = ()
        recall = float("nan")
        if self.prompts:
            top = next_token_predictions(model, self.prompts, desc="fact recall").argmax(-1)
            hits = tuple(bool(h) for h in (top == self.target_ids).tolist())
            recall = sum(hits) / len(hits)
        return Comparison(
            sum(window_nll) / count,
            correct / count,
            kl / n_pos,
            recall,
            count,
            len(self.prompts),
            tuple(window_nll),
            (per_window,) * len(self.windows),
            hits,
        )
