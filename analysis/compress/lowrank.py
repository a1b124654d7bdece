"""Low-rank factorization: SVD, FWSVD, ASVD and SVD-LLM.

Low-rank factorization replaces a weight ``W`` (``[d_in, d_out]`` in the linear view) by two
factors ``A`` ``[d_in, r]`` and ``B`` ``[r, d_out]``, so that the layer computes ``(x @ A) @ B``
and stores ``r * (d_in + d_out)`` values instead of ``d_in * d_out``. A *compression ratio* is
the fraction of the weight's parameters removed; the rank it allows is the largest ``r`` with
``r * (d_in + d_out) <= (1 - ratio) * d_in * d_out`` (:func:`rank_for_ratio`). Because the
factors of a full-rank matrix cost more than the matrix, even 5 % fewer parameters means a rank
far below full: for SmolLM2's 576 x 1536 MLP matrices, ratio 0.05 keeps rank 398 of 576.
Ratio 0 leaves the weight dense and untouched.

Four ways to choose the factors, all "truncate an SVD of a rescaled W, then undo the scaling":

- **SVD**: truncate ``W = U S V^T`` to its top ``r`` singular triplets; by Eckart-Young this
  minimises ``||W - A B||_F`` (the error is the root of the sum of the discarded ``s_i^2``).
- **FWSVD** (Hsu et al. 2022): weight each *output* channel (a row of PyTorch's [out, in]
  weight, a column of our linear view) by the root of its summed Fisher information. This is
  the seed's statement of Hsu et al.: for ``W`` in ``R^{I x J}``, ``J~ = diag(J_W 1)`` with
  ``1`` in ``R^J``, i.e. one weight per *row*, summed over the row, and ``W^ = J~ W``; in the
  PyTorch ``nn.Linear`` layout both papers work in, a row is an output neuron. (The seed group's
  later code, s-nlp/lora_fwsvd ``llama_comp/utils_svd.py`` lines 70-71 and 78, weights both
  sides, ``diag(sqrt(F.sum(1))) W diag(sqrt(F.sum(0)))``; its line 27 weights input channels only.
  Hsu et al.'s own code was not available here to check.) Weight by weight,
  ``d_j = sqrt(sum_i E[(dL/dW_ij)^2])`` from squared gradients on calibration text, truncate
  the SVD of ``W diag(d)`` and divide ``d`` back out; this minimises ``||(W - A B) diag(d)||_F``.
- **ASVD** (Yuan et al. 2023): scale each *input* channel by its mean absolute activation to
  the power ``alpha = 0.5``, ``s_i = mean|x_i|^alpha``, truncate the SVD of ``diag(s) W`` and
  undo the scaling on the left factor, so channels with large activations (outliers) are
  approximated more faithfully. ASVD as its authors define it also *allocates rank per layer*
  by a sensitivity search (:func:`truncation_sensitivity`, :func:`allocate_ranks`): each unit is
  truncated alone to several kept fractions, the calibration perplexity of each truncation is
  measured, and a binary search over the candidates sorted by perplexity picks the least harmful
  set that fits the size budget. :class:`ASVD` at one ratio for every matrix is the *uniform-rank*
  variant.
- **SVD-LLM** (Wang et al. 2024): truncation-aware whitening. With ``X^T X = L L^T``
  (Cholesky), ``||X (W - W')||_F = ||L^T (W - W')||_F``, so truncating the SVD of ``L^T W`` and
  mapping back with ``L^{-T}`` gives the rank-``r`` matrix with the *least output error on the
  calibration activations*; each discarded singular value is exactly the loss it causes.

The statistics the data-aware methods read (:data:`STATS_NEEDED`) come from
:func:`analysis.compress.calibration.calibration_stats`. Whitening runs in float64 (``X^T X``
squares the condition number of ``X``); the other SVDs run in float32, which reproduces float64
factors to about 1e-6 relative here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedEncoder, HookedTransformer

from analysis.cache import tensors_hash
from analysis.components import component, parameter_name, weights_of
from analysis.compress.linear import to_linear
from analysis.compress.plan import Calibration, CompressionPlan, Stored, check_fraction
from analysis.hooks import input_hook
from analysis.progress import progress

FACTOR_METHODS = ("svd", "fwsvd", "asvd", "svdllm")
"""Factorization methods by name (see :func:`factorization`)."""

FACTOR_EPS = 1e-6
"""Floor, relative to the largest, for FWSVD and ASVD channel scales: a channel with zero
Fisher information or zero activation is weighted ``FACTOR_EPS * max`` instead of 0, so the
scaling stays invertible and the factors finite."""

WHITEN_DAMPING = (0.0, 1e-8, 1e-6, 1e-4, 1e-2, 1e-1, 1.0)
"""SVD-LLM's regularization ladder: when ``X^T X`` is not positive definite, ``lam * mean(diag)
* I`` is added with the first ``lam`` of this ladder for which the Cholesky factorization
succeeds (:func:`whitening_factor` returns it). An all-zero ``X^T X`` (a weight that no
calibration token reached) thereby becomes the identity, i.e. plain SVD."""

Decomposition = tuple[Float[Tensor, "d_in k"], Float[Tensor, " k"], Float[Tensor, "k d_out"]]
"""``(left, s, right)`` with ``W ~ left[:, :r] diag(s[:r]) right[:r]`` for every rank ``r <= k``."""


def rank_for_ratio(d_in: int, d_out: int, ratio: float) -> int:
    """Largest rank ``r`` whose factors, ``r * (d_in + d_out)`` values, keep ``(1 - ratio)`` of ``d_in * d_out``."""
    check_fraction(ratio, "Factorization ratio")
    return int(((1.0 - float(ratio)) * d_in * d_out + 1e-6) // (d_in + d_out))  # 1e-6: float slack


def factor_params(d_in: int, d_out: int, rank: int) -> int:
    """Values stored by rank-``rank`` factors of a ``[d_in, d_out]`` matrix."""
    return rank * (d_in + d_out)


@dataclass(frozen=True)
class SVD:
    """Truncated SVD to the rank that removes ``ratio`` of the weight's parameters (or to ``rank``).

    The ``cache`` dict (optional, shared between operations of one sweep) keeps each weight's
    full decomposition, keyed by the method, the weight's name and content hash and the
    calibration statistics' identities, so a sweep over ratios decomposes every matrix once per method.
    """

    ratio: float = 0.0
    rank: int | None = None
    cache: dict | None = field(default=None, compare=False, repr=False)
    method = "svd"

    def __post_init__(self):
        check_fraction(self.ratio, "Factorization ratio")
        if self.rank is not None and (not isinstance(self.rank, int) or self.rank < 1):
            raise ValueError(f"rank must be a positive integer, got {self.rank!r}.")

    def target_rank(self, d_in: int, d_out: int) -> int | None:
        """The rank to keep, or ``None`` to leave the weight dense (ratio 0 and no rank)."""
        if self.rank is not None:
            if self.rank > min(d_in, d_out):
                raise ValueError(
                    f"rank {self.rank} is larger than a [{d_in}, {d_out}] matrix allows (at most {min(d_in, d_out)})."
                )
            return self.rank
        if self.ratio == 0:
            return None
        r = rank_for_ratio(d_in, d_out, self.ratio)
        if r < 1:
            raise ValueError(f"ratio {self.ratio} leaves no rank for a [{d_in}, {d_out}] matrix.")
        return min(r, min(d_in, d_out))

    def _key(self) -> tuple:
        return (self.method,)

    def decompose(self, w: Float[Tensor, "d_in d_out"], name: str, calibration: Calibration | None) -> Decomposition:
        """The full (cacheable) decomposition of ``w``; subclasses rescale before and after the SVD."""
        U, S, Vh = torch.linalg.svd(w.float(), full_matrices=False)
        return U, S, Vh

    def factors(
        self, w: Float[Tensor, "d_in d_out"], rank: int, name: str = "", calibration: Calibration | None = None
    ) -> tuple[Float[Tensor, "d_in rank"], Float[Tensor, "rank d_out"]]:
        """``(A, B)`` with ``W ~ A @ B``, the singular values split evenly (sqrt) between them."""
        dec = None
        if self.cache is not None:
            key = (
                *self._key(),
                name,
                tensors_hash([w]),
                tuple(sorted((k, id(v)) for k, v in (calibration.stats.items() if calibration else ()))),
            )
            dec = self.cache.get(key)
        if dec is None:
            dec = self.decompose(w.detach(), name, calibration)
            if self.cache is not None:
                self.cache[key] = dec
        left, s, right = dec
        root = s[:rank].clamp(min=0).sqrt()
        return left[:, :rank] * root, root[:, None] * right[:rank]

    def __call__(self, stored: Stored, *, name: str = "", calibration: Calibration | None = None) -> Stored:
        w = stored.weight
        d_in, d_out = w.shape
        r = self.target_rank(d_in, d_out)
        if r is None:
            return stored
        A, B = self.factors(w, r, name, calibration)
        out = (A @ B).to(w.dtype)
        if not torch.isfinite(out).all():
            raise FloatingPointError(f"{type(self).__name__} of {name!r} produced non-finite values.")
        return dataclasses.replace(
            stored,
            weight=out,
            n_values=factor_params(d_in, d_out, r),
            mask=None,
            notes=[*stored.notes, f"{self.method} rank {r}"],
        )


def _channel_scale(v: Float[Tensor, " channel"], what: str) -> Float[Tensor, " channel"]:
    """``v`` in float64 with every entry at least ``FACTOR_EPS * max(v)``."""
    v = v.detach().double()
    if not torch.isfinite(v).all() or float(v.max()) <= 0:
        raise ValueError(f"{what} is zero or not finite everywhere; the calibration data gave no signal.")
    return v.clamp(min=FACTOR_EPS * float(v.max()))


@dataclass(frozen=True)
class FWSVD(SVD):
    """Fisher-weighted SVD (Hsu et al. 2022): output channels weighted by root summed Fisher (``grad2:{name}``)."""

    method = "fwsvd"

    def decompose(self, w: Float[Tensor, "d_in d_out"], name: str, calibration: Calibration | None) -> Decomposition:
        ctx = calibration or Calibration()
        d = _channel_scale(ctx.require(f"grad2:{name}", "FWSVD"), f"FWSVD Fisher for {name!r}").sqrt().float()
        U, S, Vh = torch.linalg.svd(w.float() * d, full_matrices=False)
        return U, S, Vh / d


@dataclass(frozen=True)
class ASVD(SVD):
    """Activation-aware SVD (Yuan et al. 2023): input channels scaled by ``mean|x|^alpha`` (``absmean:{hook}``)."""

    alpha: float = 0.5
    method = "asvd"

    def _key(self) -> tuple:
        return (self.method, self.alpha)

    def decompose(self, w: Float[Tensor, "d_in d_out"], name: str, calibration: Calibration | None) -> Decomposition:
        ctx = calibration or Calibration()
        hook = input_hook(name, ctx.model)
        s = _channel_scale(ctx.require(f"absmean:{hook}", "ASVD"), f"ASVD activations at {hook!r}")
        s = s.pow(self.alpha).float()
        U, S, Vh = torch.linalg.svd(s[:, None] * w.float(), full_matrices=False)
        return U / s[:, None], S, Vh


def whitening_factor(xtx: Float[Tensor, "d_in d_in"]) -> tuple[Float[Tensor, "d_in d_in"], float]:
    """Lower Cholesky factor ``L`` of ``X^T X`` (float64), regularized per :data:`WHITEN_DAMPING`; and the ``lam`` used."""
    xtx = xtx.detach().double()
    if not torch.isfinite(xtx).all():
        raise ValueError("X^T X is not finite; cannot whiten.")
    xtx = (xtx + xtx.T) / 2
    scale = float(xtx.diagonal().mean())
    scale = scale if scale > 0 else 1.0
    eye = torch.eye(len(xtx), dtype=xtx.dtype, device=xtx.device)
    for lam in WHITEN_DAMPING:
        L, info = torch.linalg.cholesky_ex(xtx + lam * scale * eye)
        if int(info) == 0 and torch.isfinite(L).all() and float(L.diagonal().min()) > 0:
            return L, lam
    raise ValueError("X^T X could not be made positive definite even with damping 1.0 x mean(diag).")


@dataclass(frozen=True)
class SVDLLM(SVD):
    """SVD-LLM (Wang et al. 2024): truncate the SVD of ``L^T W`` where ``L L^T = X^T X`` (``xtx:{hook}``)."""

    method = "svdllm"

    def decompose(self, w: Float[Tensor, "d_in d_out"], name: str, calibration: Calibration | None) -> Decomposition:
        ctx = calibration or Calibration()
        hook = input_hook(name, ctx.model)
        L, _ = whitening_factor(ctx.require(f"xtx:{hook}", "SVD-LLM"))
        U, S, Vh = torch.linalg.svd(L.T @ w.double(), full_matrices=False)
        left = torch.linalg.solve_triangular(L.T, U, upper=True)  # L^{-T} U
        return left.float(), S.float(), Vh.float()


FACTORIZATIONS: dict[str, type[SVD]] = {"svd": SVD, "fwsvd": FWSVD, "asvd": ASVD, "svdllm": SVDLLM}
"""Factorization operations by method name."""

STATS_NEEDED: dict[str, tuple[str, ...]] = {"svd": (), "fwsvd": ("grad2",), "asvd": ("absmean",), "svdllm": ("xtx",)}
"""The calibration statistics each method reads."""


def factorization(method: str, ratio: float = 0.0, **kw) -> SVD:
    """The factorization operation called ``method`` (one of :data:`FACTOR_METHODS`) at ``ratio``."""
    if method not in FACTORIZATIONS:
        raise ValueError(f"Unknown factorization method {method!r}; choose one of {FACTOR_METHODS}.")
    return FACTORIZATIONS[method](ratio=ratio, **kw)


def mlp_weights(model: HookedTransformer | HookedEncoder, layers: Sequence[int] | None = None) -> list[str]:
    """Every MLP weight (``W_in``, ``W_gate``, ``W_out``; BERT: intermediate and output) of ``layers``."""
    layers = range(model.cfg.n_layers) if layers is None else layers
    return [w for l in layers for w in weights_of(model, component(l, "mlp"))]


def factorization_plan(
    model: HookedTransformer | HookedEncoder,
    method: str,
    ratio: float | Mapping[int, float],
    calibration: Calibration | None = None,
    cache: dict | None = None,
    **kw,
) -> CompressionPlan:
    """Factorize every MLP at one ``ratio``, or per layer from ``{layer: ratio}`` (layers left out stay dense)."""
    per_layer = dict(ratio) if isinstance(ratio, Mapping) else {l: ratio for l in range(model.cfg.n_layers)}
    ops = {component(l, "mlp"): [factorization(method, r, cache=cache, **kw)] for l, r in sorted(per_layer.items())}
    return CompressionPlan(ops, calibration=calibration or Calibration(model=model))


# --------------------------------------------------------------------------------------
# ASVD's sensitivity-based truncation rank search (Yuan et al. 2023, Sec. 3.3)
# --------------------------------------------------------------------------------------

SENSITIVITY_KEEP = (0.5, 0.65, 0.8, 0.95)
"""Candidate fractions of a unit's parameters *kept* (ASVD's "param_ratio"; its repository uses
0.4-0.9 for a 7B model, ``sensitivity.py``). 0.95 lets the search reach our mildest ratio (5 %)."""


def mlp_units(
    model: HookedTransformer | HookedEncoder, layers: Sequence[int] | None = None, by: str = "layer"
) -> dict[str, list[str]]:
    """The units a sensitivity search sizes as one: each layer's MLP (``by="layer"``) or each MLP matrix (``"weight"``)."""
    if by not in ("layer", "weight"):
        raise ValueError(f"Unknown sensitivity unit {by!r}; use 'layer' or 'weight'.")
    layers = range(model.cfg.n_layers) if layers is None else layers
    if by == "weight":
        return {w: [w] for w in mlp_weights(model, layers)}
    return {component(l, "mlp"): weights_of(model, component(l, "mlp")) for l in layers}


