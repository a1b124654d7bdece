"""One causal trace: corrupt a fact's subject, restore one clean state at a time.

:func:`trace` is ROME's causal trace of one fact (Meng et al. 2022, Sec. 2.1): the clean run
gives ``p_clean``, the corrupted run ``p_corrupt``, and each restored run the probability of
the answer with one clean hidden state (or, for MLP and attention outputs, a window of them)
copied into the corrupted run. A :class:`TraceResult` holds those probabilities as a
``[layer, pos]`` grid per hook (``hook_resid_pre``, ``hook_resid_post``, ``hook_mlp_out``,
``hook_attn_out``); a state's *indirect effect* is ``p_restored - p_corrupt``. ``method``
chooses exact restoration (:mod:`.engine`) or its first-order estimate (:mod:`.attribution`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from analysis.hooks import hook_kind
from analysis.tracing.attribution import attribution
from analysis.tracing.corrupt import Corruption, corrupt_inputs, noise_scale
from analysis.tracing.engine import clean_and_corrupted, no_effect, restore, sites
from analysis.tracing.inputs import ROLES, WINDOWED, prepare, token_roles, window_layers

Method = Literal["exact", "attribution"]


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
    sample_restored: dict[str, Float[Tensor, "sample layer pos"]] | None = None
    """``restored`` per noise sample, before the mean (exact traces; None for attribution)."""
    sample_corrupted: Float[Tensor, " sample"] | None = None
    """``corrupted_prob`` per noise sample (exact traces)."""

    @property
    def correct(self) -> bool:
        """Whether the clean run's top prediction is the target."""
        return self.clean_top_id == self.target_id

    @property
    def kinds(self) -> tuple[str, ...]:
        """The hooks traced."""
        return tuple(self.restored)

    @property
    def n_layers(self) -> int:
        """Layers of the traced model."""
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
            raise ValueError(
                "Only attribution traces made with window=1 can be re-windowed; "
                "trace exact results again with the window you want."
            )
        L = self.n_layers
        restored = {}
        for h, grid in self.restored.items():
            if h in WINDOWED:
                ie = grid - self.corrupted_prob
                grid = self.corrupted_prob + torch.stack(
                    [ie[list(window_layers(l, window, L))].sum(0) for l in range(L)]
                )
            restored[h] = grid
        return dataclasses.replace(self, restored=restored, window=window)

    def with_samples(self, samples: Sequence[int]) -> "TraceResult":
        """The same trace averaged over a subset of its noise samples (indices into the
        ``n_samples``): what a trace with fewer samples would have measured."""
        if self.sample_restored is None or self.sample_corrupted is None:
            raise ValueError(
                "This trace kept no per-sample probabilities (attribution, or cached "
                "before they were kept); trace it again exactly."
            )
        idx = torch.as_tensor(list(samples), dtype=torch.long)
        if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= self.n_samples:
            raise ValueError(f"samples must be indices in 0..{self.n_samples - 1}, at least one.")
        per = {h: g[idx] for h, g in self.sample_restored.items()}
        return dataclasses.replace(
            self,
            restored={h: g.mean(0) for h, g in per.items()},
            corrupted_prob=float(self.sample_corrupted[idx].mean()),
            n_samples=int(idx.numel()),
            sample_restored=per,
            sample_corrupted=self.sample_corrupted[idx],
        )

    def labels(self) -> list[str]:
        """Token labels with the subject tokens starred, as in ROME's heatmaps."""
        s, e = self.subject_span
        return [t + ("*" if s <= i < e else "") for i, t in enumerate(self.tokens)]


def trace(
    model: HookedTransformer,
    prompt: str | Int[Tensor, " pos"],
    subject: str | tuple[int, int],
    target: str | int | None = None,
    kinds: Sequence[str] = ("resid", "mlp", "attn"),
    *,
    corruption: Corruption = "noise",
    noise: float | None = None,
    n_samples: int = 10,
    seed: int = 0,
    replacement: str | Int[Tensor, " pos"] | None = None,
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
        noise: absolute noise std; default :func:`noise_scale` of this one fact's subject (3 x
            the std of its subject's token embeddings); pass the scale measured over many
            facts, as ROME and :func:`~analysis.tracing.average_indirect_effect` do.
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
    hook_names = list(dict.fromkeys(hook_kind(k) for k in kinds))
    fact = prepare(model, prompt, subject, target, prepend_bos)
    T, L = fact.tokens.numel(), model.cfg.n_layers
    if positions is None:
        positions = list(range(T))
    positions = sorted({int(p) for p in positions})
    if positions and not 0 <= positions[0] <= positions[-1] < T:
        raise ValueError(f"positions must lie in 0..{T - 1} for this {T}-token prompt.")
    if corruption == "noise" and noise is None:
        noise = noise_scale(model, facts=[fact])
    corrupt_tokens, eps, first_changed = corrupt_inputs(
        model, fact, corruption, n_samples, noise, seed, replacement, prepend_bos
    )
    if method == "attribution":
        restored, clean_logits, corrupt_p = attribution(model, fact, corrupt_tokens, eps, hook_names, window, fast)
        if len(positions) < T:
            mask = torch.ones(T, dtype=torch.bool)
            mask[positions] = False
            mask[:first_changed] = False  # known exactly: no effect
            for h in restored:
                restored[h][:, mask] = float("nan")
    elif method == "exact":
        runs = clean_and_corrupted(
            model, fact, corrupt_tokens, eps, first_changed, set(hook_names) | {"hook_resid_pre"}
        )
        clean_logits, sample_corrupted = runs.clean_logits, runs.corrupt_probs.float()
        corrupt_p = float(sample_corrupted.mean())
        S = sample_corrupted.numel()
        per = {h: torch.full((S, L, T), float("nan")) for h in hook_names}
        every = sites(hook_names, positions, L, window)
        todo = [s for s in every if not no_effect(s, runs)]
        values = restore(model, runs, todo, fact.target_id, max_rows, fast=fast) if todo else torch.empty(0, S)
        for s in every:
            per[s.hook][:, s.layer, s.pos] = sample_corrupted
        for s, v in zip(todo, values):
            per[s.hook][:, s.layer, s.pos] = v
        for h in hook_names:  # before the first corrupted token nothing can change (causality)
            per[h][:, :, :first_changed] = sample_corrupted[:, None, None]
        restored = {h: g.mean(0) for h, g in per.items()}
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
        sample_restored=per if method == "exact" else None,
        sample_corrupted=sample_corrupted if method == "exact" else None,
    )
