"""Attribution patching against TransformerLens's own backward hooks and the exact engine."""

from __future__ import annotations

import pytest
import torch

from analysis import hooks, tracing
from analysis.studies.tracing import agreement


@pytest.mark.parametrize("fast", [True, False])
def test_attribution_equals_gradient_reference(gpt2_like, fast, random_tokens):
    """Our attribution equals (clean - corrupt) . grad from TL's own backward hooks."""
    model, tokens, span = gpt2_like, random_tokens(seed=6, n=8), (2, 4)
    result = tracing.trace(
        model, tokens, span, None, noise=0.6, n_samples=3, seed=1, window=1, method="attribution", fast=fast
    )
    eps = tracing.subject_noise(3, 2, model.cfg.d_model, 0.6, 1)
    _, clean = model.run_with_cache(tokens[None])
    acts, grads = {}, {}

    def add_noise(x, hook):
        x = x.clone()
        x[:, span[0] : span[1]] += eps
        return x

    names = [hooks.act_name(h, l) for l in range(4) for h in ("hook_resid_pre", "hook_mlp_out")]
    fwd = [("hook_embed", add_noise)] + [(n, lambda x, hook: acts.__setitem__(hook.name, x.detach())) for n in names]
    bwd = [(n, lambda g, hook: grads.__setitem__(hook.name, g.detach())) for n in names]
    with model.hooks(fwd_hooks=fwd, bwd_hooks=bwd):
        logits = model(tokens[None].expand(3, -1))
        torch.softmax(logits[:, -1], -1)[:, result.target_id].mean().backward()
    model.zero_grad(set_to_none=True)
    for hook in ("hook_resid_pre", "hook_mlp_out"):
        for l in range(4):
            name = hooks.act_name(hook, l)
            ref = ((clean[name][0] - acts[name]) * grads[name]).sum(dim=(0, 2))
            assert torch.allclose(result.indirect_effect(hook)[l], ref, atol=1e-6), name


def test_attribution_matches_exact_in_the_linear_regime(llama_like, random_tokens):
    tokens = random_tokens(seed=7, n=8)
    kw = dict(noise=1e-3, n_samples=2, window=1, kinds=("resid", "mlp", "attn"))
    exact = tracing.trace(llama_like, tokens, (2, 4), None, **kw)
    approx = tracing.trace(llama_like, tokens, (2, 4), None, method="attribution", **kw)
    for hook in exact.kinds:
        stats = agreement([exact], [approx], hook)
        assert stats.pearson > 0.99, (hook, stats.pearson)
    big = tracing.trace(llama_like, tokens, (2, 4), None, method="attribution", noise=5.0, n_samples=2, window=3)
    assert big["mlp"].shape == (4, 8)


def test_attribution_windows_are_sums_of_single_states(llama_like, random_tokens):
    tokens = random_tokens(seed=11, n=8)
    kw = dict(noise=0.5, n_samples=2, method="attribution")
    single = tracing.trace(llama_like, tokens, (2, 4), None, window=1, **kw)
    windowed = tracing.trace(llama_like, tokens, (2, 4), None, window=3, **kw)
    for hook in windowed.kinds:
        assert torch.allclose(single.with_window(3)[hook], windowed[hook], atol=1e-6)
    exact = tracing.trace(llama_like, tokens, (2, 4), None, window=1, noise=0.5, n_samples=2)
    with pytest.raises(ValueError, match="re-windowed"):
        exact.with_window(3)


def test_attribution_positions_not_asked_for_are_nan(gpt2_like, random_tokens):
    tokens = random_tokens(seed=12, n=8)
    result = tracing.trace(
        gpt2_like, tokens, (2, 4), None, noise=0.5, n_samples=2, window=1, method="attribution", positions=[3, 7]
    )
    assert result["mlp"][:, [4, 5, 6]].isnan().all()
    assert not result["mlp"][:, [3, 7]].isnan().any()
    assert torch.equal(result["mlp"][:, :2], torch.full((4, 2), result.corrupted_prob))  # before the subject
