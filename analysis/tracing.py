"""Causal tracing: which hidden states carry a fact from the subject to the answer.

Causal tracing (Meng et al. 2022, "Locating and Editing Factual Associations in GPT", the
ROME paper) asks where, inside a language model, the information that completes a fact
such as "The Eiffel Tower is located in the city of" -> " Paris" is carried. It runs the
model three times. The *clean* run sees the prompt and predicts the answer with probability
``p_clean``. The *corrupted* run hides the subject: ROME adds Gaussian noise (3 times the
standard deviation of token embeddings) to the embeddings of the subject tokens, averaged
over several noise samples; a symmetric alternative replaces the subject by another subject
of the same token length. The answer's probability drops to ``p_corrupt``. The *restored*
runs repeat the corrupted run but copy one clean hidden state back in, at one layer and one
token position, and measure the answer's probability ``p_restored``. A state whose
restoration brings the answer back carries the information; its *indirect effect* is
``p_restored - p_corrupt``. ROME restores the residual stream one state at a time, and
MLP and attention outputs over a window of ``k = 10`` consecutive layers (one state barely
moves the output). Averaged over many facts and grouped by token role (first, middle and
last subject token, first subsequent token, further tokens, last token) this is the
*average indirect effect* (AIE). On GPT-2 XL, ROME found a peak of MLP effect in early and
middle layers at the last subject token, and a peak of attention effect in late layers at
the last token.

The engine here does the same arithmetic as TransformerLens's ``patching`` module (one
hooked forward pass per restored state) but shares work: all restorations at a position are
run as one batch; each starts at the layer it patches, from the corrupted run's cached
residual stream; only positions at and after the patched one are recomputed, using the
corrupted run's cached keys and values for earlier positions; and states whose clean and
corrupted values are identical are not recomputed at all. Results are keyed by hook name
(``hook_resid_pre``, ``hook_resid_post``, ``hook_mlp_out``, ``hook_attn_out``).
*Attribution patching* (Nanda 2023; Syed et al. 2023) is the fast mode: a first-order
estimate ``(clean - corrupt) . d metric / d activation`` from one forward and one backward
pass of the corrupted run.

The per-component score in :func:`component_information` is the redundancy signal of the
seed paper (Scarlatescu & Mehta, "Information-Aware Compression Schemes Using Causal
Tracing"): how much restoring one layer's MLP or attention output recovers known facts.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping, Sequence

# tqdm.auto warns inside a notebook kernel without ipywidgets; the book shows no bars anyway
warnings.filterwarnings("ignore", message="IProgress not found")

import torch  # noqa: E402
from jaxtyping import Float, Int  # noqa: E402
from torch import Tensor  # noqa: E402
from transformer_lens import HookedTransformer  # noqa: E402
from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry  # noqa: E402

from analysis.progress import progress  # noqa: E402
from analysis.models import _weights_version, model_key  # noqa: E402

# --------------------------------------------------------------------------------------
# Vocabulary: hook names, windows, token roles
# --------------------------------------------------------------------------------------

HOOKS: tuple[str, ...] = ("hook_resid_pre", "hook_resid_post", "hook_mlp_out", "hook_attn_out")
"""The per-block hook points a trace can restore (``blocks.{layer}.<hook>``)."""

KIND_ALIASES: dict[str, str] = {
    "resid": "hook_resid_pre",
    "resid_pre": "hook_resid_pre",
    "resid_post": "hook_resid_post",
    "mlp": "hook_mlp_out",
    "mlp_out": "hook_mlp_out",
    "attn": "hook_attn_out",
    "attn_out": "hook_attn_out",
    **{h: h for h in HOOKS},
}
"""Short names accepted for kinds; results are always keyed by the full hook name."""

WINDOWED: tuple[str, ...] = ("hook_mlp_out", "hook_attn_out")
"""Kinds that ROME restores over a window of consecutive layers (the residual is never windowed)."""

ROLES: tuple[str, ...] = (
    "first subject",
    "middle subject",
    "last subject",
    "first subsequent",
    "further",
    "last",
)
"""Token roles of ROME's average-indirect-effect figures, in their order."""

CACHE_VERSION = 2
"""Part of every cached result's key; bumped when the engine's output for the same inputs changes."""

Corruption = Literal["noise", "tokens"]
Method = Literal["exact", "attribution"]


def hook_kind(kind: str) -> str:
    """The hook name for a kind (``"mlp"`` -> ``"hook_mlp_out"``); ValueError for unknown kinds."""
    try:
        return KIND_ALIASES[kind]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown trace kind {kind!r}. Use one of {sorted(KIND_ALIASES)} "
            "(results are keyed by the hook names hook_resid_pre, hook_resid_post, "
            "hook_mlp_out and hook_attn_out)."
        ) from None


def act_name(kind: str, layer: int) -> str:
    """The TransformerLens hook point of a kind at a layer, e.g. ``blocks.3.hook_mlp_out``."""
    return f"blocks.{layer}.{hook_kind(kind)}"


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


# --------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TraceConfig:
    """Sizes of the causal-tracing study for one run profile (see :func:`trace_config_for`)."""

    n_screen: int
    """Facts screened with :func:`analysis.data.filter_known` for ones the model knows."""
    n_exact: int
    """Known facts traced exactly for the average indirect effect."""
    n_attribution: int
    """Known facts traced by attribution patching (the fast mode)."""
    n_samples: int
    """Noise samples per corrupted run (ROME: 10)."""
    n_heatmaps: int
    """Facts shown as full ROME-style heatmaps."""
    n_compare: int
    """Facts used to compare corruption modes and exact vs attribution traces."""
    heatmap_samples: int = 10
    """Noise samples for the heatmaps."""
    window: int = 10
    """ROME's restoration window for MLP and attention (layers)."""
    noise_factor: float = 3.0
    """Noise standard deviation, in units of the embedding standard deviation (ROME: 3)."""
    noise_tokens: int = 4096
    """Evaluation-text tokens on which the embedding standard deviation is measured."""
    seed: int = 0
    max_rows: int = 1024
    """Largest batch (restored sequences) in one forward pass."""
    extra_models: tuple[str, ...] = ()
    """Models also traced when their weights are available (the ``gpu`` profile)."""


TRACE_CONFIGS: dict[str, TraceConfig] = {
    "smoke": TraceConfig(n_screen=80, n_exact=4, n_attribution=6, n_samples=2, n_heatmaps=1,
                         n_compare=3, heatmap_samples=2, noise_tokens=512, max_rows=512),
    "cpu": TraceConfig(n_screen=1800, n_exact=50, n_attribution=220, n_samples=2, n_heatmaps=3,
                       n_compare=25, heatmap_samples=10),
    "gpu": TraceConfig(n_screen=8000, n_exact=1000, n_attribution=2000, n_samples=10, n_heatmaps=4,
                       n_compare=200, noise_tokens=65_536, max_rows=4096,
                       extra_models=("gemma-2-2b",)),
}
"""Sizes per profile. ``cpu`` fits the chapter in about 15 minutes on 2 cores; ``gpu`` is ROME's
scale (1000 facts, 10 noise samples, window 10)."""


def trace_config_for(profile: Any) -> TraceConfig:
    """The :class:`TraceConfig` for a profile (a :class:`~analysis.config.Profile` or its name).

    ``profile.extra["tracing"]`` (a dict of field values), when present, overrides fields.
    """
    from analysis.config import study_config

    return study_config(TRACE_CONFIGS, profile, "tracing")


# --------------------------------------------------------------------------------------
# Noise scale
# --------------------------------------------------------------------------------------


def embedding_std(model: HookedTransformer, tokens: Int[Tensor, "n"]) -> float:
    """Standard deviation of the token embeddings (``hook_embed``) over ``tokens``, all dims pooled."""
    tokens = torch.as_tensor(tokens).reshape(-1).to(model.cfg.device)
    with torch.no_grad():
        emb = model.embed(tokens[None])  # [1, n, d_model]
    return float(emb.float().std())


_DEFAULT_NOISE: dict[tuple[str, int, float], float] = {}


