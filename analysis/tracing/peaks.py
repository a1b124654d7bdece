"""Where an average indirect effect peaks, and how sure we can be: a bootstrap over facts.

ROME reads its findings off where the AIE curves peak (which token role, which layer). One
set of facts gives one peak; resampling the facts with replacement
(:meth:`~analysis.tracing.AIEResult.bootstrap_means`) shows how far the peak would move with
other facts of the same kind. :func:`peak_depths` gives a role's peak depth with its percentile
interval; :func:`role_margin` how far the claimed role's peak rises above every other role's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from analysis.tracing.aie import AIEResult
from analysis.tracing.inputs import ROLES


def percentile_interval(x: Tensor) -> tuple[float, float]:
    """The 2.5% and 97.5% percentiles of a bootstrap distribution."""
    lo, hi = torch.quantile(x.double(), torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return lo, hi


@dataclass(frozen=True)
class PeakDepth:
    """Where a role's AIE curve peaks: the depth (layer / (n_layers - 1)) from all facts, the 95%
    percentile interval over bootstrap resamples of the facts, and those resamples ``[n_boot]``."""

    depth: float
    lo: float
    hi: float
    boot: Tensor


@dataclass(frozen=True)
class RoleMargin:
    """How far one role's peak AIE rises above every other traced role's (``others``), from all
    facts, with its 95% percentile interval over bootstrap resamples of the facts."""

    margin: float
    lo: float
    hi: float
    others: tuple[str, ...]


def peak_depths(aie: AIEResult, kind: str, role: str, n_boot: int = 1000, seed: int = 0) -> PeakDepth:
    """Where the ``role`` curve of ``kind`` peaks: its depth from all facts, and the 95% percentile
    interval of the depth over ``n_boot`` bootstrap resamples of the facts."""
    r = ROLES.index(role)
    L = aie.traces[0].n_layers
    depth = lambda m: m.nan_to_num(float("-inf")).argmax(-1).double() / max(1, L - 1)  # noqa: E731
    boot = depth(aie.bootstrap_means(kind, n_boot, seed)[:, r])
    lo, hi = percentile_interval(boot)
    return PeakDepth(float(depth(aie.mean(kind)[r])), lo, hi, boot)


def role_margin(aie: AIEResult, kind: str, role: str, n_boot: int = 1000, seed: int = 0) -> RoleMargin:
    """How far the ``role`` curve's peak AIE rises above every other role's peak (roles at the
    very same positions, e.g. a first subsequent token that is always the last, excluded), from
    all facts and over ``n_boot`` bootstrap resamples of the facts (95% percentile interval)."""
    r = ROLES.index(role)
    full = aie.mean(kind)
    others = [i for i in range(len(ROLES)) if i != r and not torch.allclose(full[i], full[r], equal_nan=True)]
    others = [i for i in others if not full[i].isnan().all()]
    if not others:
        raise ValueError(f"No role other than {role!r} was traced; the peak's role cannot be compared.")

    def margin(m: torch.Tensor) -> torch.Tensor:  # [..., role, layer]
        m = m.nan_to_num(float("-inf"))
        return m[..., r, :].amax(-1) - m[..., others, :].amax(-1).amax(-1)

    boot = margin(aie.bootstrap_means(kind, n_boot, seed))
    lo, hi = percentile_interval(boot)
    return RoleMargin(float(margin(full)), lo, hi, tuple(ROLES[i] for i in others))
