"""Per-component redundancy and importance scores behind one interface.

Every score here is a :class:`ComponentScores`: one number per ``(layer, kind)`` with
``kind`` in :data:`analysis.components.KINDS` (``"attn"``, ``"mlp"``), named as
:func:`analysis.components.component` names them, so scores from different methods line up,
correlate, and turn into the seed's density levels the same way. High means *much
information, compress least*.

- :meth:`ComponentScores.from_aie`: causal tracing (ROME), the seed's main signal: how much
  restoring one layer's attention or MLP output recovers known facts
  (:meth:`analysis.tracing.AIEResult.component_effects`); :func:`causal_tracing` traces a
  model's facts with a run profile's recipe and returns that score;
- :func:`weight_magnitude`: ``sum_W ||W||_F^2`` over the component's weight matrices;
- :func:`gradient_magnitude`: ``sum_W ||dL/dW||_F^2`` of the language-model loss on calibration text.

:meth:`ComponentScores.levels` turns a score into the seed's density levels, with the one
definition every chapter uses, the seed's (Scarlatescu & Mehta, "Information-Aware Compression
Schemes Using Causal Tracing": "After obtaining the redundancy scores for all 12 layers, they are
normalized into z-scores ... below -0.5 low, above +0.5 high"): z-scores over the layers
*within each kind* (attention scores across layers, MLP scores across layers), bucketed at
``±0.5``. A z-score pooled over all components (``by_kind=False``) remains only as a named
alternative that no chapter uses.

:func:`gradient_magnitude_curve` computes the gradient score at several calibration sizes in one
pass, to show how far the score has settled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from analysis import hooks, stats
from analysis.cache import cached, tensors_hash
from analysis.components import KINDS, component, parameter_name, weights_of
from analysis.config import Profile, get_profile
from analysis.forward import windows as cut_windows
from analysis.models import model_key
from analysis.progress import progress
from analysis.tracing import AIEResult, TraceSetup, known_only, recipe_for

LEVELS = ("low", "medium", "high")


def zscores(values: Tensor) -> Tensor:
    """``(v - mean) / std`` (sample std), over all entries of ``values``."""
    v = values.double()
    std = v.std()
    if v.numel() < 2 or not torch.isfinite(std) or std == 0:
        raise ValueError(
            f"Cannot z-score {v.numel()} values with std {float(std) if v.numel() > 1 else 'undefined'}; "
            "give at least two distinct scores."
        )
    return ((v - v.mean()) / std).to(values.dtype)


def levels_from_z(z: Tensor, threshold: float = 0.5) -> list[str]:
    """The seed's buckets: ``z < -threshold`` low, ``z > threshold`` high, otherwise medium."""
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}.")
    return ["low" if v < -threshold else "high" if v > threshold else "medium" for v in z.reshape(-1).tolist()]


