"""Where an average indirect effect peaks, and how sure we can be: a bootstrap over facts or their clusters.

ROME reads its findings off where the AIE curves peak (which token role, which layer). One
set of facts gives one peak; resampling the facts with replacement shows how far the peak would
move with other facts of the same kind. Facts of one relation share a prompt template and often
an answer, so they are not independent: given each fact's ``clusters`` label (its relation), the
bootstrap resamples whole clusters (:func:`bootstrap_means`), and every interval counts clusters.

:func:`peak_depths` gives a role's peak depth with its interval; :func:`role_margin` how far the
claimed role's peak rises above every other role's. Both may be restricted to some ``layers``
(e.g. the windows that leave out layer 0's MLP). The intervals are *expanded* percentile
intervals (:func:`percentile_interval` with ``n``): at the few units these verdicts stand on a
plain percentile interval is too narrow, and widening its tail probability as a t interval on
``n - 1`` degrees of freedom would be (Hesterberg 2015) restores most of the level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Sequence

import torch
from scipy import stats as sps
from torch import Tensor

from analysis.tracing.aie import AIEResult
from analysis.tracing.inputs import ROLES


def percentile_interval(x: Tensor, n: int | None = None, level: float = 0.95) -> tuple[float, float]:
    """The ``level`` percentile interval of a bootstrap distribution ``x``; with the number of
    resampled units ``n``, the expanded percentile interval: tail probability
    ``Φ(-√(n/(n-1)) · t_{n-1, 1-α/2})`` instead of ``α/2``."""
    a = (1 - level) / 2
    if n is not None and n >= 2:
        a = NormalDist().cdf(-math.sqrt(n / (n - 1)) * float(sps.t.ppf(1 - a, n - 1)))
    lo, hi = torch.quantile(x.double(), torch.tensor([a, 1 - a], dtype=torch.float64)).tolist()
    return lo, hi


def n_units(aie: AIEResult, clusters: Sequence | None = None) -> int:
    """The independent units behind an interval: the facts, or their distinct ``clusters``."""
    return aie.n_facts if clusters is None else len(set(clusters))


def bootstrap_means(
    aie: AIEResult, kind: str, n_boot: int = 1000, seed: int = 0, clusters: Sequence | None = None
) -> Tensor:
    """:meth:`AIEResult.mean` over ``n_boot`` resamples ``[boot, role, layer]``: of the facts, or with
    ``clusters`` (one label per traced fact) of whole clusters with replacement. The draws depend
    only on ``seed`` and the units, so two kinds resampled with the same seed are paired."""
    e = aie.effects(kind).double()  # [fact, role, layer]
    labels = list(range(len(e))) if clusters is None else list(clusters)
    if len(labels) != len(e):
        raise ValueError(f"clusters has {len(labels)} labels for {len(e)} traced facts.")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1 (got {n_boot}).")
    names = sorted(set(labels), key=str)
    of = torch.tensor([names.index(x) for x in labels])
    ok = ~e.isnan()
    sums = torch.zeros((len(names),) + e.shape[1:], dtype=torch.float64).index_add_(0, of, e.nan_to_num())
    counts = torch.zeros_like(sums).index_add_(0, of, ok.double())
    gen = torch.Generator().manual_seed(seed)
    draws = torch.randint(0, len(names), (n_boot, len(names)), generator=gen)
    times = torch.zeros(n_boot, len(names), dtype=torch.float64).scatter_add_(
        1, draws, torch.ones_like(draws, dtype=torch.float64)
    )  # how often each cluster is drawn
    flat = sums.reshape(len(names), -1), counts.reshape(len(names), -1)
    means = (times @ flat[0]) / (times @ flat[1])  # NaN where no drawn fact has the role
    return means.reshape((n_boot,) + e.shape[1:]).float()


def _masked(m: Tensor, layers: Sequence[int] | None) -> Tensor:
    """``m [..., layer]`` with NaN as -inf, and -inf outside ``layers``."""
    m = m.nan_to_num(float("-inf"))
    if layers is not None:
        keep = torch.zeros(m.shape[-1], dtype=torch.bool)
        keep[list(layers)] = True
        m = m.masked_fill(~keep, float("-inf"))
    return m


@dataclass(frozen=True)
class PeakDepth:
    """Where a role's AIE curve peaks: the depth (layer / (n_layers - 1)) from all facts, the 95%
    interval over bootstrap resamples of the facts (or clusters), those resamples ``[n_boot]``,
    and the units resampled."""

    depth: float
    lo: float
    hi: float
    boot: Tensor
    n: int = 0


@dataclass(frozen=True)
class RoleMargin:
    """How far one role's peak AIE rises above every other traced role's (``others``), from all
    facts, with its 95% interval over bootstrap resamples of the facts (or clusters)."""

    margin: float
    lo: float
    hi: float
    others: tuple[str, ...]
    n: int = 0


def peak_depths(
    aie: AIEResult,
    kind: str,
    role: str,
    n_boot: int = 1000,
    seed: int = 0,
    clusters: Sequence | None = None,
    layers: Sequence[int] | None = None,
) -> PeakDepth:
    """Where the ``role`` curve of ``kind`` peaks (among ``layers``, default all): its depth from
    all facts, and the 95% expanded percentile interval of the depth over ``n_boot`` resamples of
    the facts (of whole ``clusters`` when given)."""
    r = ROLES.index(role)
    L = aie.traces[0].n_layers
    depth = lambda m: _masked(m, layers).argmax(-1).double() / max(1, L - 1)  # noqa: E731
    boot = depth(bootstrap_means(aie, kind, n_boot, seed, clusters)[:, r])
    n = n_units(aie, clusters)
    lo, hi = percentile_interval(boot, n)
    return PeakDepth(float(depth(aie.mean(kind)[r])), lo, hi, boot, n)


def role_margin(
    aie: AIEResult,
    kind: str,
    role: str,
    n_boot: int = 1000,
    seed: int = 0,
    clusters: Sequence | None = None,
    layers: Sequence[int] | None = None,
) -> RoleMargin:
    """How far the ``role`` curve's peak AIE rises above every other role's peak (roles at the
    very same positions, e.g. a first subsequent token that is always the last, excluded), among
    ``layers`` (default all), from all facts and over ``n_boot`` resamples of the facts (of whole
    ``clusters`` when given; 95% expanded percentile interval)."""
    r = ROLES.index(role)
    full = aie.mean(kind)
    others = [i for i in range(len(ROLES)) if i != r and not torch.allclose(full[i], full[r], equal_nan=True)]
    others = [i for i in others if not full[i].isnan().all()]
    if not others:
        raise ValueError(f"No role other than {role!r} was traced; the peak's role cannot be compared.")

    def margin(m: torch.Tensor) -> torch.Tensor:  # [..., role, layer]
        m = _masked(m, layers)
        return m[..., r, :].amax(-1) - m[..., others, :].amax(-1).amax(-1)

    boot = margin(bootstrap_means(aie, kind, n_boot, seed, clusters))
    n = n_units(aie, clusters)
    lo, hi = percentile_interval(boot, n)
    return RoleMargin(float(margin(full)), lo, hi, tuple(ROLES[i] for i in others), n)


def peak_difference(
    aie: AIEResult,
    a: str,
    b: str,
    role: str,
    n_boot: int = 1000,
    seed: int = 0,
    clusters: Sequence | None = None,
    layers: Sequence[int] | None = None,
) -> tuple[float, float, float, int]:
    """``peak AIE of kind a - peak AIE of kind b`` at ``role`` (peaks among ``layers``), paired over
    the same resamples: ``(estimate, lo, hi, n units)``, 95% expanded percentile interval."""
    r = ROLES.index(role)
    top = lambda m: _masked(m[..., r, :], layers).amax(-1)  # noqa: E731
    boot = top(bootstrap_means(aie, a, n_boot, seed, clusters)) - top(bootstrap_means(aie, b, n_boot, seed, clusters))
    n = n_units(aie, clusters)
    lo, hi = percentile_interval(boot, n)
    return float(top(aie.mean(a)) - top(aie.mean(b))), lo, hi, n
