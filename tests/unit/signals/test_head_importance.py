"""Per-head importance signals beside Wanda: weight magnitude and the gradient score (analysis.wanda),
causal tracing of single heads and its attribution-patching estimate (analysis.scores), each
against a direct computation."""

from __future__ import annotations

import pytest
import torch

from analysis import hooks, scores, wanda
from analysis.components import ATTN_WEIGHTS, parameter_name


def _attn_params(model):
    params = dict(model.named_parameters())
    return {
        (l, w): params[parameter_name(model, f"blocks.{l}.attn.{w}", params)]
        for l in range(model.cfg.n_layers)
        for w in ATTN_WEIGHTS
    }


@pytest.mark.parametrize("fixture", ["tiny_model", "gqa_model"])
def test_magnitude_is_wanda_with_unit_norms_and_counts_every_weight_once(fixture, request):
    model = request.getfixturevalue(fixture)
    ones = {
        hooks.input_hook(f"blocks.{l}.attn.{w}", model): torch.ones(
            model.cfg.n_heads * model.cfg.d_head if w == "W_O" else model.cfg.d_model
        )
        for l in range(model.cfg.n_layers)
        for w in ("W_Q", "W_O")
    }
    mag = wanda.magnitude_head_scores(model)
    torch.testing.assert_close(mag, wanda.wanda_head_scores(model, ones))
    for l in range(model.cfg.n_layers):
        total = sum(p.detach().abs().sum() for (k, _), p in _attn_params(model).items() if k == l)
        assert mag[l].sum().item() == pytest.approx(total.item(), rel=1e-5)


@pytest.mark.parametrize("fixture", ["tiny_model", "gqa_model"])
def test_gradient_score_is_weight_times_gradient(fixture, request):
    model = request.getfixturevalue(fixture)
    tokens = torch.randint(0, 50, (2 * 16,), generator=torch.Generator().manual_seed(0))
    got = wanda.gradient_head_scores(model, tokens, context=16)
    params = _attn_params(model)
    for p in params.values():
        p.requires_grad_(True)
    loss = model(tokens.view(2, 16), return_type="loss")
    grads = torch.autograd.grad(loss, list(params.values()))
    for l in range(model.cfg.n_layers):
        total = sum((p.detach() * g).abs().sum() for ((k, _), p), g in zip(params.items(), grads) if k == l)
        assert got[l].sum().item() == pytest.approx(total.item(), rel=1e-4)
    q = params[(1, "W_Q")]
    direct_q = (q.detach() * grads[list(params).index((1, "W_Q"))]).abs()[2].sum()
    assert got[1, 2].item() >= direct_q.item() - 1e-6  # a head's score includes its own W_Q columns


def _pairs():
    g = torch.Generator().manual_seed(5)
    clean = torch.randint(0, 50, (3, 6), generator=g)
    corrupt = clean.clone()
    corrupt[:, 1:3] = torch.randint(0, 50, (3, 2), generator=g)  # the "subject" differs
    return clean, corrupt, torch.tensor([5, 5, 5]), torch.tensor([7, 8, 9])


def test_head_patching_restores_one_head_as_a_direct_run_does(tiny_model):
    clean, corrupt, last, target = _pairs()
    got = scores.head_patching(tiny_model, clean, corrupt, last, target)
    _, cache = tiny_model.run_with_cache(clean)
    rows = torch.arange(3)

    def p_of(toks, fwd=()):
        logits = tiny_model.run_with_hooks(toks, fwd_hooks=list(fwd))[rows, last]
        return logits.softmax(-1)[rows, target]

    base = p_of(corrupt)
    for l, h in [(0, 1), (1, 3)]:

        def restore(z, hook, l=l, h=h):
            z = z.clone()
            z[:, :, h] = cache[hooks.z(l)][:, :, h]
            return z

        want = (p_of(corrupt, [(hooks.z(l), restore)]) - base).mean()
        assert got[l, h].item() == pytest.approx(want.item(), abs=1e-6)
    # nothing to restore when the prompts are the same
    assert scores.head_patching(tiny_model, clean, clean, last, target).abs().max() < 1e-6


def test_head_attribution_is_the_first_order_estimate(tiny_model):
    clean, corrupt, last, target = _pairs()
    got = scores.head_attribution(tiny_model, clean, corrupt, last, target)
    assert got.shape == (2, 4)
    assert scores.head_attribution(tiny_model, clean, clean, last, target).abs().max() < 1e-7
    # a restoration scaled by ε changes p by ε times the estimate, to first order
    _, cache = tiny_model.run_with_cache(clean)
    _, ccache = tiny_model.run_with_cache(corrupt)
    rows, eps, (l, h) = torch.arange(3), 1e-3, (0, 2)

    def nudge(z, hook):
        z = z.clone()
        z[:, :, h] += eps * (cache[hooks.z(l)][:, :, h] - ccache[hooks.z(l)][:, :, h])
        return z

    def p_of(fwd=()):
        logits = tiny_model.run_with_hooks(corrupt, fwd_hooks=list(fwd))[rows, last]
        return logits.double().softmax(-1)[rows, target]

    slope = ((p_of([(hooks.z(l), nudge)]) - p_of()) / eps).mean()
    assert got[l, h].item() == pytest.approx(slope.item(), rel=2e-2, abs=1e-6)
