"""Rogue dimensions, PCA, gradient covariance, readout basis, principal angles and CCA on known inputs."""

from __future__ import annotations

import pytest
import torch

from analysis import geometry, hooks


def test_rogue_dimension_is_found():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 16, generator=g)
    x[:, 5] += 400.0 * (torch.rand(500, generator=g) > 0.99)  # a massive, rarely active dimension
    r = geometry.rogue_dimensions(x)
    assert r.rogue().tolist() == [5]
    assert r.variance_share[5] > 0.5


def test_pca_from_stats_matches_torch():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(400, 8, generator=g, dtype=torch.float64) @ torch.randn(8, 8, generator=g, dtype=torch.float64)
    p = geometry.pca(geometry.GramStats().add(x, x))
    ref = torch.linalg.eigvalsh(torch.cov(x.T, correction=0)).flip(0)
    torch.testing.assert_close(p.variances, ref, rtol=1e-4, atol=1e-8)
    assert p.retained(8) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="rank must be"):
        p.top(9)
    with pytest.raises(ValueError, match="rank must be"):
        p.top(0)


def test_principal_angles():
    a = geometry.random_subspace(10, 3, seed=0)
    assert torch.allclose(geometry.principal_angles(a, a), torch.ones(3, dtype=torch.float64))
    e = torch.eye(10, dtype=torch.float64)
    assert torch.allclose(geometry.principal_angles(e[:, :3], e[:, 3:6]), torch.zeros(3, dtype=torch.float64))


def test_cca():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(300, 4, generator=g, dtype=torch.float64)
    y = x @ torch.randn(4, 4, generator=g, dtype=torch.float64)
    assert torch.allclose(geometry.cca(x, y), torch.ones(4, dtype=torch.float64), atol=1e-8)
    z = torch.randn(300, 4, generator=g, dtype=torch.float64)
    assert geometry.cca(x, z).max() < 0.35  # independent: near zero (sampling noise only)


def test_gradient_covariance_matches_a_direct_gradient(gqa_model):
    """Reference: a zero perturbation added at the hook, whose .grad is the per-token gradient."""
    tokens = torch.randint(0, 50, (64,), generator=torch.Generator().manual_seed(3))
    got = geometry.gradient_covariance(gqa_model, tokens, [1], context=32, batch_size=2)[1]
    delta = torch.zeros(2, 32, gqa_model.cfg.d_model, requires_grad=True)
    wins = tokens.view(2, 32)
    with gqa_model.hooks(fwd_hooks=[(hooks.resid_pre(1), lambda x, hook: x + delta)]):
        logits = gqa_model(wins)
    torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, 50), wins[:, 1:].reshape(-1), reduction="sum"
    ).backward()
    gr = delta.grad.reshape(-1, gqa_model.cfg.d_model).double()
    torch.testing.assert_close(got, gr.T @ gr / 64, rtol=1e-4, atol=1e-10)
    assert all(p.requires_grad for p in gqa_model.parameters())  # restored


def test_readout_basis_is_orthonormal(gqa_model):
    u, s = geometry.readout_basis(gqa_model)
    torch.testing.assert_close(u.T @ u, torch.eye(u.shape[1], dtype=torch.float64), rtol=0, atol=1e-10)
    assert (s[:-1] >= s[1:]).all()


def test_window_cca_gives_one_value_per_window():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(4 * 50, 6, generator=g, dtype=torch.float64)
    e = torch.eye(6, dtype=torch.float64)
    same = geometry.window_cca(x, e[:, :2], e[:, :2] @ torch.tensor([[1.0, 2.0], [0.5, -1.0]], dtype=torch.float64), 50)
    assert same.shape == (4,) and torch.allclose(same, torch.ones(4, dtype=torch.float64))
    apart = geometry.window_cca(x, e[:, :2], e[:, 2:4], 50)
    assert apart.max() < 0.5  # independent coordinates: sampling noise only
    x[::50] += 1e4 * torch.randn(4, 6, generator=g, dtype=torch.float64)  # a sink at each window's first position
    assert geometry.window_cca(x, e[:, :2], e[:, 2:4], 50).max() < 0.5  # left out by default
    assert geometry.window_cca(x, e[:, :2], e[:, 2:4], 50, skip_first=0).max() > 0.5
    with pytest.raises(ValueError, match="whole windows"):
        geometry.window_cca(x[:-1], e[:, :2], e[:, 2:4], 50)