@dataclass
class ComponentScores:
    """One score per layer and component kind: ``values[layer, k]`` for ``kinds[k]``.

    ``samples``, when the score is a mean over units (facts, for causal tracing), holds the
    per-unit scores ``[unit, layer, kind]`` whose mean is ``values``.
    """

    name: str
    values: Float[Tensor, "layer kind"]
    kinds: tuple[str, ...] = KINDS
    samples: Float[Tensor, "unit layer kind"] | None = None

    def __post_init__(self):
        if self.values.ndim != 2 or self.values.shape[1] != len(self.kinds):
            raise ValueError(f"values must be [n_layers, {len(self.kinds)}], got {tuple(self.values.shape)}.")
        if not torch.isfinite(self.values).all():
            raise ValueError(f"Score {self.name!r} has non-finite values.")
        if self.samples is not None and tuple(self.samples.shape[1:]) != tuple(self.values.shape):
            raise ValueError(
                f"samples must be [n, {self.values.shape[0]}, {len(self.kinds)}], got {tuple(self.samples.shape)}."
            )

    @classmethod
    def from_aie(
        cls, aie: AIEResult, reduce: Literal["max", "sum"] = "max", name: str = "causal tracing"
    ) -> "ComponentScores":
        """The causal-tracing score from traces of ``hook_attn_out`` and ``hook_mlp_out``: each
        fact's effect of restoring a component's output, reduced over positions from the subject
        on (``max`` or ``sum``), averaged over facts (the per-fact scores are :attr:`samples`)."""
        per_fact = aie.component_effects(reduce)
        return cls(name, per_fact.mean(0).double(), KINDS, per_fact)

    @property
    def components(self) -> list[str]:
        """Component names in the order of :meth:`flat`."""
        return [component(l, k) for l in range(self.values.shape[0]) for k in self.kinds]

    def flat(self) -> Tensor:
        """Scores as ``[n_layers * n_kinds]`` in :attr:`components` order."""
        return self.values.reshape(-1)

    def zscores(self, by_kind: bool = True) -> Float[Tensor, "layer kind"]:
        """Standardised scores, the seed's definition: z over the layers within each kind.

        ``by_kind=False`` pools all components instead; it is not the seed's definition and no
        chapter uses it (the kinds differ in size: an MLP has about three times an attention
        layer's weights, so pooled weight norms would put every MLP "high").
        """
        if not by_kind:
            return zscores(self.values)
        return torch.stack([zscores(self.values[:, k]) for k in range(len(self.kinds))], dim=1)

    def levels(self, threshold: float = 0.5, by_kind: bool = True) -> dict[str, str]:
        """``{component: "low" | "medium" | "high"}``: the seed's buckets of :meth:`zscores`
        (within each kind unless ``by_kind=False``)."""
        return dict(zip(self.components, levels_from_z(self.zscores(by_kind), threshold)))

    def tercile_levels(self) -> dict[str, str]:
        """Equal-count buckets within each kind: the lowest third of layers "low", the top third
        "high" (by rank, ties by layer). Unlike z-scores, a heavy-tailed score cannot put nearly
        every component in one bucket, and every score gives the same bucket sizes."""
        n = self.values.shape[0]
        ranks = self.rank()  # [layer, kind]
        name = lambda r: LEVELS[min(2, int(3 * r / n))]  # noqa: E731
        return {component(l, kind): name(int(ranks[l, k])) for l in range(n) for k, kind in enumerate(self.kinds)}

    def rank(self) -> Tensor:
        """Ranks within each kind (0 = lowest score; ties by layer), ``[layer, kind]``."""
        return self.values.argsort(dim=0, stable=True).argsort(dim=0, stable=True)

    def split_half(self, n_splits: int = 200, seed: int = 0) -> Float[Tensor, " split"]:
        """Spearman correlation between the mean scores of two random halves of :attr:`samples`:
        how much of the ranking is a property of the model rather than of the units sampled."""
        if self.samples is None:
            raise ValueError(f"Score {self.name!r} has no per-unit samples to split.")
        n = self.samples.shape[0]
        if n < 4:
            raise ValueError(f"Split-half stability needs at least 4 samples (have {n}).")
        gen = torch.Generator().manual_seed(seed)
        out = []
        for _ in progress(range(n_splits), desc="split halves"):
            perm = torch.randperm(n, generator=gen)
            a, b = perm[: n // 2], perm[n // 2 : 2 * (n // 2)]
            out.append(stats.spearman(self.samples[a].mean(0), self.samples[b].mean(0)))
        return torch.tensor(out)

    def frame(self, threshold: float = 0.5, by_kind: bool = True):
        """A pandas table: a row per layer, a score and a level column per kind."""

        lv = self.levels(threshold, by_kind)
        cols = {}
        for k, kind in enumerate(self.kinds):
            cols[f"{kind}"] = self.values[:, k].numpy()
            cols[f"{kind} level"] = [lv[component(l, kind)] for l in range(self.values.shape[0])]
        return pd.DataFrame(cols).rename_axis("layer")


def _per_component(model, value_of) -> Tensor:
    """``[n_layers, 2]`` from ``value_of(parameter) -> float`` summed over each component's weights."""
    params = dict(model.named_parameters())
    out = torch.zeros(model.cfg.n_layers, len(KINDS), dtype=torch.float64)
    for l in range(model.cfg.n_layers):
        for k, kind in enumerate(KINDS):
            for w in weights_of(model, component(l, kind), params):
                out[l, k] += value_of(params[parameter_name(model, w, params)])
    return out


def weight_magnitude(model: HookedTransformer) -> ComponentScores:
    """``sum_W ||W||_F^2`` over each component's weight matrices (the seed's first baseline).

    Grouped-query K/V matrices count once per stored KV head, as they are stored.
    """
    return ComponentScores("weight magnitude", _per_component(model, lambda p: float(p.detach().double().pow(2).sum())))


def _squared_gradients(
    model, windows: Tensor, batch_size: int, checkpoints: Sequence[int] | None = None
) -> Float[Tensor, "checkpoint layer kind"]:
    """``[n_checkpoints, n_layers, 2]``: ``sum_W ||dL_n/dW||_F^2``, ``L_n`` the mean loss over the
    first ``n`` windows, for each ``n`` in ``checkpoints`` (default: all windows), from one pass.

    The gradient of the summed window losses is accumulated once; at a checkpoint ``n`` it is the
    gradient of ``n * L_n``. The model's ``requires_grad`` flags are restored and its ``.grad``
    cleared afterwards."""
    checkpoints = sorted(set(checkpoints or [len(windows)]))
    if checkpoints[0] < 1 or checkpoints[-1] > len(windows):
        raise ValueError(f"Checkpoints must lie in [1, {len(windows)}] windows, got {checkpoints}.")
    params = dict(model.named_parameters())
    wanted = {
        parameter_name(model, w, params)
        for l in range(model.cfg.n_layers)
        for kind in KINDS
        for w in weights_of(model, component(l, kind), params)
    }
    flags = {name: p.requires_grad for name, p in params.items()}
    for name, p in params.items():
        p.requires_grad_(name in wanted)
        p.grad = None
    # batches never straddle a checkpoint
    bounds = sorted(set(range(0, checkpoints[-1], batch_size)) | set(checkpoints))
    out = []
    try:
        for begin, end in progress(list(zip(bounds[:-1], bounds[1:])), desc="gradients"):
            x = windows[begin:end].to(model.cfg.device)
            (model(x, return_type="loss") * len(x)).backward()
            if end in checkpoints:
                out.append(_per_component(model, lambda p, n=end: float(p.grad.double().pow(2).sum()) / n**2))
        return torch.stack(out)
    finally:
        for name, p in params.items():
            p.grad = None
            p.requires_grad_(flags[name])


def gradient_magnitude_curve(
    model: HookedTransformer,
    tokens: Int[Tensor, " n"],
    sizes: Sequence[int],
    context: int = 256,
    batch_size: int = 4,
    cache: bool = True,
) -> dict[int, "ComponentScores"]:
    """:func:`gradient_magnitude` on the first ``n`` calibration tokens for each ``n`` in ``sizes``,
    from one pass over the largest (each rounded down to whole windows of ``context``).

    Returns ``{n_tokens: ComponentScores}``. With ``cache`` the curve is stored per model, tokens,
    context, batch size and sizes."""
    windows = cut_windows(tokens, context)
    counts = sorted({min(len(windows), max(1, n // context)) for n in sizes})
    compute = lambda: _squared_gradients(model, windows[: counts[-1]], batch_size, counts)  # noqa: E731
    if cache:
        config = {
            "tokens": tensors_hash([windows[: counts[-1]]]),
            "context": context,
            "batch_size": batch_size,
            "checkpoints": counts,
        }
        values = cached("scores/gradient_curve", compute, config, model_key(model))
    else:
        values = compute()
    return {n * context: ComponentScores("gradient magnitude", v) for n, v in zip(counts, values)}


def gradient_magnitude(
    model: HookedTransformer, tokens: Int[Tensor, " n"], context: int = 256, batch_size: int = 4, cache: bool = True
) -> ComponentScores:
    """``sum_W ||dL/dW||_F^2``, with ``L`` the mean next-token loss over disjoint windows of ``tokens``.

    The gradient is of the loss averaged over every window (one gradient, accumulated over
    batches), as the seed's "magnitude of the gradient of the weights with respect to the cost".
    The model's parameters are left unchanged and their ``.grad`` cleared afterwards. With
    ``cache`` the result is stored per model (:func:`analysis.models.model_key`), tokens
    (their content hash), context and batch size.
    """
    windows = cut_windows(tokens, context)
    compute = lambda: _squared_gradients(model, windows, batch_size)[0]  # noqa: E731
    if cache:
        config = {"tokens": tensors_hash([windows]), "context": context, "batch_size": batch_size}
        values = cached("scores/gradient", compute, config, model_key(model))
    else:
        values = compute()
    return ComponentScores("gradient magnitude", values)


def curve_agreement(curve: dict[int, "ComponentScores"], threshold: float = 0.5):
    """How a score moves with its sample size: per size, the Spearman correlation with the
    largest size's score within each kind, and the share of components whose level (the
    seed's z-score buckets) equals the largest size's. A pandas table, one row per size."""

    sizes = sorted(curve)
    last = curve[sizes[-1]]
    last_levels = last.levels(threshold)
    rows = []
    for n in sizes:
        s = curve[n]
        lv = s.levels(threshold)
        row = {"calibration tokens": n}
        for k, kind in enumerate(s.kinds):
            row[f"ρ with {sizes[-1]} ({kind})"] = stats.spearman(s.values[:, k], last.values[:, k])
        row["same level"] = sum(lv[c] == last_levels[c] for c in lv) / len(lv)
        rows.append(row)
    return pd.DataFrame(rows).set_index("calibration tokens")


def rank_correlations(scores: Sequence[ComponentScores], by_kind: bool = True):
    """Spearman correlations between scores: a table per kind (and pooled when ``by_kind=False``)."""

    names = [s.name for s in scores]
    groups = (
        {kind: [s.values[:, k] for s in scores] for k, kind in enumerate(KINDS)}
        if by_kind
        else {"all": [s.flat() for s in scores]}
    )
    out = {}
    for g, vals in groups.items():
        m = [[stats.spearman(a, b) for b in vals] for a in vals]
        out[g] = pd.DataFrame(m, index=names, columns=names)
    return out


def causal_tracing(
    model: HookedTransformer, profile: Profile | str | None = None, cache: bool = True
) -> ComponentScores:
    """The causal-tracing score of ``model`` under a run profile's recipe
    (:func:`analysis.tracing.recipe_for`), exactly as the causal tracing chapter computes it (the
    same facts, noise and samples, so its cached traces are reused): the single-state (window 1)
    indirect effect of each layer's attention and MLP output, max over positions from the subject
    on, averaged over the ``"score"`` facts traced exactly (:func:`analysis.data.fact_splits`)."""
    profile = get_profile(profile) if profile is None or isinstance(profile, str) else profile
    setup = TraceSetup.for_model(model, recipe_for(profile), known_only(profile), cache)
    return ComponentScores.from_aie(setup.single_state_aie())


# ---- Per-head patching: causal tracing of heads and its attribution-patching estimate -------------


def _target_prob(model: HookedTransformer, toks: Tensor, last: Tensor, target: Tensor) -> Tensor:
    logits = model(toks, return_type="logits")[torch.arange(len(last)), last]
    return logits.float().softmax(-1)[torch.arange(len(last)), target]


@torch.no_grad()
def head_patching(
    model: HookedTransformer, clean: Int[Tensor, "pair pos"], corrupt: Int[Tensor, "pair pos"], last, target
) -> Float[Tensor, "layer head"]:
    """Causal tracing of single heads: the mean over prompt pairs of ``p(target | corrupted run with
    one head's clean hook_z restored at every position) - p(target | corrupted run)`` (the indirect
    effect of ROME's restoration, per head instead of per layer). ``clean`` and ``corrupt`` are
    aligned token rows of equal length per pair (right padding is harmless: it lies after ``last``),
    ``target`` the clean answer's token per pair."""
    L, H = model.cfg.n_layers, model.cfg.n_heads
    last, target = torch.as_tensor(last), torch.as_tensor(target)
    cache: dict[str, Tensor] = {}
    names = [hooks.z(l) for l in range(L)]
    model.run_with_hooks(clean, fwd_hooks=[(n, lambda z, hook: cache.__setitem__(hook.name, z)) for n in names])
    base = _target_prob(model, corrupt, last, target)
    n = len(last)
    rows, heads = torch.arange(H * n), torch.arange(H).repeat_interleave(n)
    out = torch.zeros(L, H)
    for l in progress(range(L), desc="head patching"):
        restored = cache[names[l]].repeat(H, 1, 1, 1)

        def patch(z, hook, restored=restored):
            z = z.clone()
            z[rows, :, heads] = restored[rows, :, heads]
            return z

        with model.hooks(fwd_hooks=[(names[l], patch)]):
            p = _target_prob(model, corrupt.repeat(H, 1), last.repeat(H), target.repeat(H))
        out[l] = (p - base.repeat(H)).view(H, n).mean(1).cpu()
    return out


def head_attribution(
    model: HookedTransformer, clean: Int[Tensor, "pair pos"], corrupt: Int[Tensor, "pair pos"], last, target
) -> Float[Tensor, "layer head"]:
    """Attribution patching of :func:`head_patching` (Nanda 2023; Syed et al. 2023): each restoration
    estimated to first order from one backward pass of the corrupted run, ``(z_clean - z_corrupt) ·
    ∂p(target)/∂z`` summed over positions and the head's ``d_head``, mean over pairs."""
    L = model.cfg.n_layers
    last, target = torch.as_tensor(last), torch.as_tensor(target)
    names = [hooks.z(l) for l in range(L)]
    clean_z: dict[str, Tensor] = {}
    with torch.no_grad():
        model.run_with_hooks(clean, fwd_hooks=[(n, lambda z, hook: clean_z.__setitem__(hook.name, z)) for n in names])
    saved: dict[str, Tensor] = {}
    fwd = [("hook_embed", lambda x, hook: x.detach().requires_grad_(True))]  # a graph even with frozen weights
    fwd += [(n, lambda z, hook: saved.__setitem__(hook.name, z)) for n in names]
    with torch.enable_grad(), model.hooks(fwd_hooks=fwd):
        p = _target_prob(model, corrupt, last, target)
        grads = torch.autograd.grad(p.sum(), [saved[n] for n in names])
    per = [((clean_z[n] - saved[n].detach()) * g).sum((1, 3)).mean(0) for n, g in zip(names, grads)]  # [head]
    return torch.stack(per).float().cpu()