def weight_shapes(model: HookedTransformer | HookedEncoder, weights: Sequence[str]) -> dict[str, tuple[int, int]]:
    """``{weight: (d_in, d_out)}`` of each weight's linear view."""
    params = dict(model.named_parameters())
    return {w: tuple(to_linear(w, params[parameter_name(model, w, params)]).shape) for w in weights}


def unit_values(shapes: Mapping[str, tuple[int, int]], removed: float) -> int:
    """Values the weights of one unit store when each is factorized to remove ``removed`` (0: dense)."""
    total = 0
    for d_in, d_out in shapes.values():
        total += (
            d_in * d_out if removed == 0 else factor_params(d_in, d_out, max(1, rank_for_ratio(d_in, d_out, removed)))
        )
    return total


def allocation_removed(shapes: Mapping[str, Mapping[str, tuple[int, int]]], allocation: Mapping[str, float]) -> float:
    """Share of all units' parameters an allocation ``{unit: fraction removed}`` removes; units it
    leaves out, or at 0, stay dense and count in the whole. ``shapes``: ``{unit: {weight: (d_in, d_out)}}``."""
    whole = sum(unit_values(s, 0.0) for s in shapes.values())
    return 1 - sum(unit_values(s, allocation.get(u, 0.0)) for u, s in shapes.items()) / whole


