"""Per-component redundancy and importance scores behind one interface.

Every score here is a :class:`ComponentScores`: one number per ``(layer, kind)`` with
``kind`` in ``("attn", "mlp")``, named as :func:`analysis.compress.component` names them, so
scores from different methods line up, correlate, and turn into the seed's density levels the
same way. High means *much information, compress least*.

- :func:`causal_information`: causal tracing (ROME), the seed's main signal;
- :func:`weight_magnitude`: ``sum_W ||W||_F^2`` over the component's weight matrices;
- :func:`gradient_magnitude`: ``sum_W ||dL/dW||_F^2`` of the language-model loss on calibration text.

:meth:`ComponentScores.levels` z-scores and buckets them into low/medium/high at ``±0.5``,
exactly as the seed does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from analysis.compress import KINDS, component, parameter_name, weights_of
from analysis.progress import progress

LEVELS = ("low", "medium", "high")


def zscores(values: Tensor) -> Tensor:
    """``(v - mean) / std`` (sample std), over all entries of ``values``."""
    v = values.double()
    std = v.std()
    if v.numel() < 2 or not torch.isfinite(std) or std == 0:
        raise ValueError(f"Cannot z-score {v.numel()} values with std {float(std) if v.numel() > 1 else 'undefined'}; "
                         "give at least two distinct scores.")
    return ((v - v.mean()) / std).to(values.dtype)


def levels_from_z(z: Tensor, threshold: float = 0.5) -> list[str]:
    """The seed's buckets: ``z < -threshold`` low, ``z > threshold`` high, otherwise medium."""
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}.")
    return ["low" if v < -threshold else "high" if v > threshold else "medium" for v in z.reshape(-1).tolist()]


@dataclass
class ComponentScores:
    """One score per layer and component kind: ``values[layer, k]`` for ``kinds[k]``."""

    name: str
    values: Float[Tensor, "layer kind"]
    kinds: tuple[str, ...] = KINDS

    def __post_init__(self):
        if self.values.ndim != 2 or self.values.shape[1] != len(self.kinds):
            raise ValueError(f"values must be [n_layers, {len(self.kinds)}], got {tuple(self.values.shape)}.")
        if not torch.isfinite(self.values).all():
            raise ValueError(f"Score {self.name!r} has non-finite values.")

    @property
    def components(self) -> list[str]:
        """Component names in the order of :meth:`flat`."""
        return [component(l, k) for l in range(self.values.shape[0]) for k in self.kinds]

    def flat(self) -> Tensor:
        """Scores as ``[n_layers * n_kinds]`` in :attr:`components` order."""
        return self.values.reshape(-1)

    def zscores(self, by_kind: bool = True) -> Float[Tensor, "layer kind"]:
        """Standardised scores: within each kind across layers (default), or pooled over all components.

        Within-kind is the default because the kinds differ in size: an MLP has about three
        times an attention layer's weights, so pooled weight norms would put every MLP "high".
        """
        if not by_kind:
            return zscores(self.values)
        return torch.stack([zscores(self.values[:, k]) for k in range(len(self.kinds))], dim=1)

    def levels(self, threshold: float = 0.5, by_kind: bool = True) -> dict[str, str]:
        """``{component: "low" | "medium" | "high"}`` (the seed's z-score buckets)."""
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

    def frame(self):
        """A pandas table: a row per layer, a score and a level column per kind."""
        import pandas as pd

        lv = self.levels()
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


def weight_magnitude(model) -> ComponentScores:
    """``sum_W ||W||_F^2`` over each component's weight matrices (the seed's first baseline).

    Grouped-query K/V matrices count once per stored KV head, as they are stored.
    """
    return ComponentScores("weight magnitude", _per_component(model, lambda p: float(p.detach().double().pow(2).sum())))


def gradient_magnitude(
    model, tokens: Int[Tensor, " n"], context: int = 256, batch_size: int = 4
) -> ComponentScores:
    """``sum_W ||dL/dW||_F^2``, with ``L`` the mean next-token loss over disjoint windows of ``tokens``.

    The gradient is of the loss averaged over every window (one gradient, accumulated over
    batches), as the seed's "magnitude of the gradient of the weights with respect to the cost".
    The model's parameters are left unchanged and their ``.grad`` cleared afterwards.
    """
    n = (tokens.numel() // context) * context
    if n == 0:
        raise ValueError(f"Need at least context={context} calibration tokens for gradients, got {tokens.numel()}.")
    windows = tokens[:n].view(-1, context)
    params = dict(model.named_parameters())
    wanted = {parameter_name(model, w, params) for l in range(model.cfg.n_layers) for kind in KINDS
              for w in weights_of(model, component(l, kind), params)}
    flags = {name: p.requires_grad for name, p in params.items()}
    for name, p in params.items():
        p.requires_grad_(name in wanted)
        p.grad = None
    try:
        for i in progress(range(0, len(windows), batch_size), desc="gradients"):
            x = windows[i : i + batch_size].to(model.cfg.device)
            loss = model(x, return_type="loss") * len(x) / len(windows)
            loss.backward()
        scores = _per_component(model, lambda p: float(p.grad.double().pow(2).sum()))
    finally:
        for name, p in params.items():
            p.grad = None
            p.requires_grad_(flags[name])
    return ComponentScores("gradient magnitude", scores)


def causal_information(model, profile_name: str | None = None, cache: bool = True) -> ComponentScores:
    """The causal-tracing score exactly as the causal tracing chapter computes it (same facts,
    noise and samples, so its cached traces are reused): the single-state (window 1) indirect
    effect of each layer's attention and MLP output, max over positions from the subject on,
    averaged over the known facts traced exactly. See :func:`analysis.tracing.component_information`.
    """
    from analysis import tracing
    from analysis.config import get_profile
    from analysis.data import lm_tokens

    profile = get_profile(profile_name)
    cfg = tracing.trace_config_for(profile)
    known, _ = tracing.known_facts(model, cfg.n_screen, cache=cache)
    exact = known.select(range(min(cfg.n_exact, len(known))))
    noise = tracing.noise_scale(model, lm_tokens(model.tokenizer, "eval", n_tokens=cfg.noise_tokens),
                                factor=cfg.noise_factor)
    info = tracing.component_information(model, exact, n_samples=cfg.n_samples, noise=noise, seed=cfg.seed,
                                         max_rows=cfg.max_rows, cache=cache)
    # info.components is (hook_attn_out, hook_mlp_out), the order of KINDS
    return ComponentScores("causal tracing", info.scores.double())


def rank_correlations(scores: Sequence[ComponentScores], by_kind: bool = True):
    """Spearman correlations between scores: a table per kind (and pooled when ``by_kind=False``)."""
    import pandas as pd
    from scipy.stats import spearmanr

    names = [s.name for s in scores]
    groups = {kind: [s.values[:, k] for s in scores] for k, kind in enumerate(KINDS)} if by_kind else {
        "all": [s.flat() for s in scores]}
    out = {}
    for g, vals in groups.items():
        m = torch.tensor([[spearmanr(a.numpy(), b.numpy()).statistic for b in vals] for a in vals])
        out[g] = pd.DataFrame(m.numpy(), index=names, columns=names)
    return out
