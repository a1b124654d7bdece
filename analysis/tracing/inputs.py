"""A fact as the tracer sees it: tokens, the subject's token span, the target token, token roles.

Causal tracing asks about one next token (ROME traces the model's prediction), so a fact is a
prompt, the *subject* written inside it ("The Eiffel Tower" in "The Eiffel Tower is located in
the city of") and a one-token *target* (" Paris"). :func:`prepare` tokenizes and validates all
three, and finds the subject's ``[start, end)`` token span as ROME does: from the characters the
subject occupies, mapped back to the tokens that cover them. Positions are then grouped into
ROME's *token roles* (:func:`token_roles`): first, middle and last subject token, the first
token after the subject, further tokens, and the last token, the one that predicts the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from jaxtyping import Int
from torch import Tensor
from transformer_lens import HookedTransformer

from analysis.forward import first_target_token

ROLES: tuple[str, ...] = (
    "first subject",
    "middle subject",
    "last subject",
    "first subsequent",
    "further",
    "last",
)
"""Token roles of ROME's average-indirect-effect figures, in their order."""

WINDOWED: tuple[str, ...] = ("hook_mlp_out", "hook_attn_out")
"""Kinds that ROME restores over a window of consecutive layers (the residual is never windowed)."""


def window_layers(layer: int, window: int, n_layers: int) -> tuple[int, ...]:
    """ROME's restoration window: ``window`` layers around ``layer``, clipped to the model.

    Layers ``layer - window // 2`` to ``layer + ceil(window / 2) - 1`` (for ``window=10``:
    ``layer-5 .. layer+4``), exactly as ``trace_important_window`` in ROME's code.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1 (got {window}); use 1 for single-state restoration.")
    lo = max(0, layer - window // 2)
    hi = min(n_layers, layer - (-window // 2))
    return tuple(range(lo, hi))


def token_roles(subject_span: tuple[int, int], n_tokens: int) -> dict[str, list[int]]:
    """Positions of each ROME token role for a subject at ``[start, end)`` in ``n_tokens`` tokens.

    A position can hold two roles (e.g. a subject followed by a single token makes that token
    both the first subsequent and the last token); roles a prompt lacks are empty lists.
    """
    s, e = subject_span
    return {
        "first subject": [s],
        "middle subject": list(range(s + 1, e - 1)),
        "last subject": [e - 1],
        "first subsequent": [e] if e < n_tokens else [],
        "further": list(range(e + 1, n_tokens - 1)),
        "last": [n_tokens - 1],
    }


@dataclass(frozen=True)
class Prepared:
    """A validated prompt: tokens (BOS included), the subject's token span and the target token."""

    prompt: str
    subject: str
    target: str
    tokens: Int[Tensor, " pos"]
    str_tokens: tuple[str, ...]
    subject_span: tuple[int, int]
    target_id: int
    from_text: bool = True
    """Whether the prompt was given as text (else as tokens)."""


def str_tokens(model: HookedTransformer, tokens: Tensor) -> tuple[str, ...]:
    """The tokens as strings (``<id>`` for a model without a tokenizer)."""
    if model.tokenizer is None:
        return tuple(f"<{int(t)}>" for t in tokens)
    return tuple(model.to_str_tokens(tokens.reshape(-1)))


def find_subject(str_tokens: Sequence[str], subject: str, prompt: str = "") -> tuple[int, int]:
    """The ``[start, end)`` token span of the first occurrence of ``subject`` (ROME's method).

    Concatenates the string tokens, finds the subject's characters and maps them back to
    the tokens that cover them.
    """
    if not subject:
        raise ValueError("The subject is empty; pass the subject exactly as it appears in the prompt.")
    whole = "".join(str_tokens)
    where = whole.find(subject)
    if where < 0:
        shown = prompt or whole
        raise ValueError(
            f"The subject {subject!r} does not occur in the prompt {shown!r}. Pass the subject "
            "exactly as it is written in the prompt (same case, spacing and punctuation)."
        )
    loc, start, end = 0, None, None
    for i, tok in enumerate(str_tokens):
        loc += len(tok)
        if start is None and loc > where:
            start = i
        if end is None and loc >= where + len(subject):
            end = i + 1
            break
    assert start is not None and end is not None
    return start, end


def span_from_offsets(model: HookedTransformer, prompt: str, subject: str, tokens: Tensor) -> tuple[int, int] | None:
    """The subject's token span from a fast tokenizer's character offsets (exact for byte-level
    tokens that split a character); ``None`` when the tokenizer cannot give offsets that match."""
    tok = model.tokenizer
    if tok is None or not getattr(tok, "is_fast", False):
        return None
    where = prompt.find(subject)
    if where < 0:
        return None
    enc = tok(prompt, return_offsets_mapping=True, add_special_tokens=False)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    n_prefix = tokens.numel() - len(ids)
    if n_prefix < 0 or tokens[n_prefix:].tolist() != list(ids):
        return None
    inside = [i for i, (a, b) in enumerate(offsets) if b > where and a < where + len(subject)]
    if not inside:
        return None
    return n_prefix + inside[0], n_prefix + inside[-1] + 1


