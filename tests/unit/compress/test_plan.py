"""analysis.compress.plan: reversible application, true sizes and the compressed-weight memo."""

from __future__ import annotations

import pytest
import torch

from analysis import compress as C
from analysis.cache import tensors_hash
from analysis.compress import plan as plan_module


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


def test_a_weight_written_inside_the_block_spoils_neither_the_original_nor_the_memo(tiny_model):
    """Applying swaps storage, so a write inside the block lands in the compressed tensor: the
    original must come back untouched, and the next application must not reuse the written values."""
    plan = C.CompressionPlan({"blocks.0.mlp": [C.Prune(0.25), C.Quantize(3)]})
    before = tiny_model.blocks[0].mlp.W_in.detach().clone()
    with plan.applied(tiny_model):
        first = tiny_model.blocks[0].mlp.W_in.detach().clone()
        with torch.no_grad():
            tiny_model.blocks[0].mlp.W_in.add_(1.0)
    assert torch.equal(tiny_model.blocks[0].mlp.W_in, before)
    with plan.applied(tiny_model):
        assert torch.equal(tiny_model.blocks[0].mlp.W_in, first)
    assert torch.equal(tiny_model.blocks[0].mlp.W_in, before)


def test_restores_even_when_the_block_raises(tiny_model):
    before = tiny_model.blocks[0].mlp.W_in.detach().clone()
    with pytest.raises(RuntimeError, match="boom"):
        with C.CompressionPlan({"blocks.0.mlp": C.Quantize(2)}).applied(tiny_model):
            raise RuntimeError("boom")
    assert torch.equal(tiny_model.blocks[0].mlp.W_in, before)


def test_size_matches_a_hand_count(tiny_model):
    # tiny model: d_model 32, 4 heads of 8, d_mlp 64 (no gate)
    plan = C.CompressionPlan(
        {
            "blocks.0.mlp": [C.Quantize(4)],  # per-channel symmetric: one fp16 scale per output column
            "blocks.1.attn.W_Q": [C.Prune(0.5), C.Quantize(4, symmetric=False)],
        }
    )
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


@pytest.mark.parametrize(
    "name, match",
    [
        ("blocks.99.mlp", "only 2 layers"),
        ("mlp.3", "Unknown component"),
        ("blocks.0.mlp.W_gate", "no weight"),
    ],
)
def test_unknown_components_are_refused(tiny_model, name, match):
    with pytest.raises(ValueError, match=match):
        C.CompressionPlan({name: C.Quantize(4)}).size(tiny_model)


def test_a_weight_named_twice_is_refused(tiny_model):
    with pytest.raises(ValueError, match="covered twice"):
        C.CompressionPlan({"blocks.0.mlp": C.Quantize(4), "blocks.0.mlp.W_in": C.Prune(0.1)}).targets(tiny_model)


def test_memo_serves_only_identical_weights(tiny_model):
    """The compressed-weight memo must never hand back a result computed from other values."""
    plan = C.CompressionPlan({"blocks.0.mlp": [C.Prune(0.25), C.Quantize(3)]})
    with plan.applied(tiny_model):
        first = tiny_model.blocks[0].mlp.W_in.detach().clone()
    with plan.applied(tiny_model):  # a hit: same values as before the first apply
        assert torch.equal(tiny_model.blocks[0].mlp.W_in, first)
    with torch.no_grad():
        tiny_model.blocks[0].mlp.W_in.mul_(-2.0)  # changed in place: a new version, a new key
    fresh = (
        C.CompressionPlan({"blocks.0.mlp.W_in": [C.Prune(0.25), C.Quantize(3)]})
        .compress_weight(tiny_model, "blocks.0.mlp.W_in")
        .weight
    )
    with plan.applied(tiny_model):
        assert torch.equal(tiny_model.blocks[0].mlp.W_in, fresh)
        assert not torch.equal(tiny_model.blocks[0].mlp.W_in, first)


