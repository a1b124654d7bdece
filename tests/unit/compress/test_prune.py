"""analysis.compress.prune: magnitude pruning against direct counts."""

from __future__ import annotations

import pytest
import torch

from analysis.compress import Prune, Stored


def _stored(w):
    return Stored(w.clone(), 16.0, w.numel())


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.37, 0.5, 0.9])
def test_prune_zeroes_exactly_the_smallest_fraction(fraction):
    w = torch.randn(64, 48, generator=torch.Generator().manual_seed(0))
    out = Prune(fraction)(_stored(w)).weight
    zeroed = out == 0
    assert int(zeroed.sum()) == round(fraction * w.numel())
    if 0 < fraction:
        assert w[zeroed].abs().max() <= w[~zeroed].abs().min()
    assert torch.equal(out[~zeroed], w[~zeroed])  # kept weights untouched


def test_ties_are_broken_by_position():
    w = torch.tensor([[1.0, -1.0, 1.0, 2.0], [1.0, 3.0, -1.0, 0.5]])
    s = Prune(0.5)(_stored(w))  # zero 4 of 8: 0.5, then the first three of the five |w| = 1
    assert s.mask.tolist() == [[False, False, False, True], [True, True, True, False]]
    assert s.bits == min(8 * 16, 8 + 4 * 16)


def test_a_stale_threshold_hint_is_not_trusted():
    """The k-th value remembered for a weight is checked before use: here it is the wrong one."""
    w = torch.randn(30, 30, generator=torch.Generator().manual_seed(5))
    Prune(0.4)(_stored(w), name="blocks.0.mlp.W_in")  # remembers the 360th smallest |w|
    mag = w.abs().flatten()
    mag[::97] = float("inf")  # the hint's key sums |w| at a stride of 97: change no entry there
    smallest = int(mag.argmin())
    w2 = w.clone()
    w2.view(-1)[smallest] = 100.0  # same checksum, but now every order statistic moves up one
    hinted = Prune(0.4)(_stored(w2), name="blocks.0.mlp.W_in")
    fresh = Prune(0.4)(_stored(w2), name="another weight")
    assert torch.equal(hinted.mask, fresh.mask)
    assert bool(hinted.mask.view(-1)[smallest]) and int((~hinted.mask).sum()) == 360


@pytest.mark.parametrize("fraction", [1.0, -0.1, float("nan")])
def test_bad_fractions(fraction):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        Prune(fraction)
