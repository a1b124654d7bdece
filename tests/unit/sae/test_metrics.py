"""analysis.sae.metrics formulas on inputs whose answers are known."""

from __future__ import annotations

import pytest
import torch

from analysis import sae
from analysis.forward import windows


def test_sae_metric_formulas():
    x = torch.randn(50, 6)
    assert sae.explained_variance(x, x) == pytest.approx(1.0)
    assert sae.explained_variance(x, x.mean(0, keepdim=True).expand_as(x)) == pytest.approx(0.0, abs=1e-12)
    assert sae.ce_loss_recovered(2.0, 2.5, 4.0) == pytest.approx(0.75)


def test_loss_from_layer_matches_the_full_forward(tiny_model):
    seqs = torch.randint(0, 50, (3, 16), generator=torch.Generator().manual_seed(4))
    resid = sae.residual_cache(tiny_model, seqs)
    want = tiny_model(seqs, return_type="loss").item()
    for layer in (0, 1):
        assert sae.loss_from_layer(tiny_model, resid, seqs, layer, batch_size=2) == pytest.approx(want, abs=1e-5)


def test_sae_keys_name_hooks_and_heads(tiny_model):
    assert sae.sae_key(3) == "blocks.3.attn.hook_z" and sae.sae_key(3, 2) == "blocks.3.attn.hook_z:h2"
    assert sae.parse_key(sae.sae_key(3, 2)) == (3, 2) and sae.parse_key(sae.sae_key(12)) == (12, None)
    assert [k for k, _, _ in sae.sae_keys(tiny_model, "head", [1])] == [sae.sae_key(1, h) for h in range(4)]
    with pytest.raises(ValueError, match="granularity"):
        sae.sae_keys(tiny_model, "neuron")
    with pytest.raises(ValueError, match="context=16"):
        windows(torch.arange(10), 16)
    assert windows(torch.arange(40), 16).shape == (2, 16)
