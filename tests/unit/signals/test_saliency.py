"""analysis.saliency: Fisher, Wanda and lens-KL-gain component scores against plain recomputations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformer_lens import HookedTransformer

from analysis import hooks, saliency, wanda
from analysis.components import component, parameter_name, weights_of
from analysis.scores import gradient_magnitude

CTX = 16


def _tokens(n_windows: int = 5, seed: int = 0):
    return torch.randint(0, 50, (n_windows * CTX,), generator=torch.Generator().manual_seed(seed))


def _model(request, name):
    return request.getfixturevalue(name)


# ---- Fisher ----


@pytest.mark.parametrize("name", ["tiny_model", "gqa_model"])
def test_fisher_matches_a_per_window_autograd_loop(request, name):
    model = _model(request, name)
    tokens = _tokens()
    params = dict(model.named_parameters())
    sentinel = torch.full_like(params["blocks.0.mlp.W_in"], 3.0)
    params["blocks.0.mlp.W_in"].grad = sentinel.clone()
    params["blocks.1.attn.W_Q"].requires_grad_(False)
    got = saliency.fisher(model, tokens, context=CTX, batch_size=2)
    assert torch.equal(params["blocks.0.mlp.W_in"].grad, sentinel)  # .grad left as found
    assert not params["blocks.1.attn.W_Q"].requires_grad and params["blocks.0.attn.W_Q"].requires_grad
    params["blocks.1.attn.W_Q"].requires_grad_(True)

    want = torch.zeros(5, model.cfg.n_layers, 2, dtype=torch.float64)
    for i, window in enumerate(tokens.view(5, CTX)):
        model.zero_grad(set_to_none=True)
        model(window[None], return_type="loss").backward()
        for l in range(model.cfg.n_layers):
            for k, kind in enumerate(("attn", "mlp")):
                for w in weights_of(model, component(l, kind)):
                    want[i, l, k] += params[parameter_name(model, w, params)].grad.double().pow(2).sum()
    model.zero_grad(set_to_none=True)
    assert got.samples.shape == (5, model.cfg.n_layers, 2)
    torch.testing.assert_close(got.samples, want, rtol=1e-4, atol=0)
    torch.testing.assert_close(got.values, want.mean(0), rtol=1e-4, atol=0)


def test_fisher_is_at_least_the_gradient_magnitude(tiny_model):
    """Jensen: the mean of squared per-window gradients bounds the squared mean gradient."""
    tokens = _tokens(6)
    f = saliency.fisher(tiny_model, tokens, context=CTX, batch_size=4)
    g = gradient_magnitude(tiny_model, tokens, context=CTX, batch_size=4, cache=False)
    assert (f.values >= g.values * (1 - 1e-6)).all()
    assert (f.values > 1.2 * g.values).any()  # random text: the window gradients do not all agree


# ---- Wanda ----


@pytest.mark.parametrize("name", ["tiny_model", "gqa_model"])
def test_wanda_attention_equals_the_sum_of_head_scores(request, name):
    model = _model(request, name)
    tokens = _tokens(4)
    got = saliency.wanda(model, tokens, context=CTX)
    heads = wanda.wanda_head_scores(model, wanda.input_norms(model, tokens, context=CTX)).sum(1)
    torch.testing.assert_close(got.values[:, 0].float(), heads, rtol=1e-4, atol=0)
    assert got.samples is None


@pytest.mark.parametrize("name", ["tiny_model", "gqa_model"])
def test_wanda_mlp_equals_a_plain_recomputation(request, name):
    model = _model(request, name)
    tokens = _tokens(4)
    got = saliency.wanda(model, tokens, context=CTX)
    ln2_out = {}  # what the MLP really reads: the ln2 module's output (a plain torch hook)
    handles = [
        model.blocks[l].ln2.register_forward_hook(lambda m, i, o, l=l: ln2_out.__setitem__(l, o))
        for l in range(model.cfg.n_layers)
    ]
    _, cache = model.run_with_cache(tokens.view(4, CTX))
    for h in handles:
        h.remove()
    for l in range(model.cfg.n_layers):
        mlp = model.blocks[l].mlp
        x = ln2_out[l].reshape(-1, model.cfg.d_model).norm(dim=0)  # [d_model]
        post = cache[hooks.mlp_post(l)].reshape(-1, model.cfg.d_mlp).norm(dim=0)  # [d_mlp]
        want = (mlp.W_in.abs().T @ x).sum() + (mlp.W_out.abs().T @ post).sum()
        if model.cfg.gated_mlp:
            want += (mlp.W_gate.abs().T @ x).sum()
        assert got.values[l, 1].item() == pytest.approx(want.item(), rel=1e-4)


def test_wanda_doubles_when_the_mlp_inputs_double(tiny_cfg):
    """ReLU is homogeneous: doubling ln2's output and b_in doubles the inputs of W_in and W_out."""
    model = HookedTransformer(tiny_cfg(act_fn="relu")).eval()
    tokens = _tokens(4)
    before = saliency.wanda(model, tokens, context=CTX).values
    with torch.no_grad():
        for p in (model.blocks[0].ln2.w, model.blocks[0].ln2.b, model.blocks[0].mlp.b_in):
            p.mul_(2)
    after = saliency.wanda(model, tokens, context=CTX).values
    assert after[0, 1].item() == pytest.approx(2 * before[0, 1].item(), rel=1e-5)
    assert after[0, 0].item() == pytest.approx(before[0, 0].item(), rel=1e-6)  # upstream: unchanged


