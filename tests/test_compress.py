"""analysis.compress: pruning and quantization against direct counts and torch's own fake-quantizer."""

from __future__ import annotations

import pytest
import torch

from analysis import compress as C


def _stored(w):
    return C.Stored(w.clone(), 16.0, w.numel())


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.37, 0.5, 0.9])
def test_prune_zeroes_exactly_the_smallest_fraction(fraction):
    w = torch.randn(64, 48, generator=torch.Generator().manual_seed(0))
    out = C.Prune(fraction)(_stored(w)).weight
    zeroed = out == 0
    assert int(zeroed.sum()) == round(fraction * w.numel())
    if 0 < fraction:
        assert w[zeroed].abs().max() <= w[~zeroed].abs().min()
    assert torch.equal(out[~zeroed], w[~zeroed])  # kept weights untouched


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("granularity", ["tensor", "channel"])
def test_quantize_levels_and_error(symmetric, granularity):
    w = torch.randn(96, 40, generator=torch.Generator().manual_seed(1))
    errors = []
    for bits in range(2, 9):
        q = C.Quantize(bits, granularity, symmetric)(_stored(w)).weight
        groups = [q] if granularity == "tensor" else list(q.T)
        assert max(torch.unique(g).numel() for g in groups) <= 2**bits
        errors.append(float((q - w).norm()))
    assert all(b < a for a, b in zip(errors, errors[1:])), errors  # strictly better with every bit


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_asymmetric_quantization_matches_torch_fake_quantize(bits):
    """Independent reference: torch.fake_quantize_per_channel_affine with the same scales."""
    w = torch.randn(50, 30, generator=torch.Generator().manual_seed(2))
    ours = C.Quantize(bits, "channel", symmetric=False)(_stored(w)).weight
    qmax = 2**bits - 1
    lo, hi = w.double().amin(0), w.double().amax(0)
    scale = (hi - lo) / qmax
    zero = (-lo / scale).round()
    ref = torch.fake_quantize_per_channel_affine(w, scale.float(), zero.int(), 1, 0, qmax)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_quantize_keeps_pruned_entries_zero():
    w = torch.randn(40, 40, generator=torch.Generator().manual_seed(3))
    s = C.Quantize(3, symmetric=False)(C.Prune(0.5)(_stored(w)))
    assert (s.weight[~s.mask] == 0).all()


def test_linear_view_computes_the_same_projection(tiny_model):
    x = torch.randn(5, tiny_model.cfg.d_model)
    for name in ["blocks.0.attn.W_Q", "blocks.0.attn.W_O", "blocks.1.mlp.W_in"]:
        w = dict(tiny_model.named_parameters())[name].detach()
        lin = C.to_linear(name, w)
        assert torch.equal(C.from_linear(name, lin, w), w)
        if name.endswith("W_Q"):  # x @ W_Q per head, heads concatenated
            per_head = torch.einsum("bd,hde->bhe", x, w).reshape(5, -1)
            assert torch.allclose(x @ lin, per_head, atol=1e-6)


def test_apply_and_restore_is_bit_identical(tiny_model):
    before = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    x = torch.randint(0, 50, (2, 16))
    base = tiny_model(x)
    plan = C.uniform_plan(tiny_model, [C.Prune(0.3), C.Quantize(3)])
    with plan.applied(tiny_model):
        assert not torch.allclose(tiny_model(x), base)
    for n, p in tiny_model.named_parameters():
        assert torch.equal(p, before[n]), n
    clone, _ = plan.apply_copy(tiny_model)
    assert not torch.equal(clone.blocks[0].mlp.W_in, tiny_model.blocks[0].mlp.W_in)
    assert torch.equal(tiny_model.blocks[0].mlp.W_in, before["blocks.0.mlp.W_in"])


def test_restores_even_when_the_block_raises(tiny_model):
    before = tiny_model.blocks[0].mlp.W_in.detach().clone()
    with pytest.raises(RuntimeError, match="boom"):
        with C.CompressionPlan({"blocks.0.mlp": C.Quantize(2)}).applied(tiny_model):
            raise RuntimeError("boom")
    assert torch.equal(tiny_model.blocks[0].mlp.W_in, before)


