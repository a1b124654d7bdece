"""analysis.compress.linear: the linear view computes the layer's own projection."""

from __future__ import annotations

import torch

from analysis.compress import from_linear, to_linear
from analysis.compress.linear import from_head_slices, head_slices


def test_linear_view_computes_the_same_projection(tiny_model):
    x = torch.randn(5, tiny_model.cfg.d_model)
    for name in ["blocks.0.attn.W_Q", "blocks.0.attn.W_O", "blocks.1.mlp.W_in"]:
        w = dict(tiny_model.named_parameters())[name].detach()
        lin = to_linear(name, w)
        assert torch.equal(from_linear(name, lin, w), w)
        if name.endswith("W_Q"):  # x @ W_Q per head, heads concatenated
            per_head = torch.einsum("bd,hde->bhe", x, w).reshape(5, -1)
            assert torch.allclose(x @ lin, per_head, atol=1e-6)


def test_head_slices_hold_each_heads_own_entries(tiny_model):
    attn = tiny_model.blocks[0].attn
    for name, w in [("blocks.0.attn.W_Q", attn.W_Q), ("blocks.0.attn.W_O", attn.W_O)]:
        w = w.detach()
        lin = to_linear(name, w)
        kind = name.rsplit(".", 1)[-1]
        units = head_slices(lin, kind, tiny_model.cfg.d_head)
        assert units.shape[0] == tiny_model.cfg.n_heads
        for h in range(tiny_model.cfg.n_heads):  # head h's slice is exactly w[h] (order within may differ)
            assert torch.equal(units[h].sort().values, w[h].flatten().sort().values)
        assert torch.equal(from_head_slices(units, kind, tiny_model.cfg.d_head, lin), lin)
