"""How linear is a transformer block? Least-squares maps between hidden states, fitted from streams.

A pre-LN block computes ``y = x + f(x)``. Three numbers say how well one linear (affine) map
stands in for it on the same tokens:

- the **linearity score** of Razzhigaev et al. 2024 ("Your Transformer is Secretly Linear"):
  centre ``X`` and ``Y`` (``[n_tokens, d]``), divide each by its Frobenius norm, fit ``Y ~ X A``
  by least squares and report ``1 - ||X A - Y||_F^2``. After centring and normalising, this is
  exactly the *in-sample* pooled R² of an affine fit, ``1 - SSE / SST``: the fit uses the same
  tokens it is scored on. "With the residual" fits ``y``; "without" fits the update ``y - x``
  (their ``procrustes_similarity_centered``), whose variance the identity no longer explains;
- the **held-out R²** of the same affine map fitted on calibration tokens and scored on others;
- that held-out R² when the block's input comes from an upstream whose earlier blocks were already
  replaced by their maps (the input distribution the map meets once it is deployed).

Fits never hold all activations: :class:`GramStats` accumulates ``sum x``, ``sum y``, ``X^T X``,
``X^T Y`` and ``Y^T Y`` batch by batch (shifted and multiplied in float64, the shift taken from the
first batch so the centred moments do not cancel), and :func:`fit_map` solves the normal equations
from them. A system that is singular, or too ill-conditioned to factor (fewer tokens than
dimensions, dead dimensions), is regularized by a ridge ``lam * mean(diag(Cxx))`` with the first
``lam`` of :data:`RIDGE_LADDER` that works, and the fit reports the ``ridge`` it used.
:func:`reduced_rank` gives the best rank-``r`` map of the same data (reduced-rank regression).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

RIDGE_LADDER = (0.0, 1e-8, 1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
"""Ridges tried in turn (relative to the mean variance of the input) until ``Cxx + ridge`` factors."""

MIN_TOKENS_PER_DIM = 35
"""Calibration tokens per input dimension the issue asks of a held-out map fit (d_model + 1 unknowns per output)."""


@dataclass
class GramStats:
    """Streamed first and second moments of paired states ``x`` ``[n, d_x]`` and ``y`` ``[n, d_y]``."""

    n: int = 0
    shift_x: Tensor | None = None
    shift_y: Tensor | None = None
    sx: Tensor | None = None
    sy: Tensor | None = None
    xx: Tensor | None = None
    xy: Tensor | None = None
    yy: Tensor | None = None

    def add(self, x: Float[Tensor, "n d_x"], y: Float[Tensor, "n d_y"]) -> "GramStats":
        """Accumulate one batch of token pairs (rows); returns self."""
        x, y = x.reshape(-1, x.shape[-1]).detach(), y.reshape(-1, y.shape[-1]).detach()
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} tokens but y has {y.shape[0]}; pass paired rows.")
        if x.shape[0] == 0:
            return self
        if self.shift_x is None:
            self.shift_x, self.shift_y = x.double().mean(0).cpu(), y.double().mean(0).cpu()
            dx, dy = x.shape[1], y.shape[1]
            self.sx, self.sy = torch.zeros(dx, dtype=torch.float64), torch.zeros(dy, dtype=torch.float64)
            self.xx = torch.zeros(dx, dx, dtype=torch.float64)
            self.xy = torch.zeros(dx, dy, dtype=torch.float64)
            self.yy = torch.zeros(dy, dy, dtype=torch.float64)
        # shifted and multiplied in float64 (a float32 product leaves an exactly affine map at R² 1 + 2e-9)
        xs = x.double() - self.shift_x.to(x.device)
        ys = y.double() - self.shift_y.to(y.device)
        self.n += x.shape[0]
        self.sx += xs.sum(0).cpu()
        self.sy += ys.sum(0).cpu()
        self.xx += (xs.T @ xs).cpu()
        self.xy += (xs.T @ ys).cpu()
        self.yy += (ys.T @ ys).cpu()
        return self

    def __sub__(self, other: "GramStats") -> "GramStats":
        """The statistics of these tokens less ``other``'s, a subset of them accumulated with the same
        shifts (e.g. the first position of every window, to leave the attention sink out)."""
        if other.n == 0:
            return self
        if self.shift_x is None or not (
            torch.equal(self.shift_x, other.shift_x) and torch.equal(self.shift_y, other.shift_y)
        ):
            raise ValueError("Only statistics accumulated with the same shifts can be subtracted.")
        return GramStats(
            self.n - other.n,
            self.shift_x,
            self.shift_y,
            self.sx - other.sx,
            self.sy - other.sy,
            self.xx - other.xx,
            self.xy - other.xy,
            self.yy - other.yy,
        )

    def moments(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``(mean_x, mean_y, Cxx, Cxy, Cyy)``: means and (biased) covariances, float64."""
        if self.n == 0:
            raise ValueError("No tokens were accumulated; pass a non-empty calibration set (n_tokens > 0).")
        mx, my = self.sx / self.n, self.sy / self.n
        cxx = self.xx / self.n - torch.outer(mx, mx)
        cxy = self.xy / self.n - torch.outer(mx, my)
        cyy = self.yy / self.n - torch.outer(my, my)
        return mx + self.shift_x, my + self.shift_y, cxx, cxy, cyy

    def update_stats(self) -> "GramStats":
        """The statistics of ``(x, y - x)`` derived from these (``y`` and ``x`` of equal width)."""
        if self.n == 0:
            raise ValueError("No tokens were accumulated; pass a non-empty calibration set (n_tokens > 0).")
        xy_t = self.xy.T
        return GramStats(
            n=self.n,
            shift_x=self.shift_x,
            shift_y=self.shift_y - self.shift_x,
            sx=self.sx,
            sy=self.sy - self.sx,
            xx=self.xx,
            xy=self.xy - self.xx,
            yy=self.yy - self.xy - xy_t + self.xx,
        )


