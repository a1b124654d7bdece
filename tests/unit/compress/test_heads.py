"""analysis.compress.heads: pruning whole heads and per-head sparsity, against ablating hook_z and
against the grouped-query K/V layout."""

from __future__ import annotations

import pytest
import torch

from analysis import compress, hooks


def test_prune_heads_equals_zero_ablating_hook_z(tiny_model):
    tokens = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(1))

    def ablate(z, hook):
        z = z.clone()
        z[..., [1, 3], :] = 0
        return z

    want = tiny_model.run_with_hooks(tokens, fwd_hooks=[(hooks.z(1), ablate)])
    plan = compress.CompressionPlan({"blocks.1.attn": [compress.PruneHeads((1, 3))]})
    with plan.applied(tiny_model) as report:
        got = tiny_model(tokens)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # Q and O lose 2 of 4 heads (stored as a smaller dense matrix); K and V keep theirs (no GQA: own slices go too)
    assert report.per_weight["blocks.1.attn.W_O"] == 32 * 32 * 16 // 2


def test_prune_heads_keeps_shared_kv_until_whole_group_goes(gqa_model):
    model = gqa_model
    ctx = compress.Calibration(model=model)
    wk = compress.to_linear("blocks.0.attn.W_K", model.blocks[0].attn._W_K.detach())
    stored = compress.Stored(wk.clone(), 16, wk.numel())
    one = compress.PruneHeads((0,))(stored, name="blocks.0.attn.W_K", calibration=ctx)
    assert torch.equal(one.weight, wk)  # head 1 still uses KV group 0
    both = compress.PruneHeads((0, 1))(stored, name="blocks.0.attn.W_K", calibration=ctx)
    assert (both.weight[:, :8] == 0).all() and torch.equal(both.weight[:, 8:], wk[:, 8:])


def test_head_sparsity_prunes_each_head_to_its_fraction(gqa_model):
    model = gqa_model
    ctx = compress.Calibration(model=model)
    fr = (0.0, 0.5, 0.25, 0.75)
    wq = compress.to_linear("blocks.0.attn.W_Q", model.blocks[0].attn.W_Q.detach())
    out = compress.HeadSparsity(fr)(
        compress.Stored(wq.clone(), 16, wq.numel()), name="blocks.0.attn.W_Q", calibration=ctx
    )
    for h, f in enumerate(fr):
        sl = out.weight[:, h * 8 : (h + 1) * 8]
        assert int((sl == 0).sum()) == round(f * sl.numel())
        kept = wq[:, h * 8 : (h + 1) * 8].abs()[sl != 0]
        dropped = wq[:, h * 8 : (h + 1) * 8].abs()[sl == 0]
        if len(dropped) and len(kept):
            assert dropped.max() <= kept.min()  # the smallest magnitudes went
    wk = compress.to_linear("blocks.0.attn.W_K", model.blocks[0].attn._W_K.detach())
    out = compress.HeadSparsity(fr)(
        compress.Stored(wk.clone(), 16, wk.numel()), name="blocks.0.attn.W_K", calibration=ctx
    )
    assert int((out.weight[:, :8] == 0).sum()) == round(0.25 * 32 * 8)  # group 0: mean(0, 0.5)
    assert int((out.weight[:, 8:] == 0).sum()) == round(0.5 * 32 * 8)  # group 1: mean(0.25, 0.75)
    wo = compress.to_linear("blocks.0.attn.W_O", model.blocks[0].attn.W_O.detach())
    out = compress.HeadSparsity(fr)(
        compress.Stored(wo.clone(), 16, wo.numel()), name="blocks.0.attn.W_O", calibration=ctx
    )
    assert int((out.weight[8:16] == 0).sum()) == round(0.5 * 8 * 32)
    with pytest.raises(ValueError, match="4 heads"):
        compress.HeadSparsity((0.1, 0.2))(
            compress.Stored(wo.clone(), 16, wo.numel()), name="blocks.0.attn.W_O", calibration=ctx
        )


@pytest.mark.parametrize("fixture", ["tiny_model", "gqa_model"])
def test_head_sparsity_at_one_on_one_head_equals_zero_ablating_its_hook_z(fixture, request):
    model = request.getfixturevalue(fixture)
    tokens = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(3))

    def ablate(z, hook):
        z = z.clone()
        z[..., 1, :] = 0
        return z

    want = model.run_with_hooks(tokens, fwd_hooks=[(hooks.z(1), ablate)])
    keep = compress.CompressionPlan({"blocks.1.attn": [compress.HeadSparsity((0, 1.0, 0, 0), shared_kv="keep")]})
    with keep.applied(model):
        got = model(tokens)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    if fixture == "gqa_model":  # the default prunes the shared K/V slice too, which moves head 0 (same group)
        mean = compress.CompressionPlan({"blocks.1.attn": [compress.HeadSparsity((0, 1.0, 0, 0))]})
        with mean.applied(model):
            moved = model(tokens)
        assert not torch.allclose(moved, want, atol=1e-4, rtol=1e-4)


def test_head_sparsity_keep_leaves_kv_untouched(gqa_model):
    ctx = compress.Calibration(model=gqa_model)
    wk = compress.to_linear("blocks.0.attn.W_K", gqa_model.blocks[0].attn._W_K.detach())
    out = compress.HeadSparsity((0.9, 0.9, 0.9, 0.9), shared_kv="keep")(
        compress.Stored(wk.clone(), 16, wk.numel()), name="blocks.0.attn.W_K", calibration=ctx
    )
    assert torch.equal(out.weight, wk)
    with pytest.raises(ValueError, match="shared_kv"):
        compress.HeadSparsity((0.1,) * 4, shared_kv="drop")