def check_target_spacing(prompt: str, target: str) -> None:
    """Raise a ValueError when ``target`` lacks the space that separates it from the prompt's last
    word (``"Paris"`` after ``"... the city of"``): the traced token would be another one."""
    if target[:1].isalnum() and prompt and (prompt[-1].isalnum() or prompt[-1] in ".,:;!?"):
        raise ValueError(
            f"The target {target!r} has no leading space, but the prompt ends in {prompt[-20:]!r}, so the "
            f"answer would read {(prompt[-20:] + target)!r}. Pass {' ' + target!r}: the answer's first token "
            "carries the space that separates it from the prompt."
        )


def _target_id(model: HookedTransformer, tokens: Tensor, target: str | int | None) -> int:
    """The target token: the clean top prediction (``None``), a one-token string, or an id."""
    if target is None:
        with torch.no_grad():
            logits = model(tokens[None].to(model.cfg.device), return_type="logits")
        return int(logits[0, -1].argmax())
    if isinstance(target, str):
        if model.tokenizer is None:
            raise ValueError("This model has no tokenizer; pass the target as a token id.")
        ids = model.to_tokens(target, prepend_bos=False)[0]
        if ids.numel() != 1:
            pieces = model.to_str_tokens(ids)
            raise ValueError(
                f"The target {target!r} tokenizes to {ids.numel()} tokens {pieces}; causal tracing "
                f"here scores the probability of a single next token. Pass its first token "
                f"{pieces[0]!r} as the target, or choose an answer that is one token (mind the "
                "leading space)."
            )
        return int(ids[0])
    target_id = int(target)
    if not 0 <= target_id < model.cfg.d_vocab:
        raise ValueError(f"Target id {target_id} is outside the vocabulary (0..{model.cfg.d_vocab - 1}).")
    return target_id


def prepare(
    model: HookedTransformer,
    prompt: str | Int[Tensor, " pos"],
    subject: str | tuple[int, int],
    target: str | int | None = None,
    prepend_bos: bool = True,
) -> Prepared:
    """Tokenize and validate one fact; every problem is a ValueError saying what to do.

    ``prompt`` is a string or a 1-D token tensor; ``subject`` is a substring of the prompt or a
    ``(start, end)`` token span; ``target`` is a string that must be one token, a token id, or
    ``None`` for the clean run's top prediction.
    """
    if isinstance(prompt, str):
        tokens = model.to_tokens(prompt, prepend_bos=prepend_bos)[0].cpu()
        prompt_str = prompt
    else:
        tokens = torch.as_tensor(prompt).reshape(-1).cpu()
        prompt_str = "".join(str_tokens(model, tokens)) if model.tokenizer is not None else ""
    n_ctx = model.cfg.n_ctx
    if tokens.numel() > n_ctx:
        raise ValueError(
            f"The prompt is {tokens.numel()} tokens long but {model.cfg.model_name} has a context of "
            f"{n_ctx} tokens. Shorten the prompt to at most {n_ctx} tokens."
        )
    if tokens.numel() < 2:
        raise ValueError("The prompt needs at least two tokens (a subject and a position after it).")
    strs = str_tokens(model, tokens)
    if isinstance(subject, str):
        span = span_from_offsets(model, prompt, subject, tokens) if isinstance(prompt, str) else None
        if span is None:
            span = find_subject(strs, subject, prompt_str)
        subject_str = subject
    else:
        span = (int(subject[0]), int(subject[1]))
        if not 0 <= span[0] < span[1] <= tokens.numel():
            raise ValueError(
                f"Subject span {span} is outside the prompt's {tokens.numel()} tokens; "
                "pass (start, end) with 0 <= start < end <= number of tokens."
            )
        subject_str = "".join(strs[span[0] : span[1]])
    if isinstance(target, str):
        check_target_spacing(prompt_str, target)
    target_id = _target_id(model, tokens, target)
    target_str = model.to_single_str_token(target_id) if model.tokenizer is not None else f"<{target_id}>"
    return Prepared(
        prompt_str, subject_str, target_str, tokens, strs, span, target_id, from_text=isinstance(prompt, str)
    )


def fact_fields(fact: Any) -> dict:
    """A fact (dict/Dataset row, or a (prompt, subject, target) tuple) as a plain dict."""
    if isinstance(fact, Mapping):
        return {
            "prompt": fact["prompt"],
            "subject": fact["subject"],
            "target": fact.get("target"),
            "id": fact.get("id"),
        }
    prompt, subject, *rest = fact
    return {"prompt": prompt, "subject": subject, "target": rest[0] if rest else None, "id": None}


def first_token(model: HookedTransformer, target: str) -> str:
    """The first token of an answer (what ROME traces, and what ``filter_known`` checks)."""
    return model.to_single_str_token(first_target_token(model, target))
