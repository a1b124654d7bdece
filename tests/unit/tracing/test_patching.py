"""Attribution patching per component against TransformerLens's exact activation patching."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformer_lens import HookedTransformer, patching

from analysis import stats
from analysis.tracing.patching import ablation_attribution, attribution_patching

KINDS = ("attn_out", "mlp_out")


def _linear_model(tiny_cfg, initializer_range=0.3) -> HookedTransformer:
    """A tiny model whose logits are affine in every attention and MLP output: no norms, zero
    queries and keys (uniform causal attention, whatever the input) and an identity activation."""
    model = HookedTransformer(tiny_cfg(n_layers=3, normalization_type=None, initializer_range=initializer_range)).eval()
    with torch.no_grad():
        for b in model.blocks:
            for p in (b.attn.W_Q, b.attn.W_K, b.attn.b_Q, b.attn.b_K):
                p.zero_()
    for b in model.blocks:
        b.mlp.act_fn = lambda x: x
    return model


def _exact(model, corrupted, source, metric, setter) -> torch.Tensor:
    """TransformerLens's patching of each layer's whole output (every position) minus the unpatched
    metric, ``[layer, kind]``."""
    base = metric(model(corrupted)).item()
    cols = [
        patching.generic_activation_patch(model, corrupted, source, metric, setter, kind, index_axis_names=("layer",))
        for kind in KINDS
    ]
    return torch.stack(cols, 1).double() - base


def _clean_corrupted(seed=0):
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, 50, (3, 12), generator=g)
    corrupted = clean.clone()
    corrupted[:, 2:4] = torch.randint(0, 50, (3, 2), generator=g)  # two tokens replaced per row
    return clean, corrupted


def _logit_diff(logits):
    return (logits[:, -1, 3] - logits[:, -1, 7]).mean()


def _mean_loss(x):
    return lambda logits: F.cross_entropy(logits[:, :-1].flatten(0, 1), x[:, 1:].flatten())


def _patch_in(corrupted_act, index, source_act):
    return source_act


def test_attribution_patching_is_exact_for_a_linear_metric_of_a_linear_model(tiny_cfg):
    model = _linear_model(tiny_cfg)
    clean, corrupted = _clean_corrupted()
    est = attribution_patching(model, clean, corrupted, _logit_diff)
    _, cache = model.run_with_cache(clean)
    exact = _exact(model, corrupted, cache, _logit_diff, _patch_in)
    assert exact.abs().max() > 1e-2  # the patches move the metric
    torch.testing.assert_close(est.values, exact, rtol=1e-4, atol=1e-5)
    assert est.samples.shape == (3, 3, 2)
    torch.testing.assert_close(est.samples.sum(0), est.values)


def test_attribution_patching_is_not_exact_for_a_nonlinear_metric(tiny_cfg):
    """The same linear model under a loss (log-softmax is not linear): the estimate must differ."""
    model = _linear_model(tiny_cfg)
    clean, corrupted = _clean_corrupted()
    metric = _mean_loss(corrupted)
    est = attribution_patching(model, clean, corrupted, metric)
    _, cache = model.run_with_cache(clean)
    exact = _exact(model, corrupted, cache, metric, _patch_in)
    assert (est.values - exact).abs().max() > 1e-4


def _scaled_loss(model, x, hook, scale) -> float:
    """The mean loss with one component's output multiplied by ``scale`` at every position."""
    logits = model.run_with_hooks(x, fwd_hooks=[(hook, lambda act, hook: act * scale)])
    return _mean_loss(x)(logits).item()


def test_ablation_attribution_is_the_derivative_of_the_loss_along_the_removal(tiny):
    """``-act . dL/d act`` is ``d/dt L(output * (1 - t))`` at ``t = 0``: a central difference on a
    float64 model (nonlinear: LayerNorm, GELU) gives it independently of autograd."""
    model = tiny(dtype=torch.float64)
    x = torch.randint(0, 50, (4, 16), generator=torch.Generator().manual_seed(2))
    est = ablation_attribution(model, x.flatten(), context=16, batch_size=3)  # 4 windows in 2 batches
    h = 1e-4
    for l in range(model.cfg.n_layers):
        for k, kind in enumerate(KINDS):
            hook = f"blocks.{l}.hook_{kind}"
            fd = (_scaled_loss(model, x, hook, 1 - h) - _scaled_loss(model, x, hook, 1 + h)) / (2 * h)
            assert est.values[l, k].item() == pytest.approx(fd, rel=1e-5, abs=1e-8)
    assert est.samples.shape == (4, 4, 2)
    torch.testing.assert_close(est.samples.mean(0), est.values)
    # window by window: the first window's estimate is its own loss's derivative
    fd0 = (
        _scaled_loss(model, x[:1], "blocks.1.hook_mlp_out", 1 - h)
        - _scaled_loss(model, x[:1], "blocks.1.hook_mlp_out", 1 + h)
    ) / (2 * h)
    assert est.samples[0, 1, 1].item() == pytest.approx(fd0, rel=1e-5, abs=1e-8)


def test_ablation_attribution_is_a_tangent_below_exact_removal_in_a_linear_model(tiny_cfg):
    """In a linear model the loss is convex along each removal, so the first-order estimate lies
    below TransformerLens's exact zero-ablation everywhere, and ranks the components alike."""
    model = _linear_model(tiny_cfg, initializer_range=0.05)
    x = torch.randint(0, 50, (4, 12), generator=torch.Generator().manual_seed(1))
    _, cache = model.run_with_cache(x)
    zeros = {n: torch.zeros_like(a) for n, a in cache.items()}
    est = ablation_attribution(model, x.flatten(), context=12)
    exact = _exact(model, x, zeros, _mean_loss(x), _patch_in)
    assert (est.values <= exact + 1e-6).all()
    assert (exact - est.values).abs().max() > 1e-6  # not exact: the loss is curved
    assert stats.spearman(est.flat(), exact.flatten()) > 0.8


def test_ablation_attribution_ranks_a_real_model_like_exact_removal(tiny):
    model = tiny()  # 4 layers, GELU, LayerNorm, larger weights
    x = torch.randint(0, 50, (4, 16), generator=torch.Generator().manual_seed(2))
    _, cache = model.run_with_cache(x)
    zeros = {n: torch.zeros_like(a) for n, a in cache.items()}
    est = ablation_attribution(model, x.flatten(), context=16)
    exact = _exact(model, x, zeros, _mean_loss(x), _patch_in)
    assert stats.spearman(est.flat(), exact.flatten()) > 0.5


def test_parameters_and_grads_are_left_alone(tiny):
    model = tiny()
    before = {n: (p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()}
    clean, corrupted = _clean_corrupted()
    attribution_patching(model, clean, corrupted, _logit_diff)
    ablation_attribution(model, clean.flatten(), context=12)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n][0]) and p.requires_grad == before[n][1] and p.grad is None


def test_shapes_must_match(tiny):
    with pytest.raises(ValueError, match="one shape"):
        attribution_patching(tiny(), torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, 6, dtype=torch.long), None)