@dataclass(frozen=True)
class LinearMap:
    """An affine map ``y = x @ weight + bias`` (``weight`` ``[d_x, d_y]``), float64, with its fit's facts."""

    weight: Tensor
    bias: Tensor
    ridge: float
    """Absolute ridge added to ``Cxx``'s diagonal (0: plain least squares)."""
    n_tokens: int

    def __call__(self, x: Float[Tensor, "... d_x"]) -> Float[Tensor, "... d_y"]:
        w, b = self.weight.to(x.device, torch.float64), self.bias.to(x.device, torch.float64)
        return (x.double() @ w + b).to(x.dtype)


def solve_ridge(cxx: Tensor, cxy: Tensor, ridge: float | str = "auto") -> tuple[Tensor, float]:
    """``(Cxx + ridge I)^{-1} Cxy`` and the absolute ridge used; ``"auto"`` climbs :data:`RIDGE_LADDER`."""
    d = cxx.shape[0]
    scale = float(cxx.diagonal().mean().clamp(min=1e-30))
    if ridge != "auto":
        lam = float(ridge)
        if lam < 0:
            raise ValueError(f"ridge must be >= 0 or 'auto', got {ridge}.")
        chol, info = torch.linalg.cholesky_ex(cxx + lam * torch.eye(d, dtype=cxx.dtype))
        if info != 0 or _ill_conditioned(chol):
            raise ValueError(
                f"The least-squares system is singular or ill-conditioned (d = {d}) with ridge {lam:g}; "
                "pass ridge='auto' (or a positive ridge) to regularize it, or use more calibration tokens."
            )
        return torch.cholesky_solve(cxy, chol), lam
    for rel in RIDGE_LADDER:
        lam = rel * scale
        chol, info = torch.linalg.cholesky_ex(cxx + lam * torch.eye(d, dtype=cxx.dtype))
        if info == 0 and not _ill_conditioned(chol):
            return torch.cholesky_solve(cxy, chol), lam
    raise ValueError("Could not regularize the least-squares system; are the inputs finite?")


def _ill_conditioned(chol: Tensor, limit: float = 1e12) -> bool:
    """Condition number of ``L L^T`` above ``limit`` (estimated from the Cholesky diagonal)."""
    diag = chol.diagonal().abs()
    return bool(diag.min() <= 0 or (diag.max() / diag.min()) ** 2 > limit)


def fit_map(stats: GramStats, ridge: float | str = "auto") -> LinearMap:
    """The least-squares affine map from ``x`` to ``y`` for the accumulated tokens (see module docs)."""
    mx, my, cxx, cxy, _ = stats.moments()
    weight, lam = solve_ridge(cxx, cxy, ridge)
    return LinearMap(weight, my - mx @ weight, lam, stats.n)