@torch.inference_mode()
def _mean_loss(model, tokens: Tensor, batch_size: int) -> float:
    device = next(model.parameters()).device
    losses = [
        float(model(tokens[i : i + batch_size].to(device), return_type="loss")) * len(tokens[i : i + batch_size])
        for i in range(0, len(tokens), batch_size)
    ]
    return sum(losses) / len(tokens)


def truncation_sensitivity(
    model: HookedTransformer | HookedEncoder,
    units: Mapping[str, Sequence[str]],
    tokens: Int[Tensor, "batch pos"],
    calibration: Calibration,
    keep: Sequence[float] = SENSITIVITY_KEEP,
    alpha: float = 0.5,
    batch_size: int = 8,
    cache: dict | None = None,
) -> dict[str, dict[float, float]]:
    """ASVD's sensitivity: calibration perplexity with *one* unit ASVD-factorized to keep each fraction of ``keep``.

    ``{unit: {keep: perplexity}}``, every other weight dense. ``tokens``: ``[n, pos]`` calibration
    windows (disjoint from any evaluation text). A decoder only (the loss is next-token).
    """
    if any(not 0 < k < 1 for k in keep):
        raise ValueError(f"keep fractions must lie in (0, 1), got {tuple(keep)}.")
    out: dict[str, dict[float, float]] = {}
    for unit, weights in progress(list(units.items()), desc="ASVD sensitivity"):
        out[unit] = {}
        for k in keep:
            op = ASVD(ratio=1 - k, alpha=alpha, cache=cache)
            with CompressionPlan({w: [op] for w in weights}, calibration=calibration).applied(model):
                out[unit][float(k)] = float(torch.tensor(_mean_loss(model, tokens, batch_size)).exp())
    return out


