"""Projecting directions out of the residual stream: identity at k = 0, no signal at k = d."""

from __future__ import annotations

import pytest
import torch

from analysis import geometry


def test_project_out_nothing_is_identity_and_everything_leaves_the_mean():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 8, generator=g)
    mean = x.mean(0)
    assert torch.equal(geometry.project_out(x, torch.zeros(8, 0), mean), x)
    full = geometry.random_subspace(8, 8).float()
    torch.testing.assert_close(geometry.project_out(x, full, mean), mean.expand_as(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(geometry.keep_only(x, full, mean), x, rtol=1e-5, atol=1e-5)


def test_keep_only_and_project_out_are_complements():
    g = torch.Generator().manual_seed(1)
    x, u = torch.randn(10, 8, generator=g), geometry.random_subspace(8, 3).float()
    m = x.mean(0)
    torch.testing.assert_close(geometry.keep_only(x, u, m) + geometry.project_out(x, u, m) - x, m.expand_as(x))


def test_bad_ranks_are_errors(gqa_model):
    with pytest.raises(ValueError, match="rank must be"):
        geometry.keep_only(torch.randn(3, 8), torch.zeros(8, 0))
    with pytest.raises(ValueError, match="basis must be"):
        geometry.project_out(torch.randn(3, 8), torch.zeros(9, 2))
    with pytest.raises(ValueError, match="k <= d"):
        geometry.project_out(torch.randn(3, 8), torch.zeros(8, 9))
    with pytest.raises(ValueError, match="rank must be"):
        geometry.random_subspace(8, 9)


def test_ablation_in_a_model(gqa_model):
    tokens = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(2))
    base = gqa_model(tokens)
    d = gqa_model.cfg.d_model
    with geometry.ablated(gqa_model, 1, torch.zeros(d, 0)):
        torch.testing.assert_close(gqa_model(tokens), base)
    mean = torch.randn(d)
    with geometry.ablated(gqa_model, 1, torch.eye(d), mean):
        out = gqa_model(tokens)
    # every position sees the same state at block 1, so nothing token-specific reaches the logits
    torch.testing.assert_close(out, out[:1, :1].expand_as(out), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gqa_model(tokens), base)  # hooks removed