def noise_scale(
    model: HookedTransformer,
    tokens: Int[Tensor, "n"] | None = None,
    factor: float = 3.0,
    n_tokens: int = 4096,
) -> float:
    """ROME's noise level: ``factor`` x the embedding std measured on evaluation text.

    Without ``tokens`` it reads ``n_tokens`` tokens of the evaluation split from
    :func:`analysis.data.lm_tokens` (remembered per model for the session).
    """
    if tokens is not None:
        return factor * embedding_std(model, tokens)
    key = (model.cfg.model_name, n_tokens, factor)
    if key not in _DEFAULT_NOISE:
        if model.tokenizer is None:
            raise ValueError(
                "This model has no tokenizer, so the embedding std cannot be measured on the "
                "evaluation text. Pass noise=<absolute std> (or noise_scale(model, tokens))."
            )
        from analysis.data import lm_tokens

        toks = lm_tokens(model.tokenizer, split="eval", n_tokens=n_tokens)
        _DEFAULT_NOISE[key] = factor * embedding_std(model, toks)
    return _DEFAULT_NOISE[key]


def subject_noise(
    n_samples: int, n_subject: int, d_model: int, scale: float, seed: int = 0
) -> Float[Tensor, "sample subj d_model"]:
    """The seeded Gaussian noise added to the subject embeddings (the same for every restoration)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n_samples, n_subject, d_model, generator=gen) * scale


# --------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """A validated prompt: tokens (BOS included), the subject's token span and the target token."""

    prompt: str
    subject: str
    target: str
    tokens: Int[Tensor, "pos"]
    str_tokens: tuple[str, ...]
    subject_span: tuple[int, int]
    target_id: int
    from_text: bool = True
    """Whether the prompt was given as text (else as tokens)."""


def _str_tokens(model: HookedTransformer, tokens: Tensor) -> tuple[str, ...]:
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


def _span_from_offsets(
    model: HookedTransformer, prompt: str, subject: str, tokens: Tensor
) -> tuple[int, int] | None:
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


def prepare(
    model: HookedTransformer,
    prompt: str | Int[Tensor, "pos"],
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
        prompt_str = "".join(_str_tokens(model, tokens)) if model.tokenizer is not None else ""
    n_ctx = model.cfg.n_ctx
    if tokens.numel() > n_ctx:
        raise ValueError(
            f"The prompt is {tokens.numel()} tokens long but {model.cfg.model_name} has a context of "
            f"{n_ctx} tokens. Shorten the prompt to at most {n_ctx} tokens."
        )
    if tokens.numel() < 2:
        raise ValueError("The prompt needs at least two tokens (a subject and a position after it).")
    str_toks = _str_tokens(model, tokens)
    if isinstance(subject, str):
        span = _span_from_offsets(model, prompt, subject, tokens) if isinstance(prompt, str) else None
        if span is None:
            span = find_subject(str_toks, subject, prompt_str)
        subject_str = subject
    else:
        span = (int(subject[0]), int(subject[1]))
        if not 0 <= span[0] < span[1] <= tokens.numel():
            raise ValueError(
                f"Subject span {span} is outside the prompt's {tokens.numel()} tokens; "
                "pass (start, end) with 0 <= start < end <= number of tokens."
            )
        subject_str = "".join(str_toks[span[0]:span[1]])
    if target is None:
        with torch.no_grad():
            logits = model(tokens[None].to(model.cfg.device), return_type="logits")
        target_id = int(logits[0, -1].argmax())
    elif isinstance(target, str):
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
        target_id = int(ids[0])
    else:
        target_id = int(target)
        if not 0 <= target_id < model.cfg.d_vocab:
            raise ValueError(f"Target id {target_id} is outside the vocabulary (0..{model.cfg.d_vocab - 1}).")
    target_str = (
        model.to_single_str_token(target_id) if model.tokenizer is not None else f"<{target_id}>"
    )
    return Prepared(prompt_str, subject_str, target_str, tokens, str_toks, span, target_id,
                    from_text=isinstance(prompt, str))


def _replacement_tokens(
    model: HookedTransformer, fact: Prepared, replacement: str | Tensor, prepend_bos: bool
) -> Int[Tensor, "pos"]:
    """The corrupted prompt's tokens for symmetric token replacement, checked for equal length."""
    if isinstance(replacement, str):
        if replacement == fact.subject:
            raise ValueError(f"The replacement subject {replacement!r} equals the subject; choose another.")
        if not fact.from_text:
            raise ValueError("The prompt was given as tokens: give the corrupted prompt as tokens too.")
        # the clean prompt with the first occurrence of the subject replaced
        where = fact.prompt.find(fact.subject)
        corrupt_prompt = fact.prompt[:where] + replacement + fact.prompt[where + len(fact.subject):]
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


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------


@dataclass
class TraceResult:
    """One causal trace: clean, corrupted and restored probabilities of the target.

    ``restored[hook]`` has shape ``[layer, pos]``: the target probability when that state
    (over the window, for MLP and attention) is restored. Positions that were not asked for
    are NaN. Tokens label the positions; the subject is ``tokens[subject_span[0]:subject_span[1]]``.
    """

    prompt: str
    subject: str
    target: str
    target_id: int
    tokens: tuple[str, ...]
    subject_span: tuple[int, int]
    clean_prob: float
    corrupted_prob: float
    clean_top: str
    clean_top_id: int
    restored: dict[str, Float[Tensor, "layer pos"]]
    window: int
    corruption: str
    n_samples: int
    noise: float | None
    method: str = "exact"

    @property
    def correct(self) -> bool:
        """Whether the clean run's top prediction is the target."""
        return self.clean_top_id == self.target_id

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self.restored)

    @property
    def n_layers(self) -> int:
        return next(iter(self.restored.values())).shape[0]

    def __getitem__(self, kind: str) -> Float[Tensor, "layer pos"]:
        return self.restored[hook_kind(kind)]

    def indirect_effect(self, kind: str) -> Float[Tensor, "layer pos"]:
        """``p_restored - p_corrupt`` per [layer, pos]."""
        return self[kind] - self.corrupted_prob

    @property
    def total_effect(self) -> float:
        """``p_clean - p_corrupt``: what a perfect restoration recovers."""
        return self.clean_prob - self.corrupted_prob

    def roles(self) -> dict[str, list[int]]:
        """Positions of each token role (see :func:`token_roles`)."""
        return token_roles(self.subject_span, len(self.tokens))

    def role_effects(self, kind: str) -> Float[Tensor, "role layer"]:
        """Indirect effect averaged within each token role (NaN for a role the prompt lacks)."""
        ie = self.indirect_effect(kind)
        out = torch.full((len(ROLES), ie.shape[0]), float("nan"))
        for i, positions in enumerate(self.roles().values()):
            if positions:
                out[i] = ie[:, positions].mean(dim=1)
        return out

    def with_window(self, window: int) -> "TraceResult":
        """An attribution trace (traced with window 1) summed over ROME's windows.

        Attribution is linear in the restored states, so a windowed estimate is exactly the sum
        of the single-state ones; exact traces are not additive and must be traced again.
        """
        if self.method != "attribution" or self.window != 1:
            raise ValueError("Only attribution traces made with window=1 can be re-windowed; "
                             "trace exact results again with the window you want.")
        L = self.n_layers
        restored = {}
        for h, grid in self.restored.items():
            if h in WINDOWED:
                ie = grid - self.corrupted_prob
                grid = self.corrupted_prob + torch.stack(
                    [ie[list(window_layers(l, window, L))].sum(0) for l in range(L)])
            restored[h] = grid
        return dataclasses.replace(self, restored=restored, window=window)

    def labels(self) -> list[str]:
        """Token labels with the subject tokens starred, as in ROME's heatmaps."""
        s, e = self.subject_span
        return [t + ("*" if s <= i < e else "") for i, t in enumerate(self.tokens)]


# --------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------


@dataclass
class _Runs:
    """Clean activations and the corrupted run's cache, shared by every restoration."""

    clean: dict[str, Float[Tensor, "layer pos d_model"]]
    clean_logits: Float[Tensor, "d_vocab"]
    corrupt_resid: Float[Tensor, "sample layer pos d_model"]
    corrupt_keys: list[Tensor]  # per layer [sample, pos, kv_head, d_head]
    corrupt_values: list[Tensor]
    corrupt_probs: Float[Tensor, "sample"]
    noise: Float[Tensor, "sample subj d_model"] | None
    corrupt_tokens: Int[Tensor, "sample pos"]
    first_changed: int
    rot_keys: list[Tensor] | None = None  # keys after rotary, filled by the fast engine


