"""Hadamard rotations, norm folding and the error amplification of factor-then-quantize."""

from __future__ import annotations

import copy

import pytest
import torch

from analysis.compress import rotation


@pytest.mark.parametrize("n", [1, 2, 4, 12, 20, 28, 36, 64, 576, 1536])
def test_hadamard_is_hadamard(n):
    h = rotation.hadamard(n)
    assert set(h.unique().tolist()) <= {-1.0, 1.0}
    torch.testing.assert_close(h @ h.T, n * torch.eye(n, dtype=torch.float64))


@pytest.mark.parametrize("n", [3, 6, 10, 0])
def test_no_hadamard_is_an_error(n):
    with pytest.raises(ValueError, match="Hadamard"):
        rotation.hadamard(n)


def test_randomized_hadamard_is_orthogonal_and_roundtrips_16_bit():
    q = rotation.random_hadamard(576, seed=1)
    torch.testing.assert_close(q @ q.T, torch.eye(576, dtype=torch.float64), rtol=0, atol=1e-12)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(576, 64, generator=g)
    w[3] *= 50  # an outlier row
    back = q.float().T @ rotation.rtn(q.float() @ w, 16).weight
    assert (back - w).norm() / w.norm() < 1e-4


def test_rotation_spreads_outliers():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(576, 64, generator=g)
    w[3] *= 50
    q = rotation.random_hadamard(576).float()
    direct = (rotation.rtn(w, 4).weight - w).norm()
    rotated = (q.T @ rotation.rtn(q @ w, 4).weight - w).norm()
    assert rotated < direct


def randomize_norms(model):
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for norm in [b.ln1 for b in model.blocks] + [b.ln2 for b in model.blocks] + [model.ln_final]:
            norm.w.copy_(0.5 + torch.rand(norm.w.shape, generator=g))
        for b in model.blocks:
            b.attn.b_O.copy_(torch.randn(b.attn.b_O.shape, generator=g) * 0.1)
            b.mlp.b_out.copy_(torch.randn(b.mlp.b_out.shape, generator=g) * 0.1)


def test_fold_then_rotate_leaves_logits_unchanged(gqa_model):
    randomize_norms(gqa_model)
    tokens = torch.randint(0, 50, (2, 24), generator=torch.Generator().manual_seed(1))
    base = gqa_model(tokens)
    folded = copy.deepcopy(gqa_model)
    rotation.fold_norms(folded)
    assert (folded(tokens) - base).abs().max() <= 1e-4
    rotated = rotation.rotated_copy(gqa_model, seed=3)
    assert (rotated(tokens) - base).abs().max() <= 1e-4
    assert not torch.allclose(rotated.embed.W_E, gqa_model.embed.W_E)  # it did rotate
    assert torch.equal(gqa_model(tokens), base)  # the original is untouched


def test_rotation_needs_rms_and_folded_norms(tiny_model, gqa_model):
    with pytest.raises(ValueError, match="RMSNorm"):
        rotation.rotated_copy(tiny_model)
    randomize_norms(gqa_model)
    with pytest.raises(ValueError, match="Fold the norm"):
        rotation.rotate(gqa_model, rotation.random_hadamard(32))
    with pytest.raises(ValueError, match="d_model"):
        rotation.rotate(gqa_model, torch.eye(8, dtype=torch.float64))


def test_amplification():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(128, 96, generator=g) @ torch.diag(torch.logspace(0, -2, 96))
    out = rotation.amplification(w, 96, 4)
    assert out["amplification"] > 1  # a factor's noise is multiplied by the other factor
    assert out["product"] > out["direct"]  # at full rank, factoring adds error to what direct RTN makes
    full = rotation.amplification(w, 96, 16)
    assert full["product vs W"] < 1e-3  # full rank at 16 bits reproduces W
    half = rotation.amplification(w, 48, 16)
    assert half["product"] < 1e-3 < half["product vs W"]  # "product vs W" carries the truncation, "product" not
    with pytest.raises(ValueError, match="rank must be"):
        rotation.amplification(w, 0, 4)


def test_amplification_reuses_given_factors():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(64, 48, generator=g)
    ab = rotation.balanced_factors(w, 20)
    assert rotation.amplification(w, 20, 3, ab) == rotation.amplification(w, 20, 3)
    wrong = (ab[0] * 2, ab[1])
    assert rotation.amplification(w, 20, 3, wrong)["product vs W"] > rotation.amplification(w, 20, 3)["product vs W"]


def test_quantize_blocks_accounts_bits(gqa_model):
    model = copy.deepcopy(gqa_model)
    report = rotation.quantize_blocks(model, 4)
    n = sum(p.numel() for name, p in gqa_model.named_parameters() if name in rotation.block_weights(gqa_model))
    assert report["params"] == n
    assert 4 < rotation.bits_per_weight(report) < 4 + 16 * 0.2  # 4-bit values plus an fp16 scale per channel
    fact = rotation.quantize_blocks(copy.deepcopy(gqa_model), 4, rank=0)  # break-even rank
    assert fact["bits"] <= report["bits"] * 1.05
