"""analysis.compress.quantize: uniform quantization against direct counts and torch's own fake-quantizer."""

from __future__ import annotations

import pytest
import torch

from analysis.compress import SCALE_BITS, Prune, Quantize, Stored


def _stored(w):
    return Stored(w.clone(), 16.0, w.numel())


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("granularity", ["tensor", "channel"])
def test_quantize_levels_and_error(symmetric, granularity):
    w = torch.randn(96, 40, generator=torch.Generator().manual_seed(1))
    errors = []
    for bits in range(2, 9):
        q = Quantize(bits, granularity, symmetric)(_stored(w)).weight
        groups = [q] if granularity == "tensor" else list(q.T)
        assert max(torch.unique(g).numel() for g in groups) <= 2**bits
        errors.append(float((q - w).norm()))
    assert all(b < a for a, b in zip(errors, errors[1:])), errors  # strictly better with every bit


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_asymmetric_quantization_matches_torch_fake_quantize(bits):
    """Independent reference: torch.fake_quantize_per_channel_affine with the same scales."""
    w = torch.randn(50, 30, generator=torch.Generator().manual_seed(2))
    ours = Quantize(bits, "channel", symmetric=False)(_stored(w)).weight
    qmax = 2**bits - 1
    lo, hi = w.double().amin(0), w.double().amax(0)
    scale = (hi - lo) / qmax
    zero = (-lo / scale).round()
    ref = torch.fake_quantize_per_channel_affine(w, scale.float(), zero.int(), 1, 0, qmax)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_overhead_is_one_scale_per_group_and_a_zero_point_if_asymmetric():
    w = torch.randn(12, 10)
    assert Quantize(4, "channel")(_stored(w)).bits == 120 * 4 + 10 * SCALE_BITS
    assert Quantize(4, "tensor", symmetric=False)(_stored(w)).bits == 120 * 4 + SCALE_BITS + 4


def test_quantize_keeps_pruned_entries_zero():
    w = torch.randn(40, 40, generator=torch.Generator().manual_seed(3))
    s = Quantize(3, symmetric=False)(Prune(0.5)(_stored(w)))
    assert (s.weight[~s.mask] == 0).all()


def test_one_bit_asymmetric_has_two_levels():
    w = torch.randn(20, 10)
    q = Quantize(1, symmetric=False)(_stored(w)).weight
    assert max(torch.unique(c).numel() for c in q.T) <= 2


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Quantize(0), r"\[1, 32\]"),
        (lambda: Quantize(33), r"\[1, 32\]"),
        (lambda: Quantize(1), "symmetric=False"),
        (lambda: Quantize(4, "row"), "granularity"),
    ],
)
def test_bad_operation_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()