def _corrupt_inputs(
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
        toks = _replacement_tokens(model, fact, replacement, prepend_bos)
        changed = (toks != fact.tokens).nonzero()
        return toks[None], None, int(changed[0])
    raise ValueError(f"Unknown corruption {corruption!r}; use 'noise' or 'tokens'.")


def _embed_rows_hook(noise: Tensor | None, span: tuple[int, int], grad: bool = False):
    """``hook_embed`` for a batch [clean, corrupted...]: noise on the corrupted rows' subject."""
    s, e = span

    def hook(x: Tensor, hook=None) -> Tensor:  # x: [1 + samples, pos, d_model]
        x = x.detach().clone() if grad else x.clone()
        if noise is not None:
            x[1:, s:e] = x[1:, s:e] + noise.to(x.device, x.dtype)
        return x.requires_grad_(True) if grad else x

    return hook


def _runs(
    model: HookedTransformer,
    fact: Prepared,
    corrupt_tokens: Tensor,
    eps: Tensor | None,
    first_changed: int,
    hooks: Iterable[str],
) -> _Runs:
    """Clean activations of the kinds restored, plus the corrupted residual stream, keys and values.

    One forward pass over the batch ``[clean, corrupted sample 1, ..., corrupted sample S]``.
    """
    dev = model.cfg.device
    hooks = set(hooks)
    wanted = hooks | {"hook_resid_pre", "hook_k", "hook_v"}
    batch = torch.cat([fact.tokens[None], corrupt_tokens]).to(dev)
    L = model.cfg.n_layers
    with torch.no_grad(), model.hooks(fwd_hooks=[("hook_embed", _embed_rows_hook(eps, fact.subject_span))]):
        logits, cache = model.run_with_cache(batch, names_filter=lambda n: n.split(".")[-1] in wanted)
    clean = {h: torch.stack([cache[f"blocks.{l}.{h}"][0] for l in range(L)]) for h in hooks}
    resid = torch.stack([cache[f"blocks.{l}.hook_resid_pre"][1:] for l in range(L)], dim=1)
    keys = [cache[f"blocks.{l}.attn.hook_k"][1:] for l in range(L)]
    values = [cache[f"blocks.{l}.attn.hook_v"][1:] for l in range(L)]
    probs = torch.softmax(logits[1:, -1].float(), dim=-1)[:, fact.target_id]
    return _Runs(clean, logits[0, -1], resid, keys, values, probs.cpu(), eps, corrupt_tokens,
                 first_changed)


@dataclass(frozen=True)
class _Site:
    """One restoration: ``hook`` at ``layers`` (the window reported at ``layer``), position ``pos``."""

    hook: str
    layer: int
    layers: tuple[int, ...]
    pos: int

    @property
    def start(self) -> int:
        return min(self.layers)


def _patch_rows(rows: Tensor, value: Tensor):
    def hook(act: Tensor, hook=None) -> Tensor:  # act: [rows, suffix, d_model]
        act[rows, 0] = value
        return act

    return hook


Patches = dict[str, tuple[Tensor, Tensor]]
"""hook name -> (rows to patch, clean value [d_model]) for one layer; position 0 of the suffix."""


class _TLBlocks:
    """Runs TransformerLens's own blocks, patching through hooks (any architecture)."""

    fast = False

    def __init__(self, model: HookedTransformer):
        self.model = model

    def prepare(self, runs: "_Runs") -> None:
        pass

    def block(
        self, j: int, resid: Tensor, runs: "_Runs", p: int, sample: Tensor, patches: Patches, last: bool
    ) -> Float[Tensor, "row suffix d_model"]:
        entry = None
        if p > 0:
            entry = TransformerLensKeyValueCacheEntry(
                past_keys=runs.corrupt_keys[j][sample, :p],
                past_values=runs.corrupt_values[j][sample, :p],
                frozen=True,
            )
        fwd = [(f"blocks.{j}.{h}", _patch_rows(rows, value)) for h, (rows, value) in patches.items()]
        with self.model.hooks(fwd_hooks=fwd):
            return self.model.blocks[j](resid, past_kv_cache_entry=entry)


_FAST_ARCHITECTURES = (None, "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "GPT2LMHeadModel")


class _FastBlocks(_TLBlocks):
    """The same pre-norm block, re-expressed for batches of restorations that share a prefix.

    Differences from TransformerLens's block, none of them numerical beyond float rounding:
    the normalization before attention is computed once (not once each for Q, K and V); Q, K
    and V come from one fused matrix; the corrupted prefix's keys and values are rotated once
    and shared by every row of the same noise sample instead of being copied per row; and at
    the last layer only the last position is computed. Used only for architectures it
    reproduces (:meth:`agrees`, checked when built), else :class:`_TLBlocks`.
    """

    fast = True

    @staticmethod
    def supports(model: HookedTransformer) -> bool:
        from transformer_lens.components import GatedMLP, MLP

        c = model.cfg
        flags_ok = (
            c.original_architecture in _FAST_ARCHITECTURES
            and c.normalization_type in ("LN", "LNPre", "RMS", "RMSPre")
            and c.positional_embedding_type in ("standard", "rotary")
            and c.attention_dir == "causal"
            and not c.parallel_attn_mlp
            and not c.use_normalization_before_and_after
            and not c.use_attn_in
            and not c.use_split_qkv_input
            and not c.use_qk_norm
            and c.clip_qkv is None
            and not c.use_logn_attn
            and not c.use_local_attn
            and not c.use_dynamic_ntk_rope
            and not c.use_attention_sinks
            and (c.attn_scores_soft_cap is None or c.attn_scores_soft_cap <= 0)
            and c.num_experts is None
            and not c.load_in_4bit
            and not c.is_layer_norm_activation()
            and (c.attn_types is None or all(t == "global" for t in c.attn_types))
        )
        return flags_ok and all(type(b.mlp) in (GatedMLP, MLP) for b in model.blocks) or (
            flags_ok and c.attn_only
        )

    def __init__(self, model: HookedTransformer):
        super().__init__(model)
        c = model.cfg
        self.H, self.dh = c.n_heads, c.d_head
        self.Hk = c.n_key_value_heads if c.n_key_value_heads is not None else c.n_heads
        self.rotary = c.positional_embedding_type == "rotary"
        self.wqkv, self.bqkv, self.w_up = [], [], []
        with torch.no_grad():
            for b in model.blocks:
                if getattr(b, "mlp", None) is not None and hasattr(b.mlp, "W_gate"):
                    self.w_up.append(torch.cat([b.mlp.W_gate, b.mlp.W_in], dim=1).contiguous())
                else:
                    self.w_up.append(None)
                a = b.attn
                wk = a._W_K if hasattr(a, "_W_K") else a.W_K
                wv = a._W_V if hasattr(a, "_W_V") else a.W_V
                bk = a._b_K if hasattr(a, "_b_K") else a.b_K
                bv = a._b_V if hasattr(a, "_b_V") else a.b_V
                w = torch.cat([x.permute(0, 2, 1).reshape(-1, c.d_model) for x in (a.W_Q, wk, wv)])
                self.wqkv.append(w.contiguous())  # [(H + 2 Hk) d_head, d_model]
                self.bqkv.append(torch.cat([a.b_Q.reshape(-1), bk.reshape(-1), bv.reshape(-1)]))

    def prepare(self, runs: "_Runs") -> None:
        """Rotate the corrupted run's keys once (positions 0..T-1) for every layer."""
        if self.rotary and runs.rot_keys is None:
            with torch.no_grad():
                runs.rot_keys = [blk.attn.apply_rotary(k, 0, None)
                                 for blk, k in zip(self.model.blocks, runs.corrupt_keys)]
        elif runs.rot_keys is None:
            runs.rot_keys = runs.corrupt_keys

    def block(
        self, j: int, resid: Tensor, runs: "_Runs | None", p: int, sample: Tensor | None,
        patches: Patches, last: bool, record: dict[str, Tensor] | None = None,
    ) -> Float[Tensor, "row suffix d_model"]:
        """Block ``j`` on ``resid`` (positions ``p..``), patching position ``p`` of some rows.

        ``record``, when given, receives the block's ``hook_resid_pre``, ``hook_attn_out``,
        ``hook_mlp_out`` and ``hook_resid_post`` (only the last position when ``last``).
        """
        blk = self.model.blocks[j]
        a = blk.attn
        R, t, _ = resid.shape
        S = runs.corrupt_resid.shape[0] if runs is not None else 1
        n = R // S
        if record is not None:
            record["hook_resid_pre"] = resid
        H, Hk, dh = self.H, self.Hk, self.dh
        rep = H // Hk
        h = blk.ln1(resid)
        qkv = torch.nn.functional.linear(h, self.wqkv[j], self.bqkv[j])
        q, k, v = qkv.split([H * dh, Hk * dh, Hk * dh], dim=-1)
        q, k, v = q.reshape(R, t, H, dh), k.reshape(R, t, Hk, dh), v.reshape(R, t, Hk, dh)
        if self.rotary:
            q = a.apply_rotary(q, p, None)
            k = a.apply_rotary(k, p, None)
        if last:
            q, tq = q[:, -1:], 1
        else:
            tq = t
        # rows are site-major, sample-minor: [n, S, ...]; GQA query head = kv_head * rep + r
        q = q.reshape(n, S, tq, Hk, rep, dh)
        k = k.reshape(n, S, t, Hk, dh)
        v = v.reshape(n, S, t, Hk, dh)
        scale = float(a.attn_scale)
        s_new = torch.einsum("nsqhrd,nskhd->nshrqk", q, k) / scale
        causal = torch.ones(t, t, dtype=torch.bool, device=resid.device).tril()[t - tq:]
        s_new = s_new.masked_fill(~causal, float("-inf"))
        if p > 0:
            kp, vp = runs.rot_keys[j][:, :p], runs.corrupt_values[j][:, :p]  # [S, p, Hk, dh]
            s_pre = torch.einsum("nsqhrd,skhd->nshrqk", q, kp) / scale
            pattern = torch.softmax(torch.cat([s_pre, s_new], dim=-1).float(), dim=-1).to(v.dtype)
            z = torch.einsum("nshrqk,skhd->nsqhrd", pattern[..., :p], vp) + torch.einsum(
                "nshrqk,nskhd->nsqhrd", pattern[..., p:], v
            )
        else:
            pattern = torch.softmax(s_new.float(), dim=-1).to(v.dtype)
            z = torch.einsum("nshrqk,nskhd->nsqhrd", pattern, v)
        z = z.reshape(R, tq, H * dh)
        w_o = a.W_O.reshape(H * dh, -1)
        attn_out = torch.addmm(a.b_O, z.reshape(-1, H * dh), w_o).reshape(R, tq, -1)
        if last:
            resid = resid[:, -1:]
        if "hook_attn_out" in patches and not (last and t > 1):
            rows, value = patches["hook_attn_out"]
            attn_out[rows, 0] = value
        mid = resid + attn_out
        if not self.model.cfg.attn_only:
            mlp_out = self._mlp(j, blk.ln2(mid))
            if "hook_mlp_out" in patches and not (last and t > 1):
                rows, value = patches["hook_mlp_out"]
                mlp_out[rows, 0] = value
            mid = mid + mlp_out
        if "hook_resid_post" in patches and not (last and t > 1):
            rows, value = patches["hook_resid_post"]
            mid[rows, 0] = value
        if record is not None:
            record["hook_attn_out"] = attn_out
            if not self.model.cfg.attn_only:
                record["hook_mlp_out"] = mlp_out
            record["hook_resid_post"] = mid
        return mid


    def _mlp(self, j: int, x: Float[Tensor, "row pos d_model"]) -> Float[Tensor, "row pos d_model"]:
        """TransformerLens's MLP / GatedMLP without re-copying the weights on every call."""
        mlp = self.model.blocks[j].mlp
        flat = x.reshape(-1, x.shape[-1])
        if self.w_up[j] is not None:
            gate, lin = (flat @ self.w_up[j]).chunk(2, dim=-1)
            post = mlp.act_fn(gate) * lin + mlp.b_in
        else:
            post = mlp.act_fn(torch.addmm(mlp.b_in, flat, mlp.W_in))
        return torch.addmm(mlp.b_out, post, mlp.W_out).reshape(*x.shape[:-1], -1)


    def agrees(self, atol: float = 1e-4) -> bool:
        """Whether the first and last blocks give TransformerLens's output on a random input with
        a random prefix (2 samples x 2 rows, 3 new positions after 2 cached ones)."""
        from types import SimpleNamespace

        c = self.model.cfg
        gen = torch.Generator().manual_seed(0)
        dev, dtype = c.device, c.dtype
        x = torch.randn(4, 3, c.d_model, generator=gen).to(dev, dtype)
        for j in (0, c.n_layers - 1):
            k = torch.randn(2, 2, self.Hk, self.dh, generator=gen).to(dev, dtype)
            v = torch.randn(2, 2, self.Hk, self.dh, generator=gen).to(dev, dtype)
            keys = [k] * c.n_layers
            runs = SimpleNamespace(corrupt_resid=torch.empty(2, 0), corrupt_keys=keys,
                                   corrupt_values=[v] * c.n_layers, rot_keys=None)
            sample = torch.arange(2, device=dev).repeat(2)
            with torch.no_grad():
                ref = _TLBlocks.block(self, j, x, runs, 2, sample, {}, False)
                self.prepare(runs)
                out = self.block(j, x, runs, 2, sample, {}, False)
            if not torch.allclose(out, ref, atol=atol * max(1.0, float(ref.abs().max()))):
                return False
        return True


def _engine(model: HookedTransformer, fast: bool | None = None) -> _TLBlocks:
    """The block runner for a model: the fast one where it reproduces the model, else TL's.

    The fast runner keeps fused copies of some weights; it is rebuilt whenever a parameter of
    the model has been replaced or modified in place since (e.g. by a compression experiment).
    """
    cache = model.__dict__.setdefault("_tracing_engines", {})
    use_fast = bool(_FastBlocks.supports(model) if fast is None else fast and _FastBlocks.supports(model))
    version = _weights_version(model) if use_fast else None
    if use_fast not in cache or cache[use_fast][0] != version:
        engine = _FastBlocks(model) if use_fast else _TLBlocks(model)
        if use_fast and not engine.agrees():
            warnings.warn(f"The fast tracing engine does not reproduce {model.cfg.model_name}'s "
                          "blocks; using TransformerLens's own blocks (slower, same numbers).")
            engine = _TLBlocks(model)
        cache[use_fast] = (version, engine)
    return cache[use_fast][1]


def _restore(
    model: HookedTransformer,
    runs: _Runs,
    sites: Sequence[_Site],
    target_id: int,
    max_rows: int = 1024,
    desc: str = "restore",
    fast: bool | None = None,
) -> Float[Tensor, "site"]:
    """Target probability (mean over samples) with each site's clean state restored.

    Sites are grouped by position ``p``. A group is one batch whose rows join at the layer
    they patch, from the corrupted residual stream, and whose forward pass covers only
    positions ``p..end``; earlier positions come from the corrupted run's keys and values.
    """
    engine = _engine(model, fast)
    engine.prepare(runs)
    out = torch.empty(len(sites))
    S = runs.corrupt_resid.shape[0]
    by_pos: dict[int, list[int]] = {}
    for i, site in enumerate(sites):
        by_pos.setdefault(site.pos, []).append(i)
    per_chunk = max(1, max_rows // S)
    chunks: list[tuple[int, list[int]]] = []
    for p, idx in sorted(by_pos.items()):
        idx = sorted(idx, key=lambda i: sites[i].start)
        chunks += [(p, idx[k:k + per_chunk]) for k in range(0, len(idx), per_chunk)]
    with torch.no_grad():
        for p, idx in progress(chunks, desc=desc):
            out[idx] = _restore_chunk(engine, runs, [sites[i] for i in idx], p, target_id)
    return out


def _restore_chunk(
    engine: _TLBlocks, runs: _Runs, sites: list[_Site], p: int, target_id: int
) -> Float[Tensor, "site"]:
    """One batched, suffix-only, start-at-layer forward pass for sites at one position."""
    model = engine.model
    dev = model.cfg.device
    S, L, T = runs.corrupt_resid.shape[0], model.cfg.n_layers, runs.corrupt_resid.shape[2]
    n = len(sites)
    sample = torch.arange(S, device=dev).repeat(n)  # row r = site r // S, sample r % S
    first = min(s.start for s in sites)
    resid = None
    for j in range(first, L):
        joining = [i for i in range(n) if sites[i].start == j]
        if joining:
            new = runs.corrupt_resid[:, j, p:].repeat(len(joining), 1, 1)  # [len*S, suffix, d]
            for k, i in enumerate(joining):
                if sites[i].hook == "hook_resid_pre":
                    new[k * S:(k + 1) * S, 0] = runs.clean["hook_resid_pre"][j, p]
            resid = new if resid is None else torch.cat([resid, new])
        rows = resid.shape[0]
        patches: Patches = {}
        for hook in ("hook_attn_out", "hook_mlp_out", "hook_resid_post"):
            idx = [r for i, s in enumerate(sites) if s.hook == hook and j in s.layers
                   for r in range(i * S, (i + 1) * S)]
            if idx:
                patches[hook] = (torch.tensor(idx, device=dev), runs.clean[hook][j, p])
        resid = engine.block(j, resid, runs, p, sample[:rows], patches, last=(j == L - 1))
    probs = _target_probs(model, resid[:, -1], target_id)
    return probs.view(n, S).mean(dim=1).cpu()


def _target_probs(
    model: HookedTransformer, resid: Float[Tensor, "row d_model"], target_id: int
) -> Float[Tensor, "row"]:
    """Softmax probability of the target from final residuals: ln_final, unembed, soft-cap.

    The same arithmetic as ``HookedTransformer.forward`` after the last block, without its
    per-call copy of the transposed unembedding matrix.
    """
    return torch.softmax(_final_logits(model, resid).float(), dim=-1)[:, target_id]


def _final_logits(model: HookedTransformer, resid: Float[Tensor, "row d_model"]) -> Float[Tensor, "row d_vocab"]:
    """Logits from final residuals: ``ln_final``, unembed, soft-cap (as ``HookedTransformer.forward``)."""
    from transformer_lens.utilities.activation_functions import apply_softcap

    x = model.ln_final(resid[:, None])[:, 0] if model.cfg.normalization_type is not None else resid
    logits = torch.addmm(model.unembed.b_U, x, model.unembed.W_U)
    return apply_softcap(logits, model.cfg.output_logits_soft_cap)


def _sites(
    hooks: Sequence[str], positions: Sequence[int], n_layers: int, window: int
) -> list[_Site]:
    return [
        _Site(h, l, window_layers(l, window, n_layers) if h in WINDOWED else (l,), p)
        for h in hooks
        for l in range(n_layers)
        for p in positions
    ]


def _no_effect(site: _Site, runs: _Runs) -> bool:
    """True when the site's clean state provably equals its corrupted state (nothing to recompute)."""
    if site.pos < runs.first_changed:
        return True  # causal attention: earlier positions are untouched by the corruption
    if site.hook == "hook_resid_pre":
        clean = runs.clean["hook_resid_pre"][site.layers[0], site.pos]
        return bool(torch.equal(runs.corrupt_resid[:, site.layers[0], site.pos],
                                clean.expand(runs.corrupt_resid.shape[0], -1)))
    return False


def _attribution_fast(
    engine: "_FastBlocks",
    fact: Prepared,
    corrupt_tokens: Tensor,
    eps: Tensor | None,
    hooks: Sequence[str],
) -> tuple[list[dict[str, Tensor]], list[dict[str, Tensor]], Tensor, Tensor]:
    """Forward ``[clean, corrupted samples]`` through the fast blocks with autograd, and the
    gradient of the mean corrupted target probability with respect to every recorded state.

    Returns per-layer activations and gradients (keyed by hook; at the last layer only the last
    position of the outputs exists, as nothing else reaches the answer), the clean logits at the
    last position, and the corrupted target probabilities.
    """
    model = engine.model
    L = model.cfg.n_layers
    batch = torch.cat([fact.tokens[None], corrupt_tokens]).to(model.cfg.device)
    with torch.enable_grad():
        with model.hooks(fwd_hooks=[("hook_embed", _embed_rows_hook(eps, fact.subject_span, grad=True))]):
            resid = model.input_to_embed(batch)[0]
        acts: list[dict[str, Tensor]] = []
        for j in range(L):
            record: dict[str, Tensor] = {}
            resid = engine.block(j, resid, None, 0, None, {}, last=(j == L - 1), record=record)
            acts.append({h: record[h] for h in hooks})
        logits = _final_logits(model, resid[:, -1])
        probs = torch.softmax(logits.float(), dim=-1)[:, fact.target_id]
        flat = [a[h] for a in acts for h in hooks]
        grads_flat = torch.autograd.grad(probs[1:].mean(), flat, allow_unused=True)
    it = iter(grads_flat)
    grads = [{h: next(it) for h in hooks} for _ in range(L)]
    return acts, grads, logits[0].detach(), probs[1:].detach()


def _attribution(
    model: HookedTransformer,
    fact: Prepared,
    corrupt_tokens: Tensor,
    eps: Tensor | None,
    hooks: Sequence[str],
    window: int,
    fast: bool | None = None,
) -> tuple[dict[str, Float[Tensor, "layer pos"]], Float[Tensor, "d_vocab"], float]:
    """First-order estimate of every restored probability from one forward and one backward pass.

    ``p_restored(l, p) ~= p_corrupt + sum_{j in window(l)} sum_samples
    (clean[j, p] - corrupt[j, p]) . d p_corrupt / d act[j, p]``, with ``p_corrupt`` the mean
    over noise samples. The forward pass runs the batch ``[clean, corrupted samples]``; the
    gradient flows from the corrupted rows only. Returns the estimates, the clean logits at the
    last position and ``p_corrupt``.
    """
    dev = model.cfg.device
    L, T = model.cfg.n_layers, fact.tokens.numel()
    engine = _engine(model, fast)
    if engine.fast:
        acts_l, grads_l, clean_logits, probs = _attribution_fast(engine, fact, corrupt_tokens, eps, hooks)
        corrupt_p = float(probs.mean())
        out = {}
        for h in hooks:
            per_layer = []
            for l in range(L):
                act, g = acts_l[l][h].detach(), grads_l[l][h]
                ie = torch.zeros(T, device=dev)
                if g is not None:
                    t = act.shape[1]  # T, or 1 for outputs of the last layer
                    ie[T - t:] = ((act[:1] - act[1:]) * g[1:]).sum(dim=(0, 2))
                per_layer.append(ie)
            single = torch.stack(per_layer).detach().cpu()
            if h in WINDOWED and window > 1:
                single = torch.stack([single[list(window_layers(l, window, L))].sum(0) for l in range(L)])
            out[h] = corrupt_p + single
        return out, clean_logits, corrupt_p
    acts: dict[str, Tensor] = {}

    def save(act: Tensor, hook) -> None:
        acts[hook.name] = act

    names = [f"blocks.{l}.{h}" for h in hooks for l in range(L)]
    batch = torch.cat([fact.tokens[None], corrupt_tokens]).to(dev)
    fwd = [("hook_embed", _embed_rows_hook(eps, fact.subject_span, grad=True))] + [(n, save) for n in names]
    with torch.enable_grad(), model.hooks(fwd_hooks=fwd):
        logits = model(batch, return_type="logits")
        metric = torch.softmax(logits[1:, -1].float(), dim=-1)[:, fact.target_id].mean()
        grads = torch.autograd.grad(metric, [acts[n] for n in names], allow_unused=True)
    corrupt_p = float(metric.detach())
    out: dict[str, Tensor] = {}
    for h in hooks:
        per_layer = []
        for l in range(L):
            k = names.index(f"blocks.{l}.{h}")
            act, g = acts[names[k]].detach(), grads[k]
            if g is None:
                per_layer.append(torch.zeros(fact.tokens.numel(), device=dev))
                continue
            delta = act[:1] - act[1:]  # clean minus each corrupted sample: [sample, pos, d_model]
            per_layer.append((delta * g[1:]).sum(dim=(0, 2)))
        single = torch.stack(per_layer).cpu()  # [layer, pos]
        if h in WINDOWED and window > 1:
            single = torch.stack([single[list(window_layers(l, window, L))].sum(0) for l in range(L)])
        out[h] = corrupt_p + single
    return out, logits[0, -1].detach(), corrupt_p


def trace(
    model: HookedTransformer,
    prompt: str | Int[Tensor, "pos"],
    subject: str | tuple[int, int],
    target: str | int | None = None,
    kinds: Sequence[str] = ("resid", "mlp", "attn"),
    *,
    corruption: Corruption = "noise",
    noise: float | None = None,
    n_samples: int = 10,
    seed: int = 0,
    replacement: str | Int[Tensor, "pos"] | None = None,
    window: int = 10,
    positions: Sequence[int] | None = None,
    method: Method = "exact",
    max_rows: int = 1024,
    prepend_bos: bool = True,
    fast: bool | None = None,
) -> TraceResult:
    """Causal trace of one fact: corrupt the subject, restore one clean state at a time.

    Args:
        model: a TransformerLens decoder.
        prompt: the fact's prompt (string, or a 1-D token tensor including any BOS).
        subject: the subject as written in the prompt, or its ``(start, end)`` token span.
        target: the answer (one token, leading space included), a token id, or ``None`` for the
            clean run's top prediction.
        kinds: states to restore: ``resid`` (= ``hook_resid_pre``), ``resid_post``, ``mlp``
            (``hook_mlp_out``), ``attn`` (``hook_attn_out``), or their hook names.
        corruption: ``"noise"`` (ROME: Gaussian noise of std ``noise`` on the subject
            embeddings, ``n_samples`` seeded samples) or ``"tokens"`` (the subject replaced by
            ``replacement``, a subject of the same token length).
        noise: absolute noise std; default :func:`noise_scale` (3 x embedding std on eval text).
        window: layers restored together for MLP and attention (ROME: 10; 1 = single state).
        positions: positions to trace (default all); others are NaN in the result.
        method: ``"exact"`` or ``"attribution"`` (gradient estimate, one forward + backward).
        max_rows: largest batch of restored sequences per forward pass.
        fast: use the re-expressed block (``None``: wherever it reproduces the model) or
            TransformerLens's own blocks with hooks (``False``); both give the same numbers.

    Returns:
        a :class:`TraceResult` with ``restored[hook]`` of shape ``[layer, pos]``.
    """
    if not isinstance(model, HookedTransformer):
        raise ValueError(f"trace needs a transformer_lens.HookedTransformer, got {type(model).__name__}.")
    if model.cfg.positional_embedding_type == "shortformer":
        raise ValueError("Shortformer positional embeddings are not supported by the tracing engine.")
    hooks = list(dict.fromkeys(hook_kind(k) for k in kinds))
    fact = prepare(model, prompt, subject, target, prepend_bos)
    T, L = fact.tokens.numel(), model.cfg.n_layers
    if positions is None:
        positions = list(range(T))
    positions = sorted({int(p) for p in positions})
    if positions and not 0 <= positions[0] <= positions[-1] < T:
        raise ValueError(f"positions must lie in 0..{T - 1} for this {T}-token prompt.")
    if corruption == "noise" and noise is None:
        noise = noise_scale(model)
    corrupt_tokens, eps, first_changed = _corrupt_inputs(
        model, fact, corruption, n_samples, noise, seed, replacement, prepend_bos
    )
    if method == "attribution":
        restored, clean_logits, corrupt_p = _attribution(model, fact, corrupt_tokens, eps, hooks, window, fast)
        if len(positions) < T:
            mask = torch.ones(T, dtype=torch.bool)
            mask[positions] = False
            mask[:first_changed] = False  # known exactly: no effect
            for h in restored:
                restored[h][:, mask] = float("nan")
    elif method == "exact":
        runs = _runs(model, fact, corrupt_tokens, eps, first_changed, set(hooks) | {"hook_resid_pre"})
        clean_logits, corrupt_p = runs.clean_logits, float(runs.corrupt_probs.mean())
        restored = {h: torch.full((L, T), float("nan")) for h in hooks}
        sites = _sites(hooks, positions, L, window)
        todo = [s for s in sites if not _no_effect(s, runs)]
        values = _restore(model, runs, todo, fact.target_id, max_rows, fast=fast) if todo else torch.empty(0)
        for s in sites:
            restored[s.hook][s.layer, s.pos] = corrupt_p
        for s, v in zip(todo, values):
            restored[s.hook][s.layer, s.pos] = float(v)
        for h in hooks:  # before the first corrupted token nothing can change (causality)
            restored[h][:, :first_changed] = corrupt_p
    else:
        raise ValueError(f"Unknown method {method!r}; use 'exact' or 'attribution'.")
    clean_probs = torch.softmax(clean_logits.float(), dim=-1)
    top = int(clean_logits.argmax())
    return TraceResult(
        prompt=fact.prompt,
        subject=fact.subject,
        target=fact.target,
        target_id=fact.target_id,
        tokens=fact.str_tokens,
        subject_span=fact.subject_span,
        clean_prob=float(clean_probs[fact.target_id]),
        corrupted_prob=corrupt_p,
        clean_top=model.to_single_str_token(top) if model.tokenizer is not None else f"<{top}>",
        clean_top_id=top,
        restored=restored,
        window=window,
        corruption=corruption,
        n_samples=int(corrupt_tokens.shape[0]),
        noise=noise if corruption == "noise" else None,
        method=method,
    )


# --------------------------------------------------------------------------------------
# Many facts: the average indirect effect
# --------------------------------------------------------------------------------------

SEED_FINDINGS: dict[str, str] = {
    "rome_model": "GPT-2 XL (48 layers), 1000 known facts, Gaussian noise 3x embedding std, "
    "10 samples, window 10 (Meng et al. 2022, Fig. 2 and Sec. 2.2)",
    "rome_mlp": "early-to-middle-layer MLPs at the last subject token carry a large effect "
    "(ROME's abstract: 'a distinct set of steps in middle-layer feed-forward modules that "
    "mediate factual predictions while processing subject tokens')",
    "rome_attn": "attention matters in late layers at the last token",
    "rome_resid": "two peaks in the residual stream: early-middle layers at the last subject "
    "token, and late layers at the last token",
    "seed_claim": "causal-tracing scores per layer identify high-information layers, which "
    "should be compressed least (Scarlatescu & Mehta, GPT-2 small, 12 layers; z-score > 0.5 = "
    "'high', < -0.5 = 'low')",
}
"""What ROME and the seed paper report, in words (their claims, labelled as theirs)."""


def _fields(fact: Any) -> dict:
    """A fact (dict/Dataset row, or a (prompt, subject, target) tuple) as a plain dict."""
    if isinstance(fact, Mapping):
        return {"prompt": fact["prompt"], "subject": fact["subject"], "target": fact.get("target"),
                "id": fact.get("id")}
    prompt, subject, *rest = fact
    return {"prompt": prompt, "subject": subject, "target": rest[0] if rest else None, "id": None}


def first_token(model: HookedTransformer, target: str) -> str:
    """The first token of an answer (what ROME traces, and what ``filter_known`` checks)."""
    from .evaluate import first_target_token

    return model.to_single_str_token(first_target_token(model, target))


@dataclass
class Skipped:
    """A fact left out of an aggregate, and why."""

    prompt: str
    subject: str
    target: str | None
    reason: str


def _trace_fact(model: HookedTransformer, item: dict, kw: dict) -> TraceResult | Skipped:
    """Trace one fact at every position from the subject on; wrong clean predictions are skipped."""
    try:
        target = item["target"]
        if isinstance(target, str) and model.tokenizer is not None:
            target = first_token(model, target)
        fact = prepare(model, item["prompt"], item["subject"], target)
        positions = range(fact.subject_span[0], fact.tokens.numel())
        result = trace(model, item["prompt"], item["subject"], fact.target_id, positions=positions,
                       replacement=item.get("replacement"), **kw)
    except ValueError as err:
        return Skipped(item["prompt"], item["subject"], item.get("target"), str(err))
    if not result.correct:
        return Skipped(item["prompt"], item["subject"], item.get("target"),
                       f"clean prediction {result.clean_top!r} is not the target {result.target!r}")
    return result


@dataclass
class AIEResult:
    """Indirect effects of many facts by token role and layer, with confidence intervals."""

    kinds: tuple[str, ...]
    traces: list[TraceResult]
    skipped: list[Skipped]
    config: dict

    @property
    def n_facts(self) -> int:
        return len(self.traces)

    def effects(self, kind: str) -> Float[Tensor, "fact role layer"]:
        """Per-fact indirect effect by role (NaN where a prompt lacks the role)."""
        if not self.traces:
            raise ValueError(
                f"No fact was traced ({len(self.skipped)} skipped); nothing to average. "
                "See result.skipped for the reasons, and trace more facts."
            )
        return torch.stack([t.role_effects(kind) for t in self.traces])

    def counts(self, kind: str) -> Int[Tensor, "role"]:
        """Facts contributing to each role."""
        return (~self.effects(kind)[:, :, 0].isnan()).sum(0)

    def mean(self, kind: str) -> Float[Tensor, "role layer"]:
        """Average indirect effect (over facts having the role)."""
        return self.effects(kind).nanmean(0)

    def ci(self, kind: str, level: float = 0.95) -> Float[Tensor, "role layer"]:
        """Half-width of the ``level`` confidence interval of :meth:`mean` (Student t)."""
        from scipy.stats import t as student_t

        e = self.effects(kind)
        n = (~e.isnan()).sum(0).float()
        var = ((e - e.nanmean(0)) ** 2).nansum(0) / (n - 1).clamp(min=1)
        q = torch.tensor(student_t.ppf(0.5 + level / 2, (n - 1).clamp(min=1).numpy()), dtype=torch.float32)
        half = q * (var / n.clamp(min=1)).sqrt()
        return torch.where(n > 1, half, torch.full_like(half, float("nan")))

    def peak(self, kind: str, roles: Sequence[str] = ROLES, layers: Sequence[int] | None = None) -> dict:
        """Where the AIE is largest: role, layer, relative depth, value and its interval.

        ``roles`` and ``layers`` restrict the search. Roles that tie at the peak (the same
        position in every prompt, e.g. the first subsequent token that is also the last token)
        are all named, joined by " = ".
        """
        m, h = self.mean(kind), self.ci(kind)
        sel = [ROLES.index(r) for r in roles]
        sub = m[sel].nan_to_num(float("-inf"))
        if layers is not None:
            excluded = torch.ones(m.shape[1], dtype=torch.bool)
            excluded[list(layers)] = False
            sub[:, excluded] = float("-inf")
        flat = int(sub.argmax())
        r, l = sel[flat // m.shape[1]], flat % m.shape[1]
        tied = [ROLES[i] for i in sel if torch.allclose(m[i], m[r], equal_nan=True)]
        return {"kind": hook_kind(kind), "role": " = ".join(tied), "layer": l,
                "depth": l / max(1, m.shape[1] - 1), "aie": float(m[r, l]), "ci": float(h[r, l])}

    def with_window(self, window: int) -> "AIEResult":
        """The same attribution result summed over ROME's windows (see :meth:`TraceResult.with_window`)."""
        return AIEResult(self.kinds, [t.with_window(window) for t in self.traces], self.skipped,
                         self.config | {"window": window})

    def restrict(self, prompts: Iterable[str]) -> "AIEResult":
        """The same result over the traced facts whose prompt is in ``prompts``."""
        keep = set(prompts)
        return AIEResult(self.kinds, [t for t in self.traces if t.prompt in keep],
                         [s for s in self.skipped if s.prompt in keep], self.config)

    def summary(self) -> dict:
        """Counts and mean clean / corrupted probabilities."""
        return {
            "facts traced": self.n_facts,
            "facts skipped": len(self.skipped),
            "mean p_clean": float(torch.tensor([t.clean_prob for t in self.traces]).mean()),
            "mean p_corrupt": float(torch.tensor([t.corrupted_prob for t in self.traces]).mean()),
        }


def average_indirect_effect(
    model: HookedTransformer,
    facts: Iterable[Any],
    kinds: Sequence[str] = ("resid", "mlp", "attn"),
    *,
    corruption: Corruption = "noise",
    n_samples: int = 10,
    noise: float | None = None,
    seed: int = 0,
    window: int = 10,
    replacements: Sequence[str | None] | None = None,
    method: Method = "exact",
    max_rows: int = 1024,
    cache: bool = True,
    desc: str | None = None,
) -> AIEResult:
    """Trace many facts and average the indirect effect by token role and layer (ROME Fig. 2).

    Each fact (a row with ``prompt``, ``subject``, ``target``) is traced at every position from
    its first subject token on (earlier positions have no effect by causality), tracing the
    *first token* of the target, as ROME traces the model's predicted token. Facts whose clean
    prediction is not that token, and facts that fail validation, are listed in
    ``result.skipped`` with the reason and never enter the averages. Each fact's trace is
    cached on disk (keyed by the settings, the fact and the model), so a rerun resumes.
    ``replacements`` (token corruption) gives each fact's replacement subject.
    """
    items = [_fields(f) for f in facts]
    if corruption == "tokens":
        if replacements is None or len(replacements) != len(items):
            raise ValueError("Token corruption needs one replacement subject per fact; see pair_subjects().")
        for it, rep in zip(items, replacements):
            it["replacement"] = rep
    if corruption == "noise" and noise is None:
        noise = noise_scale(model)
    kinds = tuple(dict.fromkeys(hook_kind(k) for k in kinds))
    kw = dict(kinds=kinds, corruption=corruption, n_samples=n_samples if corruption == "noise" else 1,
              noise=noise, seed=seed, window=window, method=method, max_rows=max_rows)
    config = {k: v for k, v in kw.items() if k != "max_rows"} | {"version": CACHE_VERSION}
    compute = lambda item: _trace_fact(model, item, kw)  # noqa: E731
    desc = desc or f"trace {method} ({corruption})"
    if cache:
        from analysis.cache import cached_map

        out = cached_map("tracing/fact", items, compute, config=config, model=model_key(model), desc=desc)
    else:
        out = [compute(item) for item in progress(items, desc=desc)]
    traces = [o for o in out if isinstance(o, TraceResult)]
    skipped = [o for o in out if isinstance(o, Skipped)]
    return AIEResult(kinds, traces, skipped, config)


# --------------------------------------------------------------------------------------
# The redundancy signal for compression
# --------------------------------------------------------------------------------------


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman rank correlation of two 1-D tensors (average ranks for ties)."""
    from scipy.stats import spearmanr

    return float(spearmanr(a.reshape(-1).numpy(), b.reshape(-1).numpy()).statistic)


def pearson(a: Tensor, b: Tensor) -> float:
    """Pearson correlation of two 1-D tensors."""
    a, b = a.reshape(-1).double(), b.reshape(-1).double()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


@dataclass
class ComponentInformation:
    """Per-component causal-tracing score: how much restoring one layer's attention or MLP
    output (window ``config['window']``) recovers the answer, per fact and averaged."""

    per_fact: Float[Tensor, "fact layer component"]
    components: tuple[str, ...]
    aie: AIEResult
    reduce: str

    @property
    def scores(self) -> Float[Tensor, "layer component"]:
        """Mean over facts: the redundancy signal (high = much information, compress least)."""
        return self.per_fact.mean(0)

    def zscores(self) -> Float[Tensor, "layer component"]:
        """Scores standardised over all components (the seed's z-scores)."""
        s = self.scores
        return (s - s.mean()) / s.std()

    def levels(self, threshold: float = 0.5) -> list[list[str]]:
        """The seed's three levels: z > threshold 'high', z < -threshold 'low', else 'medium'."""
        z = self.zscores()
        return [["high" if v > threshold else "low" if v < -threshold else "medium" for v in row]
                for row in z.tolist()]

    def split_half(self, n_splits: int = 200, seed: int = 0) -> Float[Tensor, "split"]:
        """Spearman correlation between the scores of two random halves of the facts."""
        gen = torch.Generator().manual_seed(seed)
        n = self.per_fact.shape[0]
        if n < 4:
            raise ValueError(f"Split-half stability needs at least 4 facts (have {n}).")
        out = []
        for _ in progress(range(n_splits), desc="split halves"):
            perm = torch.randperm(n, generator=gen)
            a, b = perm[: n // 2], perm[n // 2: 2 * (n // 2)]
            out.append(spearman(self.per_fact[a].mean(0), self.per_fact[b].mean(0)))
        return torch.tensor(out)

    @classmethod
    def from_aie(cls, aie: AIEResult, reduce: Literal["max", "sum"] = "max") -> "ComponentInformation":
        """The score from traces that include ``hook_attn_out`` and ``hook_mlp_out``."""
        if not aie.traces:
            raise ValueError("No fact could be traced (all were skipped); see the facts' reasons.")
        comps = ("hook_attn_out", "hook_mlp_out")
        missing = [c for c in comps if c not in aie.kinds]
        if missing:
            raise ValueError(f"The traces lack {missing}; trace the kinds 'attn' and 'mlp'.")
        per = []
        for t in aie.traces:
            s = t.subject_span[0]
            ie = torch.stack([t.indirect_effect(c)[:, s:] for c in comps], dim=-1)  # [layer, pos, comp]
            per.append(ie.amax(1) if reduce == "max" else ie.sum(1))
        return cls(torch.stack(per), comps, aie, reduce)

    def frame(self):
        """A pandas table: one row per layer, scores and levels per component."""
        import pandas as pd

        lv = self.levels()
        rows = {}
        for c, name in enumerate(self.components):
            rows[f"{name} score"] = self.scores[:, c].numpy()
            rows[f"{name} level"] = [r[c] for r in lv]
        return pd.DataFrame(rows).rename_axis("layer")


def component_information(
    model: HookedTransformer,
    facts: Iterable[Any],
    *,
    corruption: Corruption = "noise",
    n_samples: int = 10,
    noise: float | None = None,
    seed: int = 0,
    window: int = 1,
    method: Method = "exact",
    reduce: Literal["max", "sum"] = "max",
    replacements: Sequence[str | None] | None = None,
    max_rows: int = 1024,
    cache: bool = True,
) -> ComponentInformation:
    """The seed's redundancy signal: a score per (layer, attention|MLP) from causal tracing.

    For each known fact, the indirect effect of restoring one component's output (single
    state, ``window=1``, by default) is reduced over positions from the subject on (``max``:
    the strongest single restoration; ``sum``: the total), then averaged over facts.
    """
    aie = average_indirect_effect(
        model, facts, ("attn", "mlp"), corruption=corruption, n_samples=n_samples, noise=noise,
        seed=seed, window=window, replacements=replacements, method=method, max_rows=max_rows,
        cache=cache, desc="component information",
    )
    return ComponentInformation.from_aie(aie, reduce)


# --------------------------------------------------------------------------------------
# Helpers for the chapter: known facts, subject pairs, method agreement
# --------------------------------------------------------------------------------------


def known_facts(model: HookedTransformer, n_screen: int, cache: bool = True):
    """The first ``n_screen`` facts of :func:`analysis.data.facts` that the model knows.

    Returns ``(known Dataset, stats)`` from :func:`analysis.data.filter_known`, cached by model.
    """
    from analysis import data

    pool = data.facts(n_screen)

    def compute():
        known, stats = data.filter_known(model, pool)
        return {"ids": list(known["id"]), "stats": stats}

    if cache:
        from analysis.cache import cached

        out = cached("tracing/known", compute, config={"n_screen": n_screen, "version": CACHE_VERSION},
                     model=model_key(model))
    else:
        out = compute()
    wanted = set(out["ids"])
    keep = [i for i, fid in enumerate(pool["id"]) if fid in wanted]
    return pool.select(keep), out["stats"]


def pair_subjects(
    model: HookedTransformer, facts: Iterable[Any], pool: Iterable[Any] | None = None, seed: int = 0
) -> list[str | None]:
    """For each fact, a subject from ``pool`` (default: the facts) of the same token length.

    Prefers a subject of the same relation with a different answer, so the corrupted prompt
    asks the same question about something else; checks that the corrupted prompt has exactly
    as many tokens as the clean one. ``None`` when no subject fits.
    """
    import random

    def rows(fs):
        return [dict(_fields(f), relation=(f.get("relation") if isinstance(f, Mapping) else None))
                for f in fs]

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
                _replacement_tokens(model, fact, c["subject"], True)
            except ValueError:
                continue
            choice = c["subject"]
            break
        out.append(choice)
    return out


def agreement(
    a: Sequence[TraceResult], b: Sequence[TraceResult], kind: str
) -> dict[str, Any]:
    """Correlation of two methods' indirect effects on the same facts (states from the subject on).

    Traces are paired by prompt; facts traced by only one method are left out. Returns ``pearson``, ``spearman``, ``n`` (states compared) and the paired values ``x``, ``y``.
    """
    xs, ys = [], []
    by_prompt = {t.prompt: t for t in b}
    pairs = [(ta, by_prompt[ta.prompt]) for ta in a if ta.prompt in by_prompt]
    if not pairs:
        raise ValueError("The two lists of traces share no fact (matched by prompt).")
    for ta, tb in pairs:
        s = ta.subject_span[0]
        x, y = ta.indirect_effect(kind)[:, s:].reshape(-1), tb.indirect_effect(kind)[:, s:].reshape(-1)
        ok = ~(x.isnan() | y.isnan())
        xs.append(x[ok])
        ys.append(y[ok])
    x, y = torch.cat(xs), torch.cat(ys)
    return {"pearson": pearson(x, y), "spearman": spearman(x, y), "n": int(x.numel()), "x": x, "y": y}


# --------------------------------------------------------------------------------------
# Tables for the chapter
# --------------------------------------------------------------------------------------

EARLY_MID_DEPTH = 0.6
"""Relative depth (layer / (n_layers - 1)) up to which a peak counts as "early-to-middle"."""
LATE_DEPTH = 0.5
"""Relative depth from which a peak counts as "late"."""


def _where(p: dict, n_layers: int) -> str:
    return f"{p['role']}, layer {p['layer']}/{n_layers - 1} (depth {p['depth']:.2f}), AIE {p['aie']:.3f} ± {p['ci']:.3f}"


def rome_comparison(aie: AIEResult, label: str = "ours") -> "pd.DataFrame":
    """ROME's qualitative finding on GPT-2 XL beside ours, with a computed yes/no per row.

    The rules: the MLP peak (window as traced) matches when it is at the last subject token
    at depth <= :data:`EARLY_MID_DEPTH`, checked twice: over all restorations, and over those
    whose window leaves out layer 0's MLP (which, restored alone, re-supplies much of a
    token's identity); the attention peak matches when it is at the last token at depth >=
    :data:`LATE_DEPTH`; the residual stream when its last-subject-token curve peaks before its
    last-token curve.
    """
    import pandas as pd

    L = aie.traces[0].n_layers
    rows = []
    if "hook_mlp_out" in aie.kinds:
        p = aie.peak("mlp")
        ok = "last subject" in p["role"].split(" = ") and p["depth"] <= EARLY_MID_DEPTH
        rows.append(("MLP peak (hook_mlp_out)", SEED_FINDINGS["rome_mlp"], _where(p, L), ok))
        window = aie.config.get("window", 1)
        beyond = [l for l in range(L) if 0 not in window_layers(l, window, L)]
        p = aie.peak("mlp", layers=beyond)
        ok = "last subject" in p["role"].split(" = ") and p["depth"] <= EARLY_MID_DEPTH
        rows.append((f"MLP peak, restorations without layer 0's MLP (layers {beyond[0]}+ at window "
                     f"{window})", SEED_FINDINGS["rome_mlp"], _where(p, L), ok))
    if "hook_attn_out" in aie.kinds:
        p = aie.peak("attn")
        ok = "last" in p["role"].split(" = ") and p["depth"] >= LATE_DEPTH
        rows.append(("attention peak (hook_attn_out)", SEED_FINDINGS["rome_attn"], _where(p, L), ok))
    if "hook_resid_pre" in aie.kinds:
        a, b = aie.peak("resid", ["last subject"]), aie.peak("resid", ["last"])
        ok = a["layer"] < b["layer"]
        ours = f"last subject token peaks at layer {a['layer']}, last token at layer {b['layer']}"
        rows.append(("residual stream (hook_resid_pre)", SEED_FINDINGS["rome_resid"], ours, ok))
    return pd.DataFrame(rows, columns=["finding", "ROME (GPT-2 XL, their words)", label, "same pattern"])


def aie_agreement(a: AIEResult, b: AIEResult, labels: tuple[str, str] = ("a", "b")) -> "pd.DataFrame":
    """How two AIE results (e.g. two corruptions) agree: correlation of the role x layer maps
    and each one's peak, per kind they share."""
    import pandas as pd

    rows = []
    for kind in [k for k in a.kinds if k in b.kinds]:
        ma, mb = a.mean(kind).reshape(-1), b.mean(kind).reshape(-1)
        ok = ~(ma.isnan() | mb.isnan())
        pa, pb = a.peak(kind), b.peak(kind)
        rows.append({
            "kind": kind,
            "pearson r of AIE maps": pearson(ma[ok], mb[ok]),
            f"peak ({labels[0]})": f"{pa['role']}, layer {pa['layer']}",
            f"peak ({labels[1]})": f"{pb['role']}, layer {pb['layer']}",
            f"max AIE ({labels[0]})": pa["aie"],
            f"max AIE ({labels[1]})": pb["aie"],
        })
    return pd.DataFrame(rows).set_index("kind")