def allocate_ranks(
    sensitivity: Mapping[str, Mapping[float, float]],
    shapes: Mapping[str, Mapping[str, tuple[int, int]]],
    budget: int,
) -> dict[str, float]:
    """ASVD's truncation rank search: ``{unit: fraction of parameters removed}`` storing at most ``budget`` values.

    As in ASVD's ``binary_search.py``: all ``(unit, keep, perplexity)`` candidates are sorted from
    the most to the least harmful; allowing the candidates from position ``m`` on, each unit takes the
    smallest ``keep`` allowed to it (dense when none is). A binary search finds the largest ``m``
    (the fewest, least harmful truncations) whose total size fits ``budget`` (ASVD stops at the first
    size *above* its target; we stay at or below, so the comparison with a uniform rank is at equal
    or smaller size). ``shapes``: ``{unit: {weight: (d_in, d_out)}}``.
    """
    cands = sorted(
        ((u, float(k), float(p)) for u, ks in sensitivity.items() for k, p in ks.items()), key=lambda c: -c[2]
    )

    def allocation(m: int) -> dict[str, float]:
        keep = {u: 1.0 for u in sensitivity}
        for u, k, _ in cands[m:]:
            keep[u] = min(keep[u], k)
        return {u: 0.0 if k >= 1 else round(1 - k, 10) for u, k in keep.items()}

    def size(alloc: Mapping[str, float]) -> int:
        return sum(unit_values(shapes[u], r) for u, r in alloc.items())

    if size(allocation(0)) > budget:
        raise ValueError(
            f"Even the most compressed candidates store {size(allocation(0))} values, more than the budget "
            f"{budget}; add smaller keep fractions to the sensitivity search."
        )
    lo, hi = 0, len(cands)  # size(allocation(lo)) <= budget throughout
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if size(allocation(mid)) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return allocation(lo)


def allocated_plan(
    model: HookedTransformer | HookedEncoder,
    allocation: Mapping[str, float],
    units: Mapping[str, Sequence[str]],
    calibration: Calibration,
    cache: dict | None = None,
    alpha: float = 0.5,
) -> CompressionPlan:
    """ASVD with per-unit ratios from :func:`allocate_ranks` (units left at 0 stay dense)."""
    ops = {w: [ASVD(ratio=r, alpha=alpha, cache=cache)] for u, r in allocation.items() if r > 0 for w in units[u]}
    return CompressionPlan(ops, calibration=calibration)