# ---- Lens KL gain ----


def _reference_kl(model, tokens, translators=None):
    """``[stream]``: KL(p_model || lens(x^s)) over every token, from run_with_cache and F.kl_div."""
    L = model.cfg.n_layers
    logits, cache = model.run_with_cache(tokens.view(-1, CTX))
    final = logits.log_softmax(-1).reshape(-1, logits.shape[-1])
    out = []
    for s in range(L + 1):
        x = cache[hooks.resid_pre(s)] if s < L else cache[hooks.resid_post(L - 1)]
        if translators and 0 < s < L and s - 1 in translators:
            x = translators[s - 1](x)
        lens = (model.ln_final(x) @ model.W_U + model.b_U).log_softmax(-1).reshape(-1, logits.shape[-1])
        out.append(F.kl_div(lens, final, log_target=True, reduction="batchmean").double())
    return torch.stack(out)


@pytest.mark.parametrize("name", ["tiny_model", "gqa_model"])
def test_lens_gains_telescope_to_the_embedding_kl(request, name):
    model = _model(request, name)
    tokens = _tokens(4)
    kl = saliency.lens_kl(model, tokens, context=CTX, batch_size=3)
    ref = _reference_kl(model, tokens)
    torch.testing.assert_close(kl.mean(0), ref, rtol=1e-4, atol=1e-6)
    assert kl[:, -1].abs().max() < 1e-6  # the logit lens of the last stream is the model itself
    gain = saliency.lens_kl_gain(model, tokens, context=CTX, batch_size=3)
    torch.testing.assert_close(gain.values[:, 0], ref[:-1] - ref[1:], rtol=1e-4, atol=1e-6)
    assert torch.equal(gain.values[:, 0], gain.values[:, 1])  # a block score
    assert gain.values[:, 0].sum().item() == pytest.approx(ref[0].item(), rel=1e-4)
    assert gain.samples.shape == (4, model.cfg.n_layers, 2)


def test_an_identity_block_gains_nothing(tiny_cfg):
    model = HookedTransformer(tiny_cfg(n_layers=3)).eval()
    with torch.no_grad():
        for p in (model.blocks[1].attn.W_O, model.blocks[1].attn.b_O, model.blocks[1].mlp.W_out):
            p.zero_()
        model.blocks[1].mlp.b_out.zero_()
    gain = saliency.lens_kl_gain(model, _tokens(4), context=CTX)
    assert gain.values[1].abs().max() < 1e-9
    assert gain.values[0, 0].abs() > 1e-4 and gain.values[2, 0].abs() > 1e-4


def test_translators_apply_to_their_stream_only(tiny_cfg):
    model = HookedTransformer(tiny_cfg(n_layers=3)).eval()
    tokens = _tokens(4)
    gen = torch.Generator().manual_seed(1)
    A = torch.eye(32) + 0.3 * torch.randn(32, 32, generator=gen)
    translators = {1: lambda h: h @ A.to(h.dtype), 2: lambda h: 0 * h}  # 2 = L - 1: ignored
    got = saliency.lens_kl_gain(model, tokens, context=CTX, translators=translators)
    ref = _reference_kl(model, tokens, {1: translators[1]})
    torch.testing.assert_close(got.values[:, 0], ref[:-1] - ref[1:], rtol=1e-4, atol=1e-6)
    plain = saliency.lens_kl_gain(model, tokens, context=CTX)
    assert not torch.isclose(got.values[1, 0], plain.values[1, 0])
    assert got.name == "tuned-lens KL gain" and plain.name == "logit-lens KL gain"
    with pytest.raises(ValueError, match="keyed by the layer"):
        saliency.lens_kl(model, tokens, context=CTX, translators={3: translators[1]})
