"""Linear block replacement: size accounting, rank for a ratio, and hooks that replace exactly."""

from __future__ import annotations

import pytest
import torch

from analysis import geometry
from analysis.compress import linear_block


def test_sizes(gqa_model):
    d = gqa_model.cfg.d_model
    n_block = sum(p.numel() for p in gqa_model.blocks[0].parameters())
    assert linear_block.block_params(gqa_model, 0) == n_block
    full = linear_block.BlockMap(0, torch.zeros(d), weight=torch.zeros(d, d))
    assert full.n_values == d * d + d
    r = linear_block.rank_for_ratio(gqa_model, 0, 10.0)
    low = linear_block.BlockMap(0, torch.zeros(d), a=torch.zeros(d, r), b=torch.zeros(r, d))
    assert low.n_values == 2 * d * r + d
    assert linear_block.compression(gqa_model, low) >= 10.0
    bigger = linear_block.BlockMap(0, torch.zeros(d), a=torch.zeros(d, r + 1), b=torch.zeros(r + 1, d))
    assert linear_block.compression(gqa_model, bigger) < 10.0
    with pytest.raises(ValueError, match="no rank"):
        linear_block.rank_for_ratio(gqa_model, 0, 1e6)


def test_fit_and_replace(gqa_model):
    g = torch.Generator().manual_seed(0)
    calib = torch.randint(0, 50, (1024,), generator=g)
    stats = geometry.block_stats(gqa_model, calib, context=32)["block"][1]
    full = linear_block.fit_block(stats, 1)
    low = linear_block.fit_block(stats, 1, rank=4)
    assert low.rank == 4 and full.rank is None
    tokens = torch.randint(0, 50, (2, 32), generator=g)
    _, cache = gqa_model.run_with_cache(tokens)
    x = cache["blocks.1.hook_resid_pre"]
    with linear_block.replaced(gqa_model, [full]):
        _, rcache = gqa_model.run_with_cache(tokens)
    torch.testing.assert_close(rcache["blocks.1.hook_resid_post"], full(x))
    torch.testing.assert_close(rcache["blocks.0.hook_resid_post"], cache["blocks.0.hook_resid_post"])
    torch.testing.assert_close(low(x), x + (x.double() @ low.a @ low.b + low.bias).float(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="rank must be"):
        linear_block.fit_block(stats, 1, rank=gqa_model.cfg.d_model + 1)
    with pytest.raises(ValueError, match="does not exist"):
        with linear_block.replaced(gqa_model, [linear_block.BlockMap(5, full.bias, weight=full.weight)]):
            pass
    with pytest.raises(ValueError, match="non-empty"):
        linear_block.fit_block(geometry.GramStats(), 0, rank=2)
