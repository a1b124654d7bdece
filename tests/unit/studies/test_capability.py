"""analysis.studies.capability: allocation, break points, head ablation and transitions against
direct computations, the head operations they use, the statistics, and every verdict on
constructed inputs whose answer is known."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr

from analysis import book, compress, hooks, stats
from analysis.studies import capability


def _maps(density, wanda) -> capability.HeadMaps:
    """Maps whose three parts are the density itself."""
    density, wanda = torch.as_tensor(density), torch.as_tensor(wanda)
    return capability.HeadMaps(density, density, density, density, wanda)


def test_allocation_matches_mean_and_orders_by_importance():
    imp = torch.arange(12.0).view(3, 4)
    s = capability.allocate(imp, 0.5, spread=0.5)
    assert s.mean().item() == pytest.approx(0.5, abs=1e-6)
    assert s.flatten()[0] > s.flatten()[-1]  # least important pruned most
    assert s.min().item() == pytest.approx(0.25, abs=1e-6) and s.max().item() == pytest.approx(0.75, abs=1e-6)
    r = capability.allocate(imp, 0.5, spread=0.5, seed=3)
    torch.testing.assert_close(r.flatten().sort().values, s.flatten().sort().values)
    assert torch.all(capability.allocate(None, 0.7, shape=(3, 4)) == 0.7)
    assert capability.allocate(imp, 0.9, spread=0.5).max().item() <= 0.99 + 1e-6


def test_break_point_interpolates():
    assert capability.break_point([0.5, 0.9], [0.1, 0.3], full=0.4) == pytest.approx(0.5 + 0.1 / 0.2 * 0.4)
    assert capability.break_point([0.5], [0.0], full=1.0) == pytest.approx(0.75)
    assert math.isnan(capability.break_point([0.5], [0.0], full=0.0))


def test_head_ablation_matches_full_forward(tiny_model):
    tokens = torch.randint(0, 50, (3 * 16,), generator=torch.Generator().manual_seed(2))
    res = capability.head_ablation(tiny_model, tokens, [], [], context=16)
    clean = tiny_model(tokens.view(3, 16), return_type="loss").item()
    for l, h in [(0, 2), (1, 0)]:

        def ablate(z, hook, h=h):
            z = z.clone()
            z[..., h, :] = 0
            return z

        loss = tiny_model.run_with_hooks(
            tokens.view(3, 16), return_type="loss", fwd_hooks=[(hooks.z(l), ablate)]
        ).item()
        assert res.loss[l, h].item() == pytest.approx(loss - clean, abs=1e-5)
    assert res.clean_loss.item() == pytest.approx(clean, abs=1e-5)


#


@pytest.mark.parametrize("fixture", ["tiny_model", "gqa_model"])
def test_transition_curve_matches_the_plan_and_ends_at_the_ablation(fixture, request):
    model = request.getfixturevalue(fixture)
    tokens = torch.randint(0, 50, (2 * 16,), generator=torch.Generator().manual_seed(3))
    curves = capability.transition_curves(model, tokens, [(1, 2)], [0.5, 0.9, 1.0], context=16)
    clean = model(tokens.view(2, 16), return_type="loss").item()
    for j, s in enumerate([0.5, 0.9]):
        plan = compress.CompressionPlan(
            {"blocks.1.attn": [compress.HeadSparsity((0.0, 0.0, s, 0.0), shared_kv="keep")]}
        )
        with plan.applied(model):
            loss = model(tokens.view(2, 16), return_type="loss").item()
        assert curves[0, j].item() == pytest.approx(loss - clean, abs=1e-5)
    # sparsity 1 on the head's own slices is the zero-ablation the break point counts as its end
    ablation = capability.head_ablation(model, tokens, [], [], context=16, layers=[1])
    assert curves[0, 2].item() == pytest.approx(ablation.loss[1, 2].item(), rel=1e-4, abs=1e-6)


def test_spread_heads_takes_quantiles_and_skips_nan():
    values = torch.arange(12.0).view(3, 4)
    values[0, 0] = float("nan")
    assert capability.spread_heads(values, 3) == [(0, 1), (1, 2), (2, 3)]  # lowest, middle, highest


# ---- statistics through the study ---------------------------------------------------------


def _cfg(**kw) -> capability.DensityConfig:
    return capability.DensityConfig(capability.CONFIGS["smoke"].sae, 1, 1, 1, 1, 1, 1, 1, **kw)


def test_head_test_clusters_by_layer():
    g = torch.Generator().manual_seed(0)
    layer_effect = torch.randn(8, 1, generator=g).expand(8, 9)
    x = layer_effect + 0.05 * torch.randn(8, 9, generator=g)
    y = layer_effect + 0.05 * torch.randn(8, 9, generator=g)  # related only through the layer
    cfg = _cfg(n_boot=300, n_perm=300)
    res = capability.head_test(x, y, cfg)
    assert res.rho == pytest.approx(spearmanr(x.flatten(), y.flatten()).statistic, abs=1e-6)
    assert res.n == 72 and res.n_layers == 8
    lo, hi = stats.cluster_bootstrap_ci(x.flatten(), y.flatten(), capability.layer_labels((8, 9)).flatten(), n_boot=300)
    assert (res.ci_low, res.ci_high) == pytest.approx((lo, hi))
    iid = stats.rank_test(x, y, 300, 300, 0)
    assert res.ci_high - res.ci_low > iid["ci_high"] - iid["ci_low"]  # clustered: wider than i.i.d.
    assert abs(res.rho_within) < 0.4 and res.p_within > 0.01  # nothing within layers
    z = x + 0.01 * torch.randn(8, 9, generator=g)  # same within-layer order as x
    within = capability.head_test(x, z, cfg)
    assert within.rho_within > 0.9 and within.p_within < 0.01
    # NaN heads are dropped; single heads per layer give no within-layer test
    one = capability.head_test(torch.arange(5.0), torch.arange(5.0), cfg, layers=torch.arange(5))
    assert one.rho == pytest.approx(1.0) and math.isnan(one.p_within)
    # a table row gives the test back
    assert capability.HeadTest.from_row(pd.Series(res.row())) == res


def test_effective_n_matches_the_fisher_standard_error():
    # an interval of ±1.96 sqrt(1.06/(n-3)) on Fisher's z around 0 gives back n
    n = 103
    half = math.tanh(1.959964 * math.sqrt(1.06 / (n - 3)))
    assert capability.effective_n(0.0, -half, half, 1000) == pytest.approx(n, abs=1)
    assert capability.effective_n(0.0, -half, half, 50) == 50  # never more than the units measured
    assert capability.effective_n(0.0, float("nan"), 0.1, 80) == 80


def test_layer_share():
    layer_only = torch.arange(4.0)[:, None].expand(4, 5)
    assert stats.layer_share(layer_only) == pytest.approx(1.0)
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    assert stats.layer_share(x - x.mean(1, keepdim=True)) == pytest.approx(0.0, abs=1e-12)
    study = capability.DensityStudy("constructed", {}, None, None, _maps(x, layer_only.repeat(2, 1)[:6] * 10 + x), None)
    shares = study.layer_shares()
    assert list(shares) == ["breadth", "entropy", "consistency", "density", "wanda"]
    assert shares["wanda"] > 0.9 and shares["density"] == pytest.approx(stats.layer_share(x))


def test_head_maps_correlate_every_pair_in_field_order():
    g = torch.Generator().manual_seed(4)
    maps = capability.HeadMaps(*(torch.rand(3, 4, generator=g) for _ in range(5)))
    corr = maps.correlations()
    names = ["breadth", "entropy", "consistency", "density", "wanda"]
    assert list(corr.index) == list(corr.columns) == names
    assert corr.loc["entropy", "wanda"] == pytest.approx(
        spearmanr(maps.entropy.flatten(), maps.wanda.flatten()).statistic
    )
    assert (corr.to_numpy().diagonal() == 1).all()


def test_importance_table_tests_both_signals_on_measured_heads():
    g = torch.Generator().manual_seed(1)
    density, wanda = torch.rand(4, 5, generator=g), torch.rand(4, 5, generator=g)
    loss = density + 0.1 * torch.rand(4, 5, generator=g)
    loss[1:3] = float("nan")  # two layers not ablated
    abl = capability.HeadAblation(loss, -loss, torch.zeros(4, 5), torch.tensor(3.0))  # no head changes recall
    direct = capability.importance_table(_maps(density, wanda), abl, _cfg(n_boot=100, n_perm=100))
    row = direct.loss.density
    assert row.n == 10 and row.n_layers == 2 and row.rho > 0.8
    assert row.partial == pytest.approx(stats.partial_spearman(density, loss, wanda))
    assert direct.logp.density.rho == pytest.approx(-row.rho)
    flat = direct.recall.density  # ρ undefined, so no interval either
    assert math.isnan(flat.rho) and math.isnan(flat.ci_low)
    # the table: one row per (measure, signal), the head test's columns and the partial ρ last
    table = direct.table
    assert list(table.index) == [(m, s) for m in capability.IMPORTANCE_MEASURES.values() for s in ("density", "wanda")]
    assert list(table.columns) == [
        "rho",
        "ci_low",
        "ci_high",
        "rho_within",
        "p_within",
        "n",
        "n_layers",
        "partial ρ given the other",
    ]
    assert table.loc[("ΔCE when ablated", "wanda"), "rho"] == pytest.approx(direct.loss.wanda.rho)


# ---- probe ----------------------------------------------------------------------------------


def test_probe_reads_a_separable_label_and_not_a_random_one():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(80) % 2
    feats = torch.randn(80, 16, generator=g)
    feats[:, 3] = 3 * (2 * labels - 1) + 0.1 * feats[:, 3]  # one feature separates the classes by a wide margin
    assert capability.probe_accuracy(feats, labels.tolist(), n_train=40) == 1.0
    noise = torch.randn(80, 16, generator=g)
    assert capability.probe_accuracy(noise, labels.tolist(), n_train=40) < 0.8


# ---- verdicts ---------------------------------------------------------------------------------


def _test(rho, lo, hi, n=270):
    return capability.HeadTest(rho, lo, hi, float("nan"), float("nan"), n, 30)


def test_orthogonality_verdict():
    v = capability.orthogonality_verdict
    out = v(_test(0.01, -0.02, 0.04, n=5000))  # many heads, narrow cluster interval inside ±0.1
    assert out.verdict == "reproduced" and out.seed == capability.SEED_RESULTS["spearman_density_wanda"]
    assert v(_test(0.45, 0.3, 0.6)).verdict == "not reproduced"  # the claim must fail
    # wide layer-cluster interval: few effective heads, fewer than TOST at ±0.1 could ever pass
    assert v(_test(0.05, -0.4, 0.5)).verdict == "untestable at this n"
    # at 270 heads not even ρ = 0 with a narrow interval is TOST-equivalent within ±0.1
    assert v(_test(0.0, -0.02, 0.02)).verdict == "untestable at this n"
    # the same ρ and n with a wide (layer-cluster) interval has fewer effective heads and cannot pass
    assert v(_test(0.01, -0.2, 0.22, n=5000)).verdict == "untestable at this n"
    # enough effective heads to settle it, but ρ sits too near the margin: open
    assert v(_test(0.09, 0.06, 0.12, n=5000)).verdict == "inconclusive"
    assert "effective heads" in out.evidence and out.ci_low == -0.02 and "TOST" in out.criterion


def test_orthogonality_verdict_depends_on_sae_fidelity():
    def ladder(evs, ces, tests):
        return pd.DataFrame(
            [{"explained variance": e, "CE loss recovered": c, **t.row()} for e, c, t in zip(evs, ces, tests)]
        )

    indep, related = _test(0.01, -0.02, 0.04, n=5000), _test(0.45, 0.3, 0.6)
    v = capability.orthogonality_verdict
    moving = ladder([0.3, 0.5], [0.6, 0.8], [related, indep])  # the answer moves with quality, bar missed
    assert v(indep, moving).verdict == "inconclusive"
    good = ladder([0.5, 0.8], [0.8, 0.95], [related, indep])  # moves, but the best SAE meets the bar
    assert v(indep, good).verdict == "reproduced"
    steady = ladder([0.3, 0.5], [0.6, 0.8], [related, related])  # bar missed, but steady: keeps its verdict
    assert v(related, steady).verdict == "not reproduced" and "rising quality" in v(related, steady).evidence


def test_importance_verdict():
    v = capability.importance_verdict

    def row(rho, lo, hi):
        return capability.ImportanceTest(rho, lo, hi, 0.1, 0.2, 270, 30, partial=0.1)

    assert v(row(0.3, 0.1, 0.5)).verdict == "reproduced"
    assert v(row(-0.3, -0.5, -0.1)).verdict == "not reproduced"  # denser heads matter less
    out = v(row(0.1, -0.1, 0.3))
    assert out.verdict == "inconclusive" and "layers" in out.evidence
    assert v(row(float("nan"), float("nan"), float("nan"))).verdict == "inconclusive"  # constant importance


def test_transition_verdict():
    v = capability.transition_verdict
    assert v(_test(-0.6, -0.8, -0.3, 24)).verdict == "reproduced"
    assert v(_test(0.6, 0.3, 0.8, 24)).verdict == "not reproduced"  # denser heads break later
    out = v(_test(-0.2, -0.6, 0.3, 24))
    assert out.verdict == "inconclusive" and "would settle" in out.evidence
    assert v(None).verdict == "inconclusive"


def _budget(recalls: dict, nlls: dict, n_random: int = 5):
    """A budget table and per-item results at mean 0.5 from per-strategy recall hits and window NLLs."""
    rows, items = [], {}
    for name in ["capability", "wanda", "uniform"] + [f"random {r}" for r in range(n_random)]:
        rec = np.asarray(recalls.get(name, recalls["other"]), float)
        nll = np.asarray(nlls.get(name, nlls["other"]), float)
        items[(0.5, name)] = {
            "recall": rec.tolist(),
            "window_nll": (nll * 100).tolist(),
            "window_tokens": [100] * len(nll),
        }
        rows.append(
            {"mean sparsity": 0.5, "strategy": name, "perplexity": float(np.exp(nll.mean())), "fact recall": rec.mean()}
        )
    return pd.DataFrame(rows), items


def test_perplexity_verdict_and_report():
    rng = np.random.default_rng(0)
    base = rng.normal(3.0, 0.3, 40)  # per-window NLL
    hi_rec, lo_rec = np.r_[np.ones(160), np.zeros(40)], np.r_[np.ones(80), np.zeros(120)]

    def verdict(cap_rec, cap_shift):
        frame, items = _budget(
            {"capability": cap_rec, "other": lo_rec}, {"capability": base + cap_shift, "other": base}
        )
        f = capability.budget_findings(frame, items, n_boot=500)
        return capability.perplexity_verdict(f), f

    # recall separates them (0.8 vs 0.4 over 200 facts), perplexity does not: hidden from perplexity
    out, f = verdict(hi_rec, rng.normal(0, 0.001, 40))
    assert out.verdict == "reproduced" and out.ours == pytest.approx(0.4)
    # perplexity separates them the same way (capability lower): the claim must fail
    assert verdict(hi_rec, -0.05)[0].verdict == "not reproduced"
    # recall within noise: inconclusive, with the size that would settle it
    close = np.r_[np.ones(84), np.zeros(116)]
    rng2 = np.random.default_rng(1)
    close_items = rng2.permutation(close)
    out, _ = verdict(close_items, 0.0)
    assert out.verdict == "inconclusive" and "facts" in out.evidence
    (line,) = capability.budget_report(f)
    assert "over 200 facts" in line and "5 seeds" in line


def test_allocation_verdict():
    rng = np.random.default_rng(0)
    nll = {"other": rng.normal(3, 0.3, 10)}
    good = _budget({"capability": np.ones(200), "other": np.r_[np.ones(100), np.zeros(100)]}, nll)
    frame, items = good
    assert capability.allocation_verdict(frame, items, n_boot=300).verdict == "reproduced"
    frame, items = _budget({"capability": np.zeros(200), "other": np.r_[np.ones(100), np.zeros(100)]}, nll)
    assert capability.allocation_verdict(frame, items, n_boot=300).verdict == "not reproduced"
    same = rng.permutation(np.r_[np.ones(100), np.zeros(100)])
    frame, items = _budget({"capability": same, "other": np.r_[np.ones(100), np.zeros(100)]}, nll)
    assert capability.allocation_verdict(frame, items, n_boot=300).verdict == "inconclusive"
    with pytest.raises(ValueError, match="n_random"):
        capability.allocation_verdict(*_budget({"other": np.ones(4)}, nll, n_random=0))


def test_min_heads_for_equivalence_is_where_tost_starts_to_pass():
    n = capability.min_heads_for_equivalence(0.1)
    assert stats.tost_correlation(0.0, n, 0.1).equivalent and not stats.tost_correlation(0.0, n - 1, 0.1).equivalent


def test_quality_summary_takes_medians_over_layers():
    q = pd.DataFrame(
        {
            "explained variance": [0.2, 0.5, 0.9],
            "CE loss recovered": [-3.0, 0.8, 0.9],  # one unstable layer does not move the median
            "L0": [8, 8, 8],
            "dead fraction": [0.0, 0.1, 0.5],
        }
    )
    assert capability.quality_summary(q) == {
        "explained variance": 0.5,
        "CE loss recovered": 0.8,
        "L0": 8.0,
        "dead fraction": 0.1,
    }


def test_pool_random_labels_every_seed_random():
    frame = pd.DataFrame({"strategy": ["dense", "capability", "random 0", "random 3"], "x": [1, 2, 3, 4]})
    assert capability.pool_random(frame)["strategy"].tolist() == ["dense", "capability", "random", "random"]
    assert frame["strategy"].tolist()[2] == "random 0"  # the input is left alone


def test_activation_pool_is_skipped_when_too_large(tiny_model):
    cfg = _cfg()
    huge = dataclasses.replace(cfg, sae=dataclasses.replace(cfg.sae, train_tokens=10**9))
    assert capability.activation_pool(tiny_model, huge) is None


def test_ce_recovered_leaves_out_layers_that_cost_almost_nothing_to_ablate():
    q = pd.DataFrame(
        {
            "CE loss recovered": [-5.0, 0.8, 0.9, 0.7],
            "CE clean": [3.0, 3.0, 3.0, 3.0],
            "CE ablated": [3.01, 3.5, 4.0, 3.0 - 0.03],  # the first costs 0.01 nats: unstable
        }
    )
    ce = capability.ce_recovered(q)
    assert ce.floor == capability.CE_COST_FLOOR == 0.02
    assert (ce.n_stable, ce.n_small) == (3, 1)
    assert ce.median == pytest.approx(0.75) and ce.stable_median == pytest.approx(0.8)
    assert capability.ce_recovered(q, floor=0.05).n_small == 2


def test_headline_rows_put_the_seed_beside_ours():
    ours = capability.HeadTest(0.12345, -0.1, 0.3, 0.05, 0.4321, 270, 30)
    seed, mine = capability.headline_rows(ours, "SmolLM2", 270, 200)
    assert seed["Spearman ρ(density, Wanda)"] == capability.SEED_RESULTS["spearman_density_wanda"]
    assert mine["Spearman ρ(density, Wanda)"] == 0.123 and mine["95% CI"].startswith("[-0.100, 0.300]")
    assert mine["within-layer ρ (p)"] == "0.050 (p = 0.4321, 200 permutations)"
    frame = book.seed_vs_ours(seed, mine, "seed 001", "ours")
    assert list(frame.index) == list(mine) and frame.loc["heads"].tolist() == [384, 270]


def test_verdicts_give_one_verdict_per_claim_in_order():
    rng = np.random.default_rng(0)
    frame, items = _budget(
        {"capability": np.ones(200), "other": np.r_[np.ones(100), np.zeros(100)]}, {"other": rng.normal(3, 0.3, 10)}
    )
    budget = capability.Budget(frame, items)
    findings = capability.budget_findings(frame, items, n_boot=300)
    headline = _test(0.45, 0.3, 0.6)
    imp = capability.ImportanceTest(0.3, 0.1, 0.5, 0.1, 0.2, 270, 30, partial=0.1)
    flat = capability.ImportanceTest(*([float("nan")] * 5), 270, 30, partial=float("nan"))
    direct = capability.DirectImportance(
        capability.SignalTests(imp, flat), capability.SignalTests(flat, flat), capability.SignalTests(flat, flat)
    )
    trans = capability.Transitions([], torch.zeros(0, 1), torch.zeros(0), torch.zeros(0), torch.zeros(0), None)
    out = capability.verdicts(headline, pd.DataFrame(), direct, trans, budget, findings, n_boot=300)
    assert out == [
        capability.orthogonality_verdict(headline),
        capability.transition_verdict(None),
        capability.perplexity_verdict(findings),
        capability.allocation_verdict(frame, items, n_boot=300),
        capability.importance_verdict(imp),
    ]
    assert [v.verdict for v in out] == ["not reproduced", "inconclusive", out[2].verdict, "reproduced", "reproduced"]


def test_config_marks_sizes_and_reads_its_own_profile_key():
    marked = {f.name for f in dataclasses.fields(capability.DensityConfig) if f.metadata.get("size")}
    assert {"ce_tokens", "n_facts", "n_boot", "n_random", "ladder", "sae"} <= marked
    assert not marked & {"probe_task", "domains", "layers", "extra_models", "seed", "break_fraction", "budget_spread"}
    assert capability.config_for("smoke") is capability.CONFIGS["smoke"]
