"""analysis.sae on SAEs trained through sae-lens on a tiny random model: the stream, saving and
loading, latent statistics and the density map, against direct computations."""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch

from analysis import hooks, sae


@pytest.fixture(scope="module")
def tiny_saes(tiny_cfg):
    from transformer_lens import HookedTransformer

    cfg = tiny_cfg(model_name="tiny-test")
    model = HookedTransformer(cfg).eval()
    tokens = torch.randint(0, 50, (64 * 16,), generator=torch.Generator().manual_seed(0))
    tcfg = sae.SAETrainConfig(
        train_tokens=tokens.numel(), context=16, batch_tokens=64, expansion=2, k=4, forward_batch=8, buffer_batches=2
    )
    return model, tokens, tcfg, sae.train_saes(model, tokens, tcfg)


def test_stream_serves_every_token_of_every_layer(tiny_saes):
    model, tokens, tcfg, _ = tiny_saes
    stream = sae.HookZStream(model, tokens, tcfg)
    batches = list(stream)
    n_seq = tokens.numel() // 16
    assert len(batches) == stream.n_batches == n_seq * (16 - tcfg.skip_first) // tcfg.batch_tokens
    _, cache = model.run_with_cache(tokens.view(-1, 16))
    for l in range(2):
        want = cache[hooks.z(l)][:, tcfg.skip_first :].flatten(-2).reshape(-1, 32)
        got = torch.cat([b[sae.sae_key(l)] for b in batches])
        torch.testing.assert_close(got.sort(0).values, want.sort(0).values, atol=1e-6, rtol=1e-6)


