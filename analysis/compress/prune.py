"""Unstructured magnitude pruning: zero the smallest weights.

The simplest compression keeps a weight's largest entries and zeroes the rest (Han et al.
2015, "Learning both Weights and Connections"); with no retraining it is the baseline every
structured or data-aware method is measured against. A pruned matrix is stored as a bitmask
(1 bit per entry) plus its non-zero values, or densely when that is smaller
(:attr:`analysis.compress.plan.Stored.bits`), so pruning a quarter of a 16-bit matrix saves
less than a quarter of its bits.

:class:`WandaPrune` is the data-aware variant (Sun et al. 2023, "A Simple and Effective Pruning
Approach for Large Language Models"): it scores ``|W_ij| · ||X_i||₂`` (``X_i`` the weight's input
feature ``i`` over calibration tokens) and prunes each output channel separately, as the
reference code's ``prune_wanda`` does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from analysis.compress.plan import Calibration, Stored, check_fraction
from analysis.hooks import input_hook


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


@dataclass(frozen=True)
class WandaPrune:
    """Wanda's unstructured pruning: in every output channel, zero the ``fraction`` of entries with
    the smallest ``|W_ij| · ||X_i||₂``.

    The reference ``prune_wanda`` (github.com/locuslab/wanda) computes ``|W| * sqrt(scaler_row)`` on
    Hugging Face's ``[d_out, d_in]`` weight and zeroes the lowest of each row (a stable sort: ties
    by input index). Our linear view is ``[d_in, d_out]``, so each *column* here is one output
    channel. It zeroes ``round(fraction * d_in)`` entries per column (the reference floors; the two
    agree whenever ``fraction * d_in`` is whole). Needs the calibration statistic
    ``"xnorm:<input hook>"`` ``[d_in]`` (:func:`analysis.compress.calibration.wanda_calibration`).
    """

    fraction: float
    data_free: ClassVar[bool] = False

    def __post_init__(self):
        check_fraction(self.fraction, "WandaPrune fraction")

    def __call__(self, stored: Stored, *, name: str = "", calibration: Calibration | None = None) -> Stored:
        w = stored.weight
        k = int(round(self.fraction * w.shape[0]))
        if k == 0:
            return stored
        if calibration is None:
            raise ValueError(f"WandaPrune on {name!r} needs a calibration (wanda_calibration) with its input norms.")
        key = f"xnorm:{input_hook(name, calibration.model)}"
        norm = calibration.require(key, "WandaPrune (see analysis.compress.calibration.wanda_calibration)")
        if norm.numel() != w.shape[0]:
            raise ValueError(
                f"WandaPrune on {name!r}: {key} has {norm.numel()} features, the weight {w.shape[0]} inputs."
            )
        metric = w.detach().abs() * norm.to(w.device, w.dtype)[:, None]
        lowest = metric.argsort(dim=0, stable=True)[:k]  # [k, d_out]: per output channel
        keep = torch.ones_like(w, dtype=torch.bool).scatter_(0, lowest, False)
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
