"""AdaptiveCompress: the schedule, the EMA, the linear limit, save/load, and bad input."""

from __future__ import annotations

import pytest
import torch

from analysis.sae import activations, adaptive


def test_retention_matches_the_formula_at_its_ends_and_midpoint():
    kw = dict(r_init=0.999, r_final=0.95, warmup=100, decay=200)
    assert adaptive.retention(0, **kw) == pytest.approx(0.999, rel=1e-12)
    assert adaptive.retention(100, **kw) == pytest.approx(0.999, rel=1e-12)  # end of warmup
    assert adaptive.retention(200, **kw) == pytest.approx(0.999 - 0.049 / 2, rel=1e-12)  # midpoint
    assert adaptive.retention(300, **kw) == pytest.approx(0.95, rel=1e-12)
    assert adaptive.retention(10_000, **kw) == pytest.approx(0.95, rel=1e-12)


def test_retention_mask_keeps_the_most_important_latents():
    sae = adaptive.AdaptiveCompressTrainingSAE(
        adaptive.training_config(4, 10, r_init=0.5, r_final=0.5, warmup_steps=0, decay_steps=1)
    )
    sae.importance.copy_(torch.arange(10.0))
    assert sae.set_retention(0) == 0.5
    assert sae.retained.tolist() == [0] * 5 + [1] * 5


def test_ema_matches_the_closed_form_on_a_constant_input():
    torch.manual_seed(0)
    cfg = adaptive.training_config(
        6, 8, importance_source="latent", importance_init=0.3, alpha=0.9, warmup_steps=0, decay_steps=1
    )
    sae = adaptive.AdaptiveCompressTrainingSAE(cfg)
    x = torch.randn(16, 6)
    with torch.no_grad():
        _, latents = sae.encode_with_hidden_pre(x)
    p = (latents > 0).float().mean(0)
    for _ in range(25):
        with torch.no_grad():
            f, latents = sae.encode_with_hidden_pre(x)
        sae.update_importance(f, latents)
    expected = torch.tensor([adaptive.ema_closed_form(0.3, float(pi), 0.9, 25) for pi in p])
    torch.testing.assert_close(sae.importance, expected, rtol=1e-5, atol=1e-7)


def test_the_code_reading_never_opens_a_gate_that_starts_closed():
    sae = adaptive.AdaptiveCompressTrainingSAE(adaptive.training_config(6, 8, warmup_steps=0, decay_steps=1))
    x = torch.randn(32, 6)
    for _ in range(5):
        with torch.no_grad():
            f, latents = sae.encode_with_hidden_pre(x)
        sae.update_importance(f, latents)
    assert float(sae.importance.abs().max()) == 0.0
    with torch.no_grad():
        assert float(sae.encode(x).abs().max()) == 0.0
        torch.testing.assert_close(sae.decode(sae.encode(x)), 0.1 * x)  # only the skip is left


def test_gate_open_without_skip_is_a_linear_autoencoder():
    torch.manual_seed(1)
    sae = adaptive.AdaptiveCompressSAE(
        adaptive.AdaptiveCompressSAEConfig(d_in=5, d_sae=7, skip=0.0, layer_norm=False, relu=False)
    )
    x = torch.randn(11, 5)
    with torch.no_grad():
        out = sae.decode(sae.encode(x))
    torch.testing.assert_close(out, x @ (sae.W_enc @ sae.W_dec), rtol=1e-5, atol=1e-6)
    # linear: f(a x + b y) = a f(x) + b f(y)
    y = torch.randn(11, 5)
    with torch.no_grad():
        lhs = sae.decode(sae.encode(2 * x - 3 * y))
        rhs = 2 * sae.decode(sae.encode(x)) - 3 * sae.decode(sae.encode(y))
    torch.testing.assert_close(lhs, rhs, rtol=1e-4, atol=1e-5)


def test_decoder_adds_the_skip_of_the_encoded_input_and_refuses_a_foreign_code():
    sae = adaptive.AdaptiveCompressSAE(adaptive.AdaptiveCompressSAEConfig(d_in=4, d_sae=4))
    x = torch.randn(3, 4)
    with torch.no_grad():
        z = sae.encode(x)
        torch.testing.assert_close(sae.decode(z), z @ sae.W_dec + 0.1 * x)
        with pytest.raises(ValueError, match="decode\\(encode"):
            sae.decode(torch.zeros(5, 4))


def test_a_saved_sae_reloads_and_reconstructs_identically(tmp_path):
    from sae_lens.saes.sae import SAE

    torch.manual_seed(2)
    cfg = adaptive.training_config(
        6, 40, importance_source="latent", importance_init=1.0, warmup_steps=2, decay_steps=3
    )
    sae = adaptive.AdaptiveCompressTrainingSAE(cfg)
    sae, curve = activations.train(sae, torch.randn(200, 6), activations.TrainConfig(steps=8, batch_tokens=32))
    assert len(curve) >= 1 and int(sae.retained.sum()) == 38  # ceil(0.95 * 40)
    sae.save_inference_model(tmp_path / "ac")
    loaded = adaptive.load(tmp_path / "ac")
    again = SAE.load_from_disk(str(tmp_path / "ac"))
    x = torch.randn(9, 6)
    with torch.no_grad():
        ref = sae.decode(sae.encode(x))
        for other in (loaded, again):
            assert isinstance(other, adaptive.AdaptiveCompressSAE)
            torch.testing.assert_close(other.decode(other.encode(x)), ref, rtol=0, atol=0)
    torch.testing.assert_close(loaded.importance, sae.importance)
    torch.testing.assert_close(loaded.retained, sae.retained)


def test_training_lowers_the_loss():
    torch.manual_seed(3)
    x = torch.randn(400, 8) @ torch.randn(8, 8)
    cfg = adaptive.training_config(8, 8, importance_source="latent", importance_init=1.0, relu=True, skip=0.0)
    sae = adaptive.AdaptiveCompressTrainingSAE(cfg)
    _, curve = activations.train(sae, x, activations.TrainConfig(steps=150, batch_tokens=64, lr=3e-3, log_every=10))
    assert curve[-1]["mse_loss"] < 0.5 * curve[0]["mse_loss"]


@pytest.mark.parametrize(
    "fields, match",
    [
        (dict(width=0), "width"),
        (dict(alpha=1.0), "alpha"),
        (dict(alpha=0.0), "alpha"),
        (dict(r_init=0.9, r_final=0.95), "must not increase"),
    ],
)
def test_bad_configurations_say_what_to_fix(fields, match):
    width = fields.pop("width", 8)
    with pytest.raises(ValueError, match=match):
        adaptive.training_config(4, width, **fields)


def test_bad_inference_width_and_schedule_calls():
    with pytest.raises(ValueError, match="width"):
        adaptive.AdaptiveCompressSAEConfig(d_in=4, d_sae=0)
    with pytest.raises(ValueError, match="must not increase"):
        adaptive.retention(5, r_init=0.5, r_final=0.9)


def test_a_layer_beyond_the_model_is_refused(tiny_model):
    seqs = torch.randint(0, 50, (2, 8))
    with pytest.raises(ValueError, match="not in the model's 0..1"):
        activations.collect_resid(tiny_model, seqs, [0, 5])
    with pytest.raises(ValueError, match="Seed layer"):
        activations.relative_layers(tiny_model, [30], 26)
    assert activations.relative_layers(tiny_model, [5, 12, 19], 26) == [0, 1, 1]
