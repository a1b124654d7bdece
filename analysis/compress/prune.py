"""Unstructured magnitude pruning: zero the smallest weights.

The simplest compression keeps a weight's largest entries and zeroes the rest (Han et al.
2015, "Learning both Weights and Connections"); with no retraining it is the baseline every
structured or data-aware method is measured against. A pruned matrix is stored as a bitmask
(1 bit per entry) plus its non-zero values, or densely when that is smaller
(:attr:`analysis.compress.plan.Stored.bits`), so pruning a quarter of a 16-bit matrix saves
less than a quarter of its bits.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from analysis.compress.plan import Calibration, Stored, check_fraction


@dataclass(frozen=True)
class Prune:
    """Unstructured magnitude pruning: zero the ``fraction`` of entries with smallest ``|w|``.

    Exactly ``round(fraction * numel)`` entries are zeroed (ties broken by position).
    """

    fraction: float
    data_free: ClassVar[bool] = True

    def __post_init__(self):
        check_fraction(self.fraction, "Prune fraction")

    def __call__(self, stored: Stored, *, name: str = "", calibration: Calibration | None = None) -> Stored:
        w = stored.weight
        k = int(round(self.fraction * w.numel()))
        if k == 0:
            return stored
        mag = w.detach().abs().flatten()
        keep, t, n_less = _keep_above_kth(mag, k, name)
        if w.numel() - int(torch.count_nonzero(keep)) > k:  # ties at t: zero the first (k - n_less), keep the rest
            ties = (mag == t).nonzero().flatten()
            keep[ties[k - n_less :]] = True
        keep = keep.view_as(w)
        if stored.mask is not None:
            keep &= stored.mask
        return dataclasses.replace(stored, weight=torch.where(keep, w, 0.0), mask=keep)


_KTH: dict[tuple, Tensor] = {}


def _keep_above_kth(mag: Float[Tensor, " n"], k: int, name: str = "") -> tuple[Bool[Tensor, " n"], Tensor, int]:
    """``(mag > t, t, #(mag < t))`` for ``t`` the k-th smallest value of ``mag``.

    A sweep prunes the same weights at the same few fractions over and over, so ``t`` is
    remembered per (weight name, size, k, a strided checksum) as a hint, used only after
    checking ``#(mag < t) < k <= #(mag <= t)``, which holds exactly for the k-th value; the
    selection itself (O(n)) runs only when the hint is missing or wrong.
    """
    key = (name, mag.numel(), k, float(mag[::97].sum()))
    t = _KTH.get(key)
    if t is not None:
        keep = mag > t
        n_less = int(torch.count_nonzero(mag < t))
        if n_less < k <= mag.numel() - int(torch.count_nonzero(keep)):
            return keep, t, n_less
    t = mag.kthvalue(k).values
    if len(_KTH) > 100_000:
        _KTH.clear()
    _KTH[key] = t
    return mag > t, t, int(torch.count_nonzero(mag < t))