def test_memo_tells_apart_a_permutation_of_the_same_entries(tiny_model):
    """Equal sums, equal strided sums and an equal last entry: still a different weight, a different key."""
    p = tiny_model.blocks[0].mlp.W_in
    with torch.no_grad():  # multiples of 1/8: every sum below is exact, in any order
        p.copy_(torch.randint(-8, 9, p.shape, generator=torch.Generator().manual_seed(0)) / 8)
    original = p.detach().clone()
    flat = original.flatten()
    free = torch.ones(flat.numel(), dtype=torch.bool)
    free[::61] = False  # keep every 61st entry and the last one where they are
    free[-1] = False
    permuted = flat.clone()
    permuted[free] = flat[free].flip(0)
    permuted = permuted.view_as(p)
    assert not torch.equal(permuted, original)
    assert float(permuted.sum()) == float(original.sum())
    assert torch.equal(permuted.flatten()[::61], flat[::61]) and permuted.flatten()[-1] == flat[-1]

    plan = C.CompressionPlan({"blocks.0.mlp.W_in": [C.Prune(0.25), C.Quantize(3)]})
    key = C.weight_hash(p)
    with plan.applied(tiny_model):
        first = p.detach().clone()
    with torch.no_grad():
        p.copy_(permuted)
    assert C.weight_hash(p) != key
    fresh = plan.compress_weight(tiny_model, "blocks.0.mlp.W_in").weight
    with plan.applied(tiny_model):
        assert torch.equal(p, fresh)  # computed from the permuted values, not served from the memo
        assert not torch.equal(p, first)
    assert torch.equal(p, permuted)


def test_memo_sees_a_weight_edited_through_data(tiny_model):
    """A write through ``.data`` moves neither ``_version`` nor the storage: the memo must still not
    serve the compressed form of the old values."""
    plan = C.CompressionPlan({"blocks.0.mlp.W_in": [C.Prune(0.25), C.Quantize(3)]})
    p = tiny_model.blocks[0].mlp.W_in
    with plan.applied(tiny_model):
        first = p.detach().clone()
    p.data.mul_(-2.0)
    fresh = plan.compress_weight(tiny_model, "blocks.0.mlp.W_in").weight
    with plan.applied(tiny_model):
        assert torch.equal(p, fresh) and not torch.equal(p, first)


def test_a_data_write_inside_the_block_does_not_reach_the_memo(tiny_model):
    plan = C.CompressionPlan({"blocks.0.mlp.W_in": [C.Prune(0.25), C.Quantize(3)]})
    p = tiny_model.blocks[0].mlp.W_in
    with plan.applied(tiny_model):
        first = p.detach().clone()
        p.data.add_(1.0)
    with plan.applied(tiny_model):
        assert torch.equal(p, first)


def test_each_application_hashes_each_weight_once(tiny_model, monkeypatch):
    calls = []
    monkeypatch.setattr(plan_module, "tensors_hash", lambda ts: calls.append(1) or tensors_hash(ts))
    plan = C.uniform_plan(tiny_model, [C.Quantize(4)], kinds=("mlp",))
    for _ in range(3):
        with plan.applied(tiny_model):
            pass
    assert len(calls) == 12  # 3 applications x 2 layers x (W_in, W_out)


@pytest.mark.parametrize("op, match", [(C.Quantize, r"class Quantize.*Quantize\(4\)"), ("prune", "no operation")])
def test_a_class_or_a_non_operation_in_a_plan_is_refused(op, match):
    with pytest.raises(TypeError, match=match):
        C.CompressionPlan({"blocks.0.mlp": [C.Prune(0.1), op]})


def test_operations_reading_data_are_not_memoized(tiny_model):
    """FWSVD reads the context's Fisher rows: the same weight under other statistics is another result."""
    assert C.Prune.data_free and C.Quantize.data_free and not hasattr(C.FWSVD, "data_free")
    w, outs = "blocks.0.mlp.W_in", []
    for seed in (0, 1):
        fisher = torch.rand(64, generator=torch.Generator().manual_seed(seed)) ** 4 + 1e-3
        ctx = C.Calibration(model=tiny_model, stats={f"grad2:{w}": fisher})
        with C.CompressionPlan({w: [C.FWSVD(0.5)]}, calibration=ctx).applied(tiny_model):
            outs.append(tiny_model.blocks[0].mlp.W_in.detach().clone())
    assert not torch.allclose(outs[0], outs[1])


def test_an_operation_that_changes_nothing_never_aliases_the_original(tiny_model):
    plan = C.CompressionPlan({"blocks.0.mlp.W_in": C.Prune(0.0)})  # keeps every value
    before = tiny_model.blocks[0].mlp.W_in.detach().clone()
    with plan.applied(tiny_model):
        with torch.no_grad():
            tiny_model.blocks[0].mlp.W_in.mul_(3.0)
    assert torch.equal(tiny_model.blocks[0].mlp.W_in, before)
    with plan.applied(tiny_model):
        assert torch.equal(tiny_model.blocks[0].mlp.W_in, before)
