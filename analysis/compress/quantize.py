"""Uniform post-training quantization: round each weight to one of ``2^bits`` levels.

Round-to-nearest on a uniform grid is the baseline of post-training quantization (Jacob et al.
2018; Nagel et al. 2021, "A White Paper on Neural Network Quantization"). A group of weights
(the whole tensor, or one output channel) shares a scale ``s``: a symmetric grid holds
``s * q`` for integers ``q`` in ``[-2^(b-1), 2^(b-1) - 1]``, an asymmetric one ``s * (q - z)``
for ``q`` in ``[0, 2^b - 1]`` with a zero-point ``z`` chosen so the grid spans ``[min w, max w]``.
A real format stores the integers at ``bits`` bits each plus, per group, the scale as an fp16
number (:data:`analysis.compress.plan.SCALE_BITS`) and, if asymmetric, the zero-point at
``bits`` bits; :class:`Quantize` counts exactly that.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from analysis.compress.plan import SCALE_BITS, Calibration, Stored


@dataclass(frozen=True)
class Quantize:
    """Uniform round-to-nearest post-training quantization to ``bits`` bits.

    ``granularity``: one scale for the tensor, or one per output channel (column of the
    linear view). ``symmetric``: levels ``s * q`` with ``q`` in ``[-2^(b-1), 2^(b-1) - 1]`` and
    ``s = max|w| / (2^(b-1) - 1)``; asymmetric: levels ``s * (q - z)`` with ``q`` in
    ``[0, 2^b - 1]`` spanning ``[min w, max w]``. Either way there are at most ``2^bits``
    distinct values per group. Pruned entries stay exactly zero.
    """

    bits: int
    granularity: Literal["tensor", "channel"] = "channel"
    symmetric: bool = True
    data_free: ClassVar[bool] = True

    def __post_init__(self):
        if not isinstance(self.bits, int) or not 1 <= self.bits <= 32:
            raise ValueError(f"Quantize bits must be an integer in [1, 32], got {self.bits!r}.")
        if self.symmetric and self.bits < 2:
            raise ValueError("Symmetric 1-bit quantization has no levels besides zero; use symmetric=False for 1 bit.")
        if self.granularity not in ("tensor", "channel"):
            raise ValueError(f"granularity must be 'tensor' or 'channel', got {self.granularity!r}.")

    def __call__(self, stored: Stored, *, name: str = "", calibration: Calibration | None = None) -> Stored:
        # float32 represents every level of up to 16 bits exactly enough; wider grids need float64
        w = stored.weight.detach().to(torch.float64 if self.bits > 16 else torch.float32)
        channel = self.granularity == "channel"
        groups = w.shape[1] if channel else 1
        lo, hi = torch.aminmax(w, dim=0, keepdim=True) if channel else w.aminmax()  # per group
        if self.symmetric:
            qmax = 2 ** (self.bits - 1) - 1
            scale = (torch.maximum(-lo, hi) / qmax).clamp(min=1e-30)  # max |w| without an |w| copy
            out = (w / scale).round_().clamp_(-qmax - 1, qmax).mul_(scale)  # in place: one buffer
            overhead = groups * SCALE_BITS
        else:
            qmax = 2**self.bits - 1
            scale = ((hi - lo) / qmax).clamp(min=1e-30)
            zero = (-lo / scale).round()
            out = (w / scale).round_().add_(zero).clamp_(0, qmax).sub_(zero).mul_(scale)
            overhead = groups * (SCALE_BITS + self.bits)
        if stored.mask is not None and not self.symmetric:  # symmetric grids map 0 to exactly 0
            out.masked_fill_(~stored.mask, 0.0)
        return dataclasses.replace(
            stored,
            weight=out.to(stored.weight.dtype),
            value_bits=self.bits,
            overhead_bits=stored.overhead_bits + overhead,
        )
