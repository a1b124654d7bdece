"""analysis.compress.prune: magnitude pruning against direct counts; Wanda pruning against the reference rule."""

from __future__ import annotations

import pytest
import torch

from analysis import hooks
from analysis.components import components, parameter_name, weights_of
from analysis.compress import CompressionPlan, Prune, Stored, to_linear
from analysis.compress.calibration import wanda_calibration
from analysis.compress.plan import Calibration
from analysis.compress.prune import WandaPrune


def _stored(w):
    return Stored(w.clone(), 16.0, w.numel())


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.37, 0.5, 0.9])
def test_prune_zeroes_exactly_the_smallest_fraction(fraction):
    w = torch.randn(64, 48, generator=torch.Generator().manual_seed(0))
    out = Prune(fraction)(_stored(w)).weight
    zeroed = out == 0
    assert int(zeroed.sum()) == round(fraction * w.numel())
    if 0 < fraction:
        assert w[zeroed].abs().max() <= w[~zeroed].abs().min()
    assert torch.equal(out[~zeroed], w[~zeroed])  # kept weights untouched


def test_ties_are_broken_by_position():
    w = torch.tensor([[1.0, -1.0, 1.0, 2.0], [1.0, 3.0, -1.0, 0.5]])
    s = Prune(0.5)(_stored(w))  # zero 4 of 8: 0.5, then the first three of the five |w| = 1
    assert s.mask.tolist() == [[False, False, False, True], [True, True, True, False]]
    assert s.bits == min(8 * 16, 8 + 4 * 16)


def test_a_stale_threshold_hint_is_not_trusted():
    """The k-th value remembered for a weight is checked before use: here it is the wrong one."""
    w = torch.randn(30, 30, generator=torch.Generator().manual_seed(5))
    Prune(0.4)(_stored(w), name="blocks.0.mlp.W_in")  # remembers the 360th smallest |w|
    mag = w.abs().flatten()
    mag[::97] = float("inf")  # the hint's key sums |w| at a stride of 97: change no entry there
    smallest = int(mag.argmin())
    w2 = w.clone()
    w2.view(-1)[smallest] = 100.0  # same checksum, but now every order statistic moves up one
    hinted = Prune(0.4)(_stored(w2), name="blocks.0.mlp.W_in")
    fresh = Prune(0.4)(_stored(w2), name="another weight")
    assert torch.equal(hinted.mask, fresh.mask)
    assert bool(hinted.mask.view(-1)[smallest]) and int((~hinted.mask).sum()) == 360


@pytest.mark.parametrize("fraction", [1.0, -0.1, float("nan")])
def test_bad_fractions(fraction):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        Prune(fraction)


# ---- WandaPrune ----


def _reference_wanda(w_linear, xnorm, fraction):
    """The reference ``prune_wanda`` (locuslab/wanda) on the Hugging Face layout ``[d_out, d_in]``:
    ``|W| * sqrt(scaler_row)``, stable sort per output row, zero the lowest ``int(d_in * fraction)``."""
    W = w_linear.T.clone()  # [d_out, d_in]
    scaler_row = xnorm**2  # the reference's mean of squared norms; its 1/n_samples changes no row's order
    metric = W.abs() * torch.sqrt(scaler_row.reshape(1, -1))
    mask = torch.zeros_like(metric) == 1
    indices = torch.sort(metric, dim=-1, stable=True)[1][:, : int(W.shape[1] * fraction)]
    mask.scatter_(1, indices, True)
    W[mask] = 0
    return W.T


def _xnorm_calibration(weight: str, xnorm):

    return Calibration(stats={f"xnorm:{hooks.input_hook(weight)}": xnorm})


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.75])
@pytest.mark.parametrize("ties", [False, True])
def test_wanda_prune_matches_the_reference_rule(fraction, ties):

    gen = torch.Generator().manual_seed(1)
    w = torch.randn(64, 48, generator=gen)
    xnorm = torch.rand(64, generator=gen) * 10 + 0.1
    if ties:  # integer weights and norms: many equal scores, broken by input index
        w, xnorm = (
            torch.randint(-3, 4, (64, 48), generator=gen).float(),
            torch.randint(1, 3, (64,), generator=gen).float(),
        )
    name = "blocks.0.mlp.W_in"
    out = WandaPrune(fraction)(_stored(w), name=name, calibration=_xnorm_calibration(name, xnorm))
    assert torch.equal(out.weight, _reference_wanda(w, xnorm, fraction))
    if not ties:
        assert ((out.weight == 0).sum(0) == int(fraction * 64)).all()  # exactly the fraction per output column
        assert torch.equal(out.mask, out.weight != 0)


def test_wanda_prune_needs_the_input_norms():
    w = torch.randn(8, 4)
    with pytest.raises(ValueError, match="xnorm:blocks.0.ln2.hook_normalized"):
        WandaPrune(0.5)(_stored(w), name="blocks.0.mlp.W_in", calibration=Calibration())
    assert WandaPrune.data_free is False


@pytest.mark.parametrize("name", ["tiny_model", "gqa_model"])
def test_wanda_plan_zeroes_half_of_every_output_channel(request, name):

    model = request.getfixturevalue(name)
    tokens = torch.randint(0, 50, (4 * 16,), generator=torch.Generator().manual_seed(0))
    cal = wanda_calibration(model, tokens, context=16)
    plan = CompressionPlan({c: [WandaPrune(0.5)] for c in components(model)}, calibration=cal)
    params = dict(model.named_parameters())
    original = {w: to_linear(w, params[parameter_name(model, w)].detach().clone()) for w in plan.targets(model)}
    _, cache = model.run_with_cache(tokens.view(4, 16))
    with plan.applied(model):
        for w, before in original.items():
            after = to_linear(w, params[parameter_name(model, w)].detach())
            assert ((after == 0).sum(0) == before.shape[0] // 2).all(), w
        for l in range(model.cfg.n_layers):  # W_out: the reference rule with norms read from the cache directly
            w = f"blocks.{l}.mlp.W_out"
            xnorm = cache[hooks.mlp_post(l)].reshape(-1, model.cfg.d_mlp).norm(dim=0)
            assert torch.equal(to_linear(w, params[w].detach()), _reference_wanda(original[w], xnorm, 0.5))
    assert set(cal.stats) == {
        f"xnorm:{hooks.input_hook(w, model)}" for c in components(model) for w in weights_of(model, c)
    }
