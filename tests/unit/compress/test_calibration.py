"""analysis.compress.calibration: statistics against a direct computation on the tiny model."""

from __future__ import annotations

import pytest
import torch

from analysis import compress, hooks

pytestmark = pytest.mark.usefixtures("one_thread")


def test_statistics_match_a_direct_computation(tiny_model):
    tokens = torch.randint(0, 50, (4 * 16,), generator=torch.Generator().manual_seed(0))
    w = "blocks.1.mlp.W_out"
    ctx = compress.calibration_stats(tiny_model, tokens, [w], context=16, batch_size=3, max_grad_examples=2)
    hook = hooks.input_hook(w)
    _, cache = tiny_model.run_with_cache(tokens.view(4, 16), names_filter=hook)
    x = cache[hook].reshape(-1, cache[hook].shape[-1]).double()
    assert torch.allclose(ctx.stats[f"xtx:{hook}"].double(), x.T @ x / len(x), rtol=1e-4, atol=1e-6)
    assert torch.allclose(ctx.stats[f"absmean:{hook}"].double(), x.abs().mean(0), rtol=1e-4, atol=1e-7)
    # Fisher rows: mean over the first two windows of the squared gradient, summed over d_in
    grads = []
    for i in range(2):
        tiny_model.zero_grad(set_to_none=True)
        tiny_model(tokens.view(4, 16)[i : i + 1], return_type="loss").backward()
        grads.append(dict(tiny_model.named_parameters())[w].grad.detach().pow(2).sum(0))
    tiny_model.zero_grad(set_to_none=True)
    assert torch.allclose(ctx.stats[f"grad2:{w}"], torch.stack(grads).mean(0), rtol=1e-4, atol=1e-12)
    assert all(p.requires_grad for p in tiny_model.parameters())  # flags restored


def test_padding_is_left_out(tiny_model):
    """A padded row's masked positions contribute nothing: the statistics equal those of the unpadded tokens."""
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, 50, (2, 16), generator=g)
    mask = torch.ones_like(tokens)
    mask[1, 10:] = 0
    w = "blocks.0.mlp.W_in"
    hook = hooks.input_hook(w)
    ctx = compress.calibration_stats(tiny_model, tokens, [w], kinds=("absmean",), attention_mask=mask)
    _, cache = tiny_model.run_with_cache(tokens, names_filter=hook)
    x = hooks.norm_output(tiny_model, hook, cache[hook])[mask.bool()].double()
    assert torch.allclose(ctx.stats[f"absmean:{hook}"].double(), x.abs().mean(0), rtol=1e-4, atol=1e-7)


def test_no_calibration_tokens_is_an_error(tiny_model):
    with pytest.raises(ValueError, match="no calibration tokens"):
        compress.calibration_stats(tiny_model, torch.tensor([], dtype=torch.long), ["blocks.0.mlp.W_in"])


def test_unknown_statistic_is_an_error(tiny_model):
    with pytest.raises(ValueError, match="Unknown calibration statistics"):
        compress.calibration_stats(tiny_model, torch.zeros(32, dtype=torch.long), ["blocks.0.mlp.W_in"], kinds=("xx",))


def test_norm_inputs_include_the_norm_weight_and_count_once(tiny_model):
    """Q/K/V read ln1's output (after its weight and bias), and ln1 runs three times per forward."""
    with torch.no_grad():  # make the norm's affine map matter
        tiny_model.blocks[1].ln1.w.uniform_(0.5, 2.0)
        tiny_model.blocks[1].ln1.b.uniform_(-1.0, 1.0)
    tokens = torch.randint(0, 50, (3 * 16,), generator=torch.Generator().manual_seed(1))
    ctx = compress.calibration_stats(tiny_model, tokens, ["blocks.1.attn.W_Q"], kinds=("xtx",), context=16)
    calls = []
    handle = tiny_model.blocks[1].ln1.register_forward_hook(lambda mod, inp, out: calls.append(out.detach()))
    with torch.inference_mode():
        tiny_model(tokens.view(3, 16))
    handle.remove()
    assert len(calls) == 3  # once each for Q, K and V
    x = calls[0].reshape(-1, calls[0].shape[-1]).double()
    got = ctx.stats[f"xtx:{hooks.input_hook('blocks.1.attn.W_Q')}"].double()
    assert torch.allclose(got, x.T @ x / len(x), rtol=1e-4, atol=1e-6)


def test_prefixes_equal_statistics_of_the_first_windows(tiny_model):
    from analysis.compress.calibration import calibration_prefixes

    tokens = torch.randint(0, 50, (6 * 16,), generator=torch.Generator().manual_seed(4))
    w = ["blocks.0.mlp.W_in", "blocks.1.mlp.W_out"]
    got = calibration_prefixes(tiny_model, tokens, w, [2, 5, 6], context=16, batch_size=4, max_grad_examples=5)
    for n in (2, 5, 6):
        ref = compress.calibration_stats(tiny_model, tokens[: n * 16], w, context=16, max_grad_examples=min(n, 5))
        assert set(got[n].stats) == set(ref.stats)
        for k, v in ref.stats.items():
            assert torch.allclose(got[n].stats[k], v, rtol=1e-4, atol=1e-8), (n, k)
    with pytest.raises(ValueError, match="less than"):
        calibration_prefixes(tiny_model, tokens, w, [7], context=16)
