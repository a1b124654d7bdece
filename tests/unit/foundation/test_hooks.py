"""analysis.hooks: every name it builds is a real hook of a TransformerLens model."""

from __future__ import annotations

import pytest
import torch

from analysis import hooks


def test_names_are_hook_points_of_a_real_model(tiny_model):
    names = [
        hooks.resid_pre(1),
        hooks.resid_post(1),
        hooks.z(1),
        hooks.k(1),
        hooks.v(1),
        hooks.mlp_post(1),
        hooks.normalized(1, "ln1"),
        hooks.normalized(1, "ln2"),
    ]
    names += [hooks.act_name(kind, 0) for kind in ("resid", "resid_post", "mlp", "attn")]
    missing = [n for n in names if n not in tiny_model.hook_dict]
    assert not missing


def test_kind_aliases_resolve_to_full_hook_names():
    assert hooks.hook_kind("resid") == "hook_resid_pre"
    assert hooks.hook_kind("mlp") == "hook_mlp_out"
    assert hooks.act_name("attn", 3) == "blocks.3.hook_attn_out"  # not get_act_name's "attn" = pattern
    assert hooks.act_name("hook_resid_post", 2) == "blocks.2.hook_resid_post"
    with pytest.raises(ValueError, match="Unknown kind 'mlp_in'"):
        hooks.hook_kind("mlp_in")


def test_layer_of():
    assert hooks.layer_of("blocks.12.attn.hook_z") == 12
    with pytest.raises(ValueError, match="names no block"):
        hooks.layer_of("ln_final.hook_normalized")


def test_input_hook_feeds_each_weight(tiny_model):
    """x at input_hook(W) (after norm_output) times W equals the hook that reads the product."""
    tokens = torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(0))
    _, cache = tiny_model.run_with_cache(tokens)
    for weight, out_hook in [
        ("blocks.1.attn.W_Q", "blocks.1.attn.hook_q"),
        ("blocks.1.mlp.W_in", "blocks.1.mlp.hook_pre"),
    ]:
        name = hooks.input_hook(weight, tiny_model)
        x = hooks.norm_output(tiny_model, name, cache[name])
        w = tiny_model.get_parameter(weight)
        b = tiny_model.get_parameter(weight.replace("W_", "b_"))
        got = torch.einsum("bpd,...dh->bp...h", x, w) + b
        torch.testing.assert_close(got, cache[out_hook], rtol=1e-4, atol=1e-5)


def test_input_hook_rejects_bad_names():
    with pytest.raises(ValueError, match="not a weight name"):
        hooks.input_hook("blocks.0.mlp")
    with pytest.raises(ValueError, match="No input hook"):
        hooks.input_hook("blocks.0.mlp.W_up")