def test_pool_serves_what_the_stream_would_collect_without_a_second_forward(tiny_saes):
    model, tokens, tcfg, _ = tiny_saes
    cfg = dataclasses.replace(tcfg, epochs=2)
    pool = sae.ActivationPool(model, tokens, cfg.context, cfg.skip_first, forward_batch=8)
    half = tokens[: tokens.numel() // 2]
    calls = []
    handle = model.blocks[0].attn.hook_z.register_forward_hook(lambda *a: calls.append(1))
    try:
        for toks in (tokens, half):  # the full stream and a prefix, one forward pass between them
            want = list(sae.HookZStream(model, toks, cfg))
            n_calls = len(calls)
            got = list(sae.HookZStream(model, toks, cfg, pool=pool))
            assert len(got) == len(want)
            for a, b in zip(got, want):
                torch.testing.assert_close(a[sae.sae_key(1)], b[sae.sae_key(1)], atol=1e-6, rtol=1e-6)
            if toks is half:
                assert len(calls) == n_calls  # the pool was already filled: no forward pass
    finally:
        handle.remove()
    with pytest.raises(ValueError, match="pool"):
        sae.HookZStream(model, torch.flip(tokens, [0]), cfg, pool=pool)


def test_saved_sae_reloads_bit_identically(tiny_saes, tmp_path):
    from sae_lens import SAE
    from safetensors.torch import load_file

    model, tokens, tcfg, saes = tiny_saes
    sae.save_saes(saes, tmp_path / "saes")
    key = sae.sae_key(1)
    loaded = SAE.load_from_disk(str(tmp_path / "saes" / key))  # sae-lens's own loader
    assert loaded.cfg.metadata.hook_name == key and loaded.cfg.metadata.model_name == "tiny-test"
    on_disk = load_file(str(tmp_path / "saes" / key / "sae_weights.safetensors"))
    for name, t in on_disk.items():  # the weights in memory are the file's, bit for bit
        assert torch.equal(loaded.state_dict()[name], t), name
    x = torch.randn(20, 32)
    with torch.no_grad():  # and they compute what the trained SAE computed (its decoder norm folded in)
        torch.testing.assert_close(
            loaded.decode(loaded.encode(x)), saes[key].decode(saes[key].encode(x)), atol=1e-5, rtol=1e-5
        )
    loaded.save_model(tmp_path / "again")
    again = SAE.load_from_disk(str(tmp_path / "again"))
    for name, t in loaded.state_dict().items():
        assert torch.equal(t, again.state_dict()[name]), name
    ours = sae.load_saes(tmp_path / "saes", model)
    assert set(ours) == {sae.sae_key(0), sae.sae_key(1)}


def test_sae_for_another_model_or_hook_is_refused(tiny_saes, tmp_path, tiny_model):
    model, tokens, tcfg, saes = tiny_saes
    sae.save_saes(saes, tmp_path / "saes")
    path = tmp_path / "saes" / sae.sae_key(0)
    with pytest.raises(sae.SAEMismatchError, match="hook 'blocks.0.attn.hook_z' \\(expected 'blocks.1.attn.hook_z'\\)"):
        sae.load_sae(path, model, hooks.z(1))
    with pytest.raises(sae.SAEMismatchError, match="model 'tiny-test'"):
        sae.load_sae(path, tiny_model, hooks.z(0))


def test_latent_stats_and_density_map(tiny_saes):
    model, tokens, tcfg, saes = tiny_saes
    groups = {"a": tokens[:128], "b": tokens[128:256]}
    stats = sae.latent_stats(model, saes, groups, context=16)
    key = sae.sae_key(0)
    assert stats.l0(key) == pytest.approx(tcfg.k)  # TopK: exactly k active (activations are positive)
    # explained variance agrees with a direct computation
    _, cache = model.run_with_cache(tokens[:256].view(-1, 16))
    x = cache[hooks.z(0)][:, 1:].flatten(-2).reshape(-1, 32)  # position 0 is left out
    with torch.no_grad():
        x_hat = saes[key].decode(saes[key].encode(x))
    assert stats.ev(key) == pytest.approx(sae.explained_variance(x, x_hat), abs=1e-6)
    mass, alive = sae.head_mass(stats, saes, 2, 4)
    dec = sae.effective_decoder(saes[key])
    torch.testing.assert_close(mass[0, 2, 1], stats.sums[key][1] * dec[:, 16:24].norm(dim=-1).double())
    dm = sae.density_map(stats, saes, 2, 4)
    assert dm["density"].shape == (2, 4) and torch.isfinite(dm["density"]).all()


def test_per_head_saes_give_a_density_map(tiny_saes):
    model, tokens, tcfg, _ = tiny_saes
    hcfg = dataclasses.replace(tcfg, granularity="head", expansion=4)
    saes = sae.train_saes(model, tokens[:512], hcfg)
    assert set(saes) == {sae.sae_key(l, h) for l in range(2) for h in range(4)}
    assert all(s.cfg.d_in == 8 and s.cfg.metadata.hook_head_index == int(k[-1]) for k, s in saes.items())
    stats = sae.latent_stats(model, saes, {"a": tokens[:128], "b": tokens[128:256]}, context=16)
    mass, alive = sae.head_mass(stats, saes, 2, 4)
    key = sae.sae_key(1, 2)
    want = stats.sums[key] * sae.effective_decoder(saes[key]).norm(dim=-1).double()[None]
    torch.testing.assert_close(mass[1, 2], want)
    dm = sae.density_map(stats, saes, 2, 4)
    assert ((dm["density"] > 0) & (dm["density"] <= 1)).all()


def test_importing_sets_no_environment_and_training_restores_it(tiny_saes, monkeypatch):
    import importlib

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "false")
    for name in ("analysis.sae.training", "analysis.sae", "analysis.wanda"):  # they define no classes
        importlib.reload(importlib.import_module(name))
    assert "WANDB_MODE" not in os.environ and os.environ["WANDB_SILENT"] == "false"
    model, tokens, tcfg, _ = tiny_saes
    sae.train_saes(model, tokens[:256], dataclasses.replace(tcfg, batch_tokens=64), layers=[0])
    assert "WANDB_MODE" not in os.environ and os.environ["WANDB_SILENT"] == "false"


def test_trained_saes_are_cached_by_model_content(tiny_saes, tmp_path, monkeypatch):
    from analysis import cache

    monkeypatch.setattr(cache, "CACHE_DIR", tmp_path)
    model, tokens, tcfg, _ = tiny_saes
    small = dataclasses.replace(tcfg, train_tokens=256)
    first = sae.trained_saes(model, tokens[:256], small, layers=[0])
    again = sae.trained_saes(model, tokens[:256], small, layers=[0])  # reloaded, not retrained
    assert len(list((tmp_path / "sae").iterdir())) == 1
    assert torch.equal(first[sae.sae_key(0)].W_dec, again[sae.sae_key(0)].W_dec)
    with torch.no_grad():  # same name, other weights: another entry
        model.blocks[0].attn.W_O.mul_(2)
    try:
        sae.trained_saes(model, tokens[:256], small, layers=[0])
    finally:
        with torch.no_grad():
            model.blocks[0].attn.W_O.div_(2)
    assert len(list((tmp_path / "sae").iterdir())) == 2
