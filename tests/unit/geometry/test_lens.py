"""Lens statistics and early exit on constructed inputs and a tiny model."""

from __future__ import annotations

import pytest
import torch

from analysis import geometry


def constructed():
    """Three layers, four tokens: token 0 is confident (and right) from layer 0; token 1 from
    layer 1 but with a different top-1 than the final one; token 2 never before the end; token 3
    confident but wrong at layer 0, confident and right at layer 1."""
    conf = torch.tensor([[0.95, 0.2, 0.1, 0.95], [0.99, 0.97, 0.2, 0.95], [0.99, 0.99, 0.5, 0.4]])
    top = torch.tensor([[7, 1, 1, 9], [7, 2, 1, 5], [7, 3, 4, 5]])
    logp = torch.log(torch.tensor([[0.5, 0.1, 0.1, 0.1], [0.5, 0.1, 0.1, 0.1], [0.6, 0.6, 0.2, 0.2]]))
    return geometry.LensStats(conf, top, logp, torch.zeros(3, 4))


def test_exit_layers_and_easy_share():
    s = constructed()
    assert geometry.exit_layers(s, 0.9).tolist() == [0, 1, 2, 0]
    assert geometry.easy_layers(s, 0.9).tolist() == [0, 2, 2, 1]
    r = geometry.early_exit(s, 0.9)
    assert r.exit_share == pytest.approx(0.75)
    assert r.easy_share == pytest.approx(0.5)  # token 1 is never right before the end
    assert r.compute_saved == pytest.approx(((2 / 3) + (1 / 3) + (2 / 3)) / 4)
    assert r.nll > r.full_nll


def test_unreachable_threshold_exits_nothing():
    r = geometry.early_exit(constructed(), 1.01)
    assert r.easy_share == 0 and r.exit_share == 0 and r.compute_saved == 0
    assert r.delta_ppl == pytest.approx(0.0)


def test_logit_lens_last_layer_is_the_model(gqa_model):
    tokens = torch.randint(0, 50, (64,), generator=torch.Generator().manual_seed(0))
    s = geometry.lens_stats(gqa_model, tokens, context=32)
    logp = gqa_model(tokens.view(2, 32)).log_softmax(-1)[:, :-1]
    ref = logp.gather(-1, tokens.view(2, 32)[:, 1:, None]).reshape(-1)
    torch.testing.assert_close(s.logp_target[-1], ref, rtol=1e-4, atol=1e-5)
    assert torch.all(s.kl_to_final[-1].abs() < 1e-5)
    assert s.confidence.shape == (gqa_model.cfg.n_layers, 62)


def test_easy_share_interval_resamples_windows():
    """Every token of a window agrees with the others: the interval stands on 4 windows, not 8 tokens."""
    L, per = 3, 2
    easy = torch.tensor([0, 0, 2, 2, 0, 0, 2, 2])  # windows 0 and 2 easy, 1 and 3 not
    stats = geometry.LensStats(
        torch.zeros(L, 8), torch.zeros(L, 8, dtype=torch.long), torch.zeros(L, 8), torch.zeros(L, 8)
    )
    result = geometry.ExitResult(0.9, 0.5, 0.5, 0.0, 0.0, 0.0, easy, easy)
    lo, hi, windows = geometry.easy_share_ci(result, stats, per)
    assert windows == 4 and lo < 0 < 1 < hi  # t on 3 df over 4 windows that are 0 or 1
    share, lo2, hi2, g = geometry.window_share(easy < L - 1, per)
    assert share == 0.5 and (lo2, hi2, g) == (lo, hi, 4)
    with pytest.raises(ValueError, match="per_window"):
        geometry.window_share(easy < L - 1, 0)