def test_size_matches_a_hand_count(tiny_model):
    # tiny model: d_model 32, 4 heads of 8, d_mlp 64 (no gate)
    plan = C.CompressionPlan({
        "blocks.0.mlp": [C.Quantize(4)],  # per-channel symmetric: one fp16 scale per output column
        "blocks.1.attn.W_Q": [C.Prune(0.5), C.Quantize(4, symmetric=False)],
    })
    report = plan.size(tiny_model)
    w_in = 32 * 64 * 4 + 64 * 16
    w_out = 64 * 32 * 4 + 32 * 16
    w_q = (1024 + 512 * 4) + 32 * (16 + 4)  # bitmask + non-zeros, scale + zero-point per column
    assert report.per_weight == {"blocks.0.mlp.W_in": w_in, "blocks.0.mlp.W_out": w_out, "blocks.1.attn.W_Q": w_q}
    assert report.n_weights == 2048 * 2 + 1024
    assert report.base_bits == report.n_weights * 16
    n_all = sum(p.numel() for p in tiny_model.parameters())
    assert report.model_bits == w_in + w_out + w_q + (n_all - report.n_weights) * 16
    with plan.applied(tiny_model) as applied:
        assert applied.per_weight == report.per_weight


def test_components_cover_every_attention_and_mlp_weight(smollm2):
    names = C.weights_of(smollm2, "blocks.3.attn") + C.weights_of(smollm2, "blocks.3.mlp")
    assert names == [f"blocks.3.attn.{w}" for w in C.ATTN_WEIGHTS] + [f"blocks.3.mlp.{w}" for w in C.MLP_WEIGHTS]
    assert C.parameter_name(smollm2, "blocks.3.attn.W_K") == "blocks.3.attn._W_K"  # grouped-query K
    assert len(C.components(smollm2)) == 2 * smollm2.cfg.n_layers


@pytest.mark.parametrize("make, match", [
    (lambda: C.Prune(1.0), r"\[0, 1\)"),
    (lambda: C.Prune(-0.1), r"\[0, 1\)"),
    (lambda: C.Quantize(0), r"\[1, 32\]"),
    (lambda: C.Quantize(33), r"\[1, 32\]"),
    (lambda: C.Quantize(1), "symmetric=False"),
])
def test_bad_operation_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("name, match", [
    ("blocks.99.mlp", "only 2 layers"),
    ("mlp.3", "Unknown component"),
    ("blocks.0.mlp.W_gate", "no weight"),
])
def test_unknown_components_are_refused(tiny_model, name, match):
    with pytest.raises(ValueError, match=match):
        C.CompressionPlan({name: C.Quantize(4)}).size(tiny_model)


def test_one_bit_asymmetric_has_two_levels():
    w = torch.randn(20, 10)
    q = C.Quantize(1, symmetric=False)(_stored(w)).weight
    assert max(torch.unique(c).numel() for c in q.T) <= 2


def test_memo_serves_only_identical_weights(tiny_model):
    """The compressed-weight memo must never hand back a result computed from other values."""
    plan = C.CompressionPlan({"blocks.0.mlp": [C.Prune(0.25), C.Quantize(3)]})
    with plan.applied(tiny_model):
        first = tiny_model.blocks[0].mlp.W_in.detach().clone()
    with plan.applied(tiny_model):  # a hit: same values as before the first apply
        assert torch.equal(tiny_model.blocks[0].mlp.W_in, first)
    with torch.no_grad():
        tiny_model.blocks[0].mlp.W_in.mul_(-2.0)  # changed in place: a new version, a new key
    fresh = C.CompressionPlan({"blocks.0.mlp.W_in": [C.Prune(0.25), C.Quantize(3)]}).compress_weight(
        tiny_model, "blocks.0.mlp.W_in").weight
    with plan.applied(tiny_model):
        assert torch.equal(tiny_model.blocks[0].mlp.W_in, fresh)
        assert not torch.equal(tiny_model.blocks[0].mlp.W_in, first)
