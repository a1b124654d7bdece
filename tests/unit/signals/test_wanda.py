"""analysis.wanda: Wanda importance per head against a direct computation from the model's weights."""

from __future__ import annotations

import pytest
import torch

from analysis import hooks, wanda


@pytest.mark.parametrize("gqa", [False, True])
def test_wanda_scores_match_direct_computation(tiny_model, gqa_model, gqa):
    model = gqa_model if gqa else tiny_model
    tokens = torch.randint(0, 50, (4 * 16,), generator=torch.Generator().manual_seed(0))
    norms = wanda.input_norms(model, tokens, context=16)
    got = wanda.wanda_head_scores(model, norms)
    ln_out = {}  # what the attention really reads: the ln1 module's output (a plain torch hook)
    handles = [
        model.blocks[l].ln1.register_forward_hook(lambda m, i, o, l=l: ln_out.__setitem__(l, o))
        for l in range(model.cfg.n_layers)
    ]
    _, cache = model.run_with_cache(tokens.view(4, 16))
    for h in handles:
        h.remove()
    H, kv = model.cfg.n_heads, model.cfg.n_key_value_heads or model.cfg.n_heads
    for l in range(model.cfg.n_layers):
        xn = ln_out[l].reshape(-1, model.cfg.d_model).norm(dim=0)  # [d_model]
        z = cache[hooks.z(l)]  # [b, p, H, d_head]
        attn = model.blocks[l].attn
        WK = attn._W_K if gqa else attn.W_K
        WV = attn._W_V if gqa else attn.W_V
        for h in range(H):
            g = h // (H // kv)
            zn = z[:, :, h].reshape(-1, model.cfg.d_head).norm(dim=0)  # [d_head]
            want = (attn.W_Q[h].abs() * xn[:, None]).sum()
            want += ((WK[g].abs() * xn[:, None]).sum() + (WV[g].abs() * xn[:, None]).sum()) / (H // kv)
            want += (attn.W_O[h].abs() * zn[:, None]).sum()
            assert got[l, h].item() == pytest.approx(want.item(), rel=1e-4)


#