def reduced_rank(stats: GramStats, rank: int, ridge: float | str = "auto") -> LinearMap:
    """The best rank-``rank`` affine map (reduced-rank regression: the full map projected onto the top
    ``rank`` principal directions of its fitted values). Its ``weight`` is ``A @ B``; see :func:`factors`."""
    d_x, d_y = stats.xx.shape[0] if stats.xx is not None else 0, stats.yy.shape[0] if stats.yy is not None else 0
    check_rank(rank, min(d_x, d_y))
    full = fit_map(stats, ridge)
    mx, my, cxx, _, _ = stats.moments()
    v = top_eigvecs(full.weight.T @ cxx @ full.weight, rank)  # [d_y, rank]
    weight = full.weight @ v @ v.T
    return LinearMap(weight, my - mx @ weight, full.ridge, stats.n)


def factors(m: LinearMap, rank: int) -> tuple[Tensor, Tensor]:
    """``A`` ``[d_x, rank]`` and ``B`` ``[rank, d_y]`` with ``A @ B`` the best rank-``rank`` part of ``m.weight``."""
    u, s, vh = torch.linalg.svd(m.weight, full_matrices=False)
    return u[:, :rank] * s[:rank], vh[:rank]


def check_rank(rank: int, d: int) -> None:
    """ValueError unless ``1 <= rank <= d``."""
    if not isinstance(rank, int) or not 1 <= rank <= d:
        raise ValueError(f"rank must be an integer in [1, {d}] (the dimension), got {rank!r}.")


def top_eigvecs(sym: Tensor, k: int) -> Tensor:
    """The ``k`` eigenvectors of a symmetric matrix with the largest eigenvalues, ``[d, k]``, largest first."""
    vals, vecs = torch.linalg.eigh(sym)
    return vecs[:, torch.argsort(vals, descending=True)[:k]]


def r2_from_stats(m: LinearMap, stats: GramStats) -> float:
    """Pooled ``1 - SSE / SST`` of map ``m`` on the tokens behind ``stats`` (SST about their own mean)."""
    mx, my, cxx, cxy, cyy = stats.moments()
    w, b = m.weight, m.bias
    resid_mean = mx @ w + b - my  # mean error
    sse = torch.trace(cyy) - 2 * torch.trace(w.T @ cxy) + torch.trace(w.T @ cxx @ w) + resid_mean @ resid_mean
    return float(1 - sse / torch.trace(cyy))


def linearity_score(x: Float[Tensor, "n d"], y: Float[Tensor, "n d"], residual: bool = True) -> float:
    """Razzhigaev et al.'s linearity score of ``y`` on ``x`` (``residual=False``: of ``y - x``), in-sample.

    Equals ``llm_microscope.procrustes_similarity(x, y)`` (and, for ``residual=False``, that of
    ``(x, y - x)``) wherever their pseudo-inverse is well defined; computed by ``torch.linalg.lstsq``.
    """
    x, y = x.reshape(-1, x.shape[-1]).double(), y.reshape(-1, y.shape[-1]).double()
    if x.shape[0] < 2:
        raise ValueError(f"The linearity score needs at least 2 tokens, got {x.shape[0]}.")
    if not residual:
        y = y - x
    xc, yc = x - x.mean(0), y - y.mean(0)
    xc, yc = xc / xc.norm(), yc / yc.norm()
    a = torch.linalg.lstsq(xc, yc, driver="gelsd").solution
    return float(1 - (xc @ a - yc).square().sum())


def score_from_stats(stats: GramStats, eig: tuple[Tensor, Tensor] | None = None) -> float:
    """:func:`linearity_score` from streamed statistics: the in-sample R² of the least-squares map
    (minimum-norm, so a rank-deficient ``Cxx`` is handled as ``lstsq`` handles it). ``eig``: the
    eigendecomposition ``(values, vectors)`` of ``Cxx`` if already computed (e.g. for a PCA)."""
    _, _, cxx, cxy, cyy = stats.moments()
    vals, vecs = torch.linalg.eigh(cxx) if eig is None else eig
    keep = vals > 1e-10 * vals.max()
    proj = vecs[:, keep].T @ cxy  # [k, d_y]
    explained = (proj.square() / vals[keep, None]).sum()  # tr(Cyx Cxx^+ Cxy)
    return float(1 - (torch.trace(cyy) - explained) / torch.trace(cyy))
