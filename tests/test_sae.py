"""analysis.sae and the head operations of analysis.compress: known answers and independent references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.stats import spearmanr

from analysis import compress
from analysis import sae as S


# --------------------------------------------------------------------------------------
# Capability density on constructed activations
# --------------------------------------------------------------------------------------


def test_uniform_mass_has_full_density():
    mass = torch.ones(3, 8)  # 3 groups using 8 latents alike
    d = S.capability_density(mass)
    for part in ("breadth", "entropy", "consistency", "density"):
        assert d[part].item() == pytest.approx(1.0)


def test_one_latent_has_zero_entropy_and_minimal_breadth():
    mass = torch.zeros(2, 10)
    mass[:, 4] = 3.0
    alive = torch.ones(10, dtype=torch.bool)
    assert S.feature_breadth(mass, alive).item() == pytest.approx(1 / 10)
    assert S.activation_entropy(mass, alive).item() == pytest.approx(0.0)
    assert S.cross_input_consistency(mass).item() == pytest.approx(1.0)
    assert S.capability_density(mass, alive)["density"].item() == pytest.approx(0.0)


def test_half_the_latents():
    mass = torch.zeros(2, 8)
    mass[:, :4] = 1.0
    alive = torch.ones(8, dtype=torch.bool)
    assert S.feature_breadth(mass, alive).item() == pytest.approx(0.5)
    assert S.activation_entropy(mass, alive).item() == pytest.approx(math.log(4) / math.log(8))


def test_breadth_threshold_counts_latents_above_eps_of_uniform_share():
    mass = torch.tensor([[0.5, 0.45, 0.05, 0.0]])  # eps / |A| = 0.1 / 4 = 0.025
    alive = torch.ones(4, dtype=torch.bool)
    assert S.feature_breadth(mass, alive, eps=0.1).item() == pytest.approx(0.75)
    assert S.feature_breadth(mass, alive, eps=0.5).item() == pytest.approx(0.5)  # threshold 0.125


def test_entropy_matches_direct_formula():
    p = torch.tensor([0.5, 0.25, 0.125, 0.125])
    want = -(p * p.log()).sum() / math.log(4)
    assert S.activation_entropy(p[None] * 7).item() == pytest.approx(want.item())


def test_disjoint_domains_have_zero_consistency():
    mass = torch.zeros(2, 6)
    mass[0, :3] = 1.0
    mass[1, 3:] = 2.0
    assert S.cross_input_consistency(mass).item() == pytest.approx(0.0, abs=1e-12)


def test_consistency_matches_scipy_jensen_shannon():
    rng = np.random.default_rng(0)
    mass = torch.tensor(rng.random((4, 12)) * (rng.random((4, 12)) > 0.3))
    q = mass / mass.sum(-1, keepdim=True)
    pairs = [(a, b) for a in range(4) for b in range(a + 1, 4)]
    want = 1 - np.mean([jensenshannon(q[a].numpy(), q[b].numpy(), base=2) ** 2 for a, b in pairs])
    assert S.cross_input_consistency(mass).item() == pytest.approx(want, abs=1e-10)


def test_density_is_geometric_mean_and_batches():
    rng = np.random.default_rng(1)
    mass = torch.tensor(rng.random((2, 3, 4, 16)))  # [layer, head, group, latent]
    d = S.capability_density(mass)
    assert d["density"].shape == (2, 3)
    want = (d["breadth"] * d["entropy"] * d["consistency"]) ** (1 / 3)
    torch.testing.assert_close(d["density"], want)
    single = S.capability_density(mass[1, 2])
    assert single["density"].item() == pytest.approx(d["density"][1, 2].item())


def test_bad_activations_give_clear_errors():
    with pytest.raises(ValueError, match="Empty activations"):
        S.capability_density(torch.zeros(0, 5))
    with pytest.raises(ValueError, match="Empty activations"):
        S.capability_density(torch.zeros(3, 0))
    with pytest.raises(ValueError, match="dead"):
        S.capability_density(torch.ones(2, 4), alive=torch.zeros(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="dead"):
        S.capability_density(torch.zeros(2, 4))  # nothing ever fired
    with pytest.raises(ValueError, match="two groups"):
        S.cross_input_consistency(torch.ones(1, 4))
    mass = torch.ones(2, 4)
    mass[1] = 0
    with pytest.raises(ValueError, match="no latent mass in one evaluation group"):
        S.cross_input_consistency(mass)


# --------------------------------------------------------------------------------------
# Statistics, allocation, break points
# --------------------------------------------------------------------------------------


def test_spearman_and_rank_test_match_scipy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=60)
    y = x + 0.5 * rng.normal(size=60)
    y[:5] = y[5]  # ties
    assert S.spearman(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    res = S.rank_test(x, y, n_boot=300, n_perm=300)
    assert res["ci_low"] < res["rho"] < res["ci_high"]
    assert res["p_perm"] < 0.05
    null = S.rank_test(x, rng.normal(size=60), n_boot=100, n_perm=300, seed=1)
    assert null["p_perm"] > 0.01


def test_allocation_matches_mean_and_orders_by_importance():
    imp = torch.arange(12.0).view(3, 4)
    s = S.allocate(imp, 0.5, spread=0.5)
    assert s.mean().item() == pytest.approx(0.5, abs=1e-6)
    assert s.flatten()[0] > s.flatten()[-1]  # least important pruned most
    assert s.min().item() == pytest.approx(0.25, abs=1e-6) and s.max().item() == pytest.approx(0.75, abs=1e-6)
    r = S.allocate(imp, 0.5, spread=0.5, seed=3)
    torch.testing.assert_close(r.flatten().sort().values, s.flatten().sort().values)
    assert torch.all(S.allocate(None, 0.7, shape=(3, 4)) == 0.7)
    assert S.allocate(imp, 0.9, spread=0.5).max().item() <= 0.99 + 1e-6


def test_break_point_interpolates():
    assert S.break_point([0.5, 0.9], [0.1, 0.3], full=0.4) == pytest.approx(0.5 + 0.1 / 0.2 * 0.4)
    assert S.break_point([0.5], [0.0], full=1.0) == pytest.approx(0.75)
    assert math.isnan(S.break_point([0.5], [0.0], full=0.0))


def test_sae_metric_formulas():
    x = torch.randn(50, 6)
    assert S.explained_variance(x, x) == pytest.approx(1.0)
    assert S.explained_variance(x, x.mean(0, keepdim=True).expand_as(x)) == pytest.approx(0.0, abs=1e-12)
    assert S.ce_loss_recovered(2.0, 2.5, 4.0) == pytest.approx(0.75)


# --------------------------------------------------------------------------------------
# Wanda per head
# --------------------------------------------------------------------------------------


def _gqa_model():
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=2, d_model=32, d_head=8, n_heads=4, n_key_value_heads=2, d_mlp=64,
                                  n_ctx=64, d_vocab=50, act_fn="silu", normalization_type="RMS",
                                  positional_embedding_type="rotary", rotary_dim=8, gated_mlp=True, seed=0)
    return HookedTransformer(cfg).eval()


@pytest.mark.parametrize("gqa", [False, True])
def test_wanda_scores_match_direct_computation(tiny_model, gqa):
    model = _gqa_model() if gqa else tiny_model
    tokens = torch.randint(0, 50, (4 * 16,), generator=torch.Generator().manual_seed(0))
    norms = S.input_norms(model, tokens, context=16)
    got = S.wanda_head_scores(model, norms)
    ln_out = {}  # what the attention really reads: the ln1 module's output (a plain torch hook)
    handles = [model.blocks[l].ln1.register_forward_hook(lambda m, i, o, l=l: ln_out.__setitem__(l, o))
               for l in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(tokens.view(4, 16))
    for h in handles:
        h.remove()
    H, kv = model.cfg.n_heads, model.cfg.n_key_value_heads or model.cfg.n_heads
    for l in range(model.cfg.n_layers):
        xn = ln_out[l].reshape(-1, model.cfg.d_model).norm(dim=0)  # [d_model]
        z = cache[f"blocks.{l}.attn.hook_z"]  # [b, p, H, d_head]
        attn = model.blocks[l].attn
        WK = attn._W_K if gqa else attn.W_K
        WV = attn._W_V if gqa else attn.W_V
        for h in range(H):
            g = h // (H // kv)
            zn = z[:, :, h].reshape(-1, model.cfg.d_head).norm(dim=0)  # [d_head]
            want = (attn.W_Q[h].abs() * xn[:, None]).sum()
            want += ((WK[g].abs() * xn[:, None]).sum() + (WV[g].abs() * xn[:, None]).sum()) / (H // kv)
            want += (attn.W_O[h].abs() * zn[:, None]).sum()
            assert got[l, h].item() == pytest.approx(want.item(), rel=1e-4)


# --------------------------------------------------------------------------------------
# Head operations
# --------------------------------------------------------------------------------------


def test_prune_heads_equals_zero_ablating_hook_z(tiny_model):
    tokens = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(1))

    def ablate(z, hook):
        z = z.clone()
        z[..., [1, 3], :] = 0
        return z

    want = tiny_model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.attn.hook_z", ablate)])
    plan = compress.CompressionPlan({"blocks.1.attn": [compress.PruneHeads((1, 3))]})
    with plan.applied(tiny_model) as report:
        got = tiny_model(tokens)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # Q and O lose 2 of 4 heads (stored as a smaller dense matrix); K and V keep theirs (no GQA: own slices go too)
    assert report.per_weight["blocks.1.attn.W_O"] == 32 * 32 * 16 // 2


def test_prune_heads_keeps_shared_kv_until_whole_group_goes():
    model = _gqa_model()
    ctx = compress.Context(model=model)
    wk = compress.to_linear("blocks.0.attn.W_K", model.blocks[0].attn._W_K.detach())
    stored = compress.Stored(wk.clone(), 16, wk.numel())
    one = compress.PruneHeads((0,))(stored, name="blocks.0.attn.W_K", context=ctx)
    assert torch.equal(one.weight, wk)  # head 1 still uses KV group 0
    both = compress.PruneHeads((0, 1))(stored, name="blocks.0.attn.W_K", context=ctx)
    assert (both.weight[:, :8] == 0).all() and torch.equal(both.weight[:, 8:], wk[:, 8:])


def test_head_sparsity_prunes_each_head_to_its_fraction():
    model = _gqa_model()
    ctx = compress.Context(model=model)
    fr = (0.0, 0.5, 0.25, 0.75)
    wq = compress.to_linear("blocks.0.attn.W_Q", model.blocks[0].attn.W_Q.detach())
    out = compress.HeadSparsity(fr)(compress.Stored(wq.clone(), 16, wq.numel()), name="blocks.0.attn.W_Q", context=ctx)
    for h, f in enumerate(fr):
        sl = out.weight[:, h * 8 : (h + 1) * 8]
        assert int((sl == 0).sum()) == round(f * sl.numel())
        kept = wq[:, h * 8 : (h + 1) * 8].abs()[sl != 0]
        dropped = wq[:, h * 8 : (h + 1) * 8].abs()[sl == 0]
        if len(dropped) and len(kept):
            assert dropped.max() <= kept.min()  # the smallest magnitudes went
    wk = compress.to_linear("blocks.0.attn.W_K", model.blocks[0].attn._W_K.detach())
    out = compress.HeadSparsity(fr)(compress.Stored(wk.clone(), 16, wk.numel()), name="blocks.0.attn.W_K", context=ctx)
    assert int((out.weight[:, :8] == 0).sum()) == round(0.25 * 32 * 8)  # group 0: mean(0, 0.5)
    assert int((out.weight[:, 8:] == 0).sum()) == round(0.5 * 32 * 8)  # group 1: mean(0.25, 0.75)
    wo = compress.to_linear("blocks.0.attn.W_O", model.blocks[0].attn.W_O.detach())
    out = compress.HeadSparsity(fr)(compress.Stored(wo.clone(), 16, wo.numel()), name="blocks.0.attn.W_O", context=ctx)
    assert int((out.weight[8:16] == 0).sum()) == round(0.5 * 8 * 32)
    with pytest.raises(ValueError, match="4 heads"):
        compress.HeadSparsity((0.1, 0.2))(compress.Stored(wo.clone(), 16, wo.numel()), name="blocks.0.attn.W_O",
                                          context=ctx)


def test_head_ablation_matches_full_forward(tiny_model):
    tokens = torch.randint(0, 50, (3 * 16,), generator=torch.Generator().manual_seed(2))
    res = S.head_ablation(tiny_model, tokens, [], [], context=16)
    clean = tiny_model(tokens.view(3, 16), return_type="loss").item()
    for l, h in [(0, 2), (1, 0)]:
        def ablate(z, hook, h=h):
            z = z.clone()
            z[..., h, :] = 0
            return z

        loss = tiny_model.run_with_hooks(tokens.view(3, 16), return_type="loss",
                                         fwd_hooks=[(f"blocks.{l}.attn.hook_z", ablate)]).item()
        assert res["loss"][l, h].item() == pytest.approx(loss - clean, abs=1e-5)


# --------------------------------------------------------------------------------------
# SAEs through sae-lens
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_saes():
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=2, d_model=32, d_head=8, n_heads=4, d_mlp=64, n_ctx=64, d_vocab=50,
                                  act_fn="gelu", normalization_type="LN", seed=0, model_name="tiny-test")
    model = HookedTransformer(cfg).eval()
    tokens = torch.randint(0, 50, (64 * 16,), generator=torch.Generator().manual_seed(0))
    tcfg = S.SAETrainConfig(train_tokens=tokens.numel(), context=16, batch_tokens=64, expansion=2, k=4,
                            forward_batch=8, buffer_batches=2)
    return model, tokens, tcfg, S.train_saes(model, tokens, tcfg)


def test_stream_serves_every_token_of_every_layer(tiny_saes):
    model, tokens, tcfg, _ = tiny_saes
    stream = S.HookZStream(model, tokens, tcfg)
    batches = list(stream)
    n_seq = tokens.numel() // 16
    assert len(batches) == stream.n_batches == n_seq * (16 - tcfg.skip_first) // tcfg.batch_tokens
    _, cache = model.run_with_cache(tokens.view(-1, 16))
    for l in range(2):
        want = cache[f"blocks.{l}.attn.hook_z"][:, tcfg.skip_first :].flatten(-2).reshape(-1, 32)
        got = torch.cat([b[S.sae_key(l)] for b in batches])
        torch.testing.assert_close(got.sort(0).values, want.sort(0).values, atol=1e-6, rtol=1e-6)


def test_saved_sae_reloads_bit_identically(tiny_saes, tmp_path):
    from safetensors.torch import load_file
    from sae_lens import SAE

    model, tokens, tcfg, saes = tiny_saes
    S.save_saes(saes, tmp_path / "saes")
    key = S.sae_key(1)
    loaded = SAE.load_from_disk(str(tmp_path / "saes" / key))  # sae-lens's own loader
    assert loaded.cfg.metadata.hook_name == key and loaded.cfg.metadata.model_name == "tiny-test"
    on_disk = load_file(str(tmp_path / "saes" / key / "sae_weights.safetensors"))
    for name, t in on_disk.items():  # the weights in memory are the file's, bit for bit
        assert torch.equal(loaded.state_dict()[name], t), name
    x = torch.randn(20, 32)
    with torch.no_grad():  # and they compute what the trained SAE computed (its decoder norm folded in)
        torch.testing.assert_close(loaded.decode(loaded.encode(x)), saes[key].decode(saes[key].encode(x)),
                                   atol=1e-5, rtol=1e-5)
    loaded.save_model(tmp_path / "again")
    again = SAE.load_from_disk(str(tmp_path / "again"))
    for name, t in loaded.state_dict().items():
        assert torch.equal(t, again.state_dict()[name]), name
    ours = S.load_saes(tmp_path / "saes", model)
    assert set(ours) == {S.sae_key(0), S.sae_key(1)}


def test_sae_for_another_model_or_hook_is_refused(tiny_saes, tmp_path, tiny_model):
    model, tokens, tcfg, saes = tiny_saes
    S.save_saes(saes, tmp_path / "saes")
    path = tmp_path / "saes" / S.sae_key(0)
    with pytest.raises(S.SAEMismatchError, match="hook 'blocks.0.attn.hook_z' \\(expected 'blocks.1.attn.hook_z'\\)"):
        S.load_sae(path, model, S.hook_z(1))
    with pytest.raises(S.SAEMismatchError, match="model 'tiny-test'"):
        S.load_sae(path, tiny_model, S.hook_z(0))


def test_latent_stats_and_density_map(tiny_saes):
    model, tokens, tcfg, saes = tiny_saes
    groups = {"a": tokens[:128], "b": tokens[128:256]}
    stats = S.latent_stats(model, saes, groups, context=16)
    key = S.sae_key(0)
    assert stats.l0(key) == pytest.approx(tcfg.k)  # TopK: exactly k active (activations are positive)
    # explained variance agrees with a direct computation
    _, cache = model.run_with_cache(tokens[:256].view(-1, 16))
    x = cache["blocks.0.attn.hook_z"][:, 1:].flatten(-2).reshape(-1, 32)  # position 0 is left out
    with torch.no_grad():
        x_hat = saes[key].decode(saes[key].encode(x))
    assert stats.ev(key) == pytest.approx(S.explained_variance(x, x_hat), abs=1e-6)
    mass, alive = S.head_mass(stats, saes, 2, 4)
    dec = S.effective_decoder(saes[key])
    torch.testing.assert_close(mass[0, 2, 1], stats.sums[key][1] * dec[:, 16:24].norm(dim=-1).double())
    dm = S.density_map(stats, saes, 2, 4)
    assert dm["density"].shape == (2, 4) and torch.isfinite(dm["density"]).all()


def test_per_head_saes_give_a_density_map(tiny_saes):
    import dataclasses

    model, tokens, tcfg, _ = tiny_saes
    hcfg = dataclasses.replace(tcfg, granularity="head", expansion=4)
    saes = S.train_saes(model, tokens[:512], hcfg)
    assert set(saes) == {S.sae_key(l, h) for l in range(2) for h in range(4)}
    assert all(s.cfg.d_in == 8 and s.cfg.metadata.hook_head_index == int(k[-1]) for k, s in saes.items())
    stats = S.latent_stats(model, saes, {"a": tokens[:128], "b": tokens[128:256]}, context=16)
    mass, alive = S.head_mass(stats, saes, 2, 4)
    key = S.sae_key(1, 2)
    want = stats.sums[key] * S.effective_decoder(saes[key]).norm(dim=-1).double()[None]
    torch.testing.assert_close(mass[1, 2], want)
    dm = S.density_map(stats, saes, 2, 4)
    assert ((dm["density"] > 0) & (dm["density"] <= 1)).all()


def test_transition_curve_matches_full_forward_with_the_plan(tiny_model):
    tokens = torch.randint(0, 50, (2 * 16,), generator=torch.Generator().manual_seed(3))
    curves = S.transition_curves(tiny_model, tokens, [(1, 2)], [0.5, 0.9], context=16)
    clean = tiny_model(tokens.view(2, 16), return_type="loss").item()
    for j, s in enumerate([0.5, 0.9]):
        plan = compress.CompressionPlan({"blocks.1.attn": [compress.HeadSparsity((0.0, 0.0, s, 0.0))]})
        with plan.applied(tiny_model):
            loss = tiny_model(tokens.view(2, 16), return_type="loss").item()
        assert curves[0, j].item() == pytest.approx(loss - clean, abs=1e-5)


def test_layer_share_and_within_layer_rank_test():
    layer_only = torch.arange(4.0)[:, None].expand(4, 5)
    assert S.layer_share(layer_only) == pytest.approx(1.0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, generator=g)
    assert S.layer_share(x - x.mean(1, keepdim=True)) == pytest.approx(0.0, abs=1e-12)
    y = layer_only.repeat(2, 1)[:6] * 10 + x  # shares its within-layer order with x
    res = S.within_layer_rank_test(x, y, n_perm=200)
    assert res["rho"] == pytest.approx(1.0) and res["p_perm"] < 0.01
    # a shared layer effect alone gives no within-layer correlation, though the global ρ is high
    z = torch.randn(6, 5, generator=g)
    assert S.spearman(y, layer_only.repeat(2, 1)[:6] * 10 + z) > 0.5
    assert abs(S.within_layer_rank_test(x, z, n_perm=50)["rho"]) < 0.5
