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
from analysis.studies import verdicts as shared


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


RELATIONS = [f"r{i % 11}" for i in range(200)]  # 200 facts in 11 relations, as the cpu profile's eval facts


def _findings(cap_rec, other_rec, cap_shift, base, relations=RELATIONS):
    frame, items = _budget({"capability": cap_rec, "other": other_rec}, {"capability": base + cap_shift, "other": base})
    return capability.budget_findings(frame, items, relations=relations), items


def test_perplexity_verdict_and_report():
    rng = np.random.default_rng(0)
    base = rng.normal(3.0, 0.3, 16)  # per-window NLL, 16 windows as under cpu
    hi_rec = rng.permutation(np.r_[np.ones(160), np.zeros(40)])
    lo_rec = rng.permutation(np.r_[np.ones(80), np.zeros(120)])

    def verdict(cap_rec, cap_shift, relations=RELATIONS):
        f, items = _findings(cap_rec, lo_rec, cap_shift, base, relations)
        return capability.perplexity_verdict(f, items), f

    # recall separates them (0.8 vs 0.4), perplexity equivalent within ±1%: hidden from perplexity
    out, f = verdict(hi_rec, rng.normal(0, 0.001, 16))
    assert out.verdict == "reproduced" and out.ours == pytest.approx(0.4) and "TOST" in out.evidence
    # perplexity separates them the same way (capability lower): the claim must fail
    assert verdict(hi_rec, -0.05)[0].verdict == "not reproduced"
    # perplexity differs by noise as large as the margin: not separated, not equivalent; absence of
    # evidence, so inconclusive (the old rule called this reproduced)
    noisy = rng.normal(0, 0.04, 16)
    noisy -= noisy.mean() + 0.004
    out, f2 = verdict(hi_rec, noisy)
    assert f2["Δ log ppl low"].iloc[0] < 0 < f2["Δ log ppl high"].iloc[0]
    assert out.verdict == "inconclusive"
    # recall within noise: inconclusive
    assert verdict(rng.permutation(np.r_[np.ones(84), np.zeros(116)]), 0.0)[0].verdict == "inconclusive"
    # too few relations to cluster on: inconclusive whatever the facts say
    out, _ = verdict(hi_rec, rng.normal(0, 0.001, 16), relations=[f"r{i % 4}" for i in range(200)])
    assert out.verdict == "inconclusive" and "fewer than 8 relations" in out.evidence
    (line,) = capability.budget_report(f)
    assert "over 200 facts in 11 relations" in line and "5 seeds" in line


def test_budget_findings_cluster_recall_by_relation():
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(11), 20)
    moved = np.repeat(rng.normal(0, 0.4, 11) > 0, 20).astype(float)  # whole relations move together
    f, _ = _findings(moved, np.zeros(220), np.zeros(16), rng.normal(3, 0.3, 16), labels)
    assert int(f["relations"].iloc[0]) == 11 and int(f["facts"].iloc[0]) == 220
    _, lo, hi, _, _ = stats.cluster_t(moved, labels, level=0.95)
    assert (f["Δ recall low"].iloc[0], f["Δ recall high"].iloc[0]) == pytest.approx((lo, hi))
    iid = stats.paired(moved, np.zeros(220))
    assert hi - lo > iid.high - iid.low  # clustered: wider than facts taken one by one


def _null_budget(rng, n_random=5, means=(0.3, 0.5), n_windows=16, shift_ppl=0.0, recall_gap=0.0):
    """One simulated budget comparison: 200 facts in 11 relations (relation and fact effects), each
    allocation a model with its own effect; capability's model effect is ``recall_gap`` above the
    random allocations' mean (0: the allocation claim's null), its Δ log perplexity ``shift_ppl``."""
    rel = rng.normal(0, 0.8, 11)[np.arange(200) % 11]
    fact = rng.normal(0, 1.0, 200)
    base = rng.normal(3.0, 0.3, n_windows)
    rows, items = [], {}
    for mean in means:
        for name in ["capability", "wanda"] + [f"random {r}" for r in range(n_random)]:
            effect = recall_gap if name == "capability" else rng.normal(0, 0.15) if name != "wanda" else 0.0
            p = 1 / (1 + np.exp(-(0.3 + rel + fact + effect + rng.normal(0, 0.3, 200))))
            rec = (rng.random(200) < p).astype(float)
            nll = base + rng.normal(0, 0.02, n_windows) + (shift_ppl if name == "capability" else 0.0)
            items[(mean, name)] = {
                "recall": rec.tolist(),
                "window_nll": (nll * 100).tolist(),
                "window_tokens": [100] * n_windows,
            }
            row = {"mean sparsity": mean, "strategy": name, "perplexity": float(np.exp(nll.mean()))}
            rows.append({**row, "fact recall": rec.mean()})
    return pd.DataFrame(rows), items


def test_perplexity_verdict_false_reproduced_rate_at_the_boundary():
    # recall separates strongly, perplexity differs by exactly the margin: perplexity does see it
    def judge(rng):
        frame, items = _null_budget(rng, n_random=0, shift_ppl=capability.PPL_MARGIN)
        for key in items:
            if key[1] == "capability":  # capability keeps every fact
                items[key]["recall"] = [1.0] * 200
        f = capability.budget_findings(frame, items, relations=RELATIONS)
        return capability.perplexity_verdict(f, items)

    assert shared.false_reproduced_rate(judge, n_sims=200) <= 0.05


def test_allocation_verdict():
    rng = np.random.default_rng(0)
    nll = {"other": rng.normal(3, 0.3, 10)}
    half = rng.permutation(np.r_[np.ones(100), np.zeros(100)])

    def spread(n_random=5):  # each random draw its own model: recall 0.4 to 0.6
        return {
            f"random {r}": rng.permutation(np.r_[np.ones(80 + 10 * r), np.zeros(120 - 10 * r)]) for r in range(n_random)
        }

    v = capability.allocation_verdict
    frame, items = _budget({"capability": np.ones(200), "other": half, **spread()}, nll)
    out = v(frame, items, relations=RELATIONS)
    assert out.verdict == "reproduced" and "relations" in out.evidence
    frame, items = _budget({"capability": np.zeros(200), "other": half, **spread()}, nll)
    assert v(frame, items, relations=RELATIONS).verdict == "not reproduced"
    frame, items = _budget({"capability": half, "other": half, **spread()}, nll)
    assert v(frame, items, relations=RELATIONS).verdict == "inconclusive"
    # too few relations: inconclusive even for a large gap
    frame, items = _budget({"capability": np.ones(200), "other": half, **spread()}, nll)
    assert v(frame, items, relations=[f"r{i % 5}" for i in range(200)]).verdict == "inconclusive"
    with pytest.raises(ValueError, match="n_random"):
        capability.allocation_verdict(*_budget({"other": np.ones(4)}, nll, n_random=0))


def test_versus_random_counts_the_spread_between_random_draws():
    cap = np.ones(200)
    tight = np.tile(np.r_[np.ones(150), np.zeros(50)], (5, 1))
    loose = np.stack([np.r_[np.ones(n), np.zeros(200 - n)] for n in (60, 110, 150, 180, 199)])
    a, b = capability.versus_random(cap, tight, RELATIONS), capability.versus_random(cap, loose, RELATIONS)
    assert (b.high - b.low) > 2 * (a.high - a.low)  # the draws disagree: a wider interval
    assert a.n == 11 and math.isnan(capability.versus_random(cap, tight[:1], RELATIONS).low)


def test_allocation_verdict_false_reproduced_rate_at_the_null():
    def judge(rng):
        frame, items = _null_budget(rng)
        return capability.allocation_verdict(frame, items, relations=RELATIONS)

    assert shared.false_reproduced_rate(judge, n_sims=200) <= 0.05


def _draw_test(rng, rho, n, n_layers=30):
    """A HeadTest with the sampling error of ``n`` independent units around ``rho``."""
    se = math.sqrt(1.06 / (n - 3))
    z = math.atanh(rho) + rng.normal(0, se)
    lo, hi = math.tanh(z - 1.96 * se), math.tanh(z + 1.96 * se)
    return capability.HeadTest(math.tanh(z), lo, hi, float("nan"), float("nan"), n, n_layers)


def test_correlation_verdicts_false_reproduced_rates_at_their_boundaries():
    def orth(rng):  # ρ at the equivalence margin, 270 heads
        return capability.orthogonality_verdict(_draw_test(rng, 0.1, 270))

    def orth_many(rng):  # with enough heads to be testable the rule still holds its level
        return capability.orthogonality_verdict(_draw_test(rng, 0.1, 3000))

    def importance(rng):  # ρ = 0 over the 30 layers the interval clusters on
        t = _draw_test(rng, 0.0, 30)
        return capability.importance_verdict(capability.ImportanceTest(*dataclasses.astuple(t), partial=0.0))

    def transition(rng):  # ρ = 0 over 24 traced heads
        return capability.transition_verdict(_draw_test(rng, 0.0, 24))

    def every_metric(rng):  # every metric at the margin
        return capability.metric_verdicts({m: _draw_test(rng, 0.1, 3000) for m in capability.METRICS})[-1]

    for judge in (orth, orth_many, importance, transition, every_metric):
        assert shared.false_reproduced_rate(judge, n_sims=300) <= 0.05, judge.__name__


def test_metric_verdicts_one_row_per_metric_holm_and_the_combined_claim():
    v = capability.metric_verdicts
    names = list(capability.METRICS)
    indep = {m: _test(0.0, -0.02, 0.02, n=5000) for m in names}
    rows = v(indep)
    assert len(rows) == len(names) + 1 and all(r.verdict == "reproduced" for r in rows)
    assert "Holm" in rows[0].criterion and rows[-1].claim == capability.SEED_RESULTS["all metrics claim"]
    # one metric related: that row fails and the combined claim with it
    rows = v({**indep, "gradient": _test(0.45, 0.3, 0.6)})
    assert rows[names.index("gradient")].verdict == "not reproduced" and rows[-1].verdict == "partly"
    assert v({m: _test(0.45, 0.3, 0.6) for m in names})[-1].verdict == "not reproduced"
    # at 270 heads no metric can be settled: untestable rows, an inconclusive claim, the n stated
    rows = v({m: _test(0.0, -0.02, 0.02) for m in names})
    assert all(r.verdict == "untestable at this n" for r in rows)
    assert f"{shared.n_for_equivalence(0.1)} independent heads would settle it" in rows[0].evidence
    # Holm: two TOST p-values that pass alone (about 0.036) but not after adjustment
    n = 1500
    se = math.sqrt(1.06 / (n - 3))
    rho = math.tanh(math.atanh(0.1) - 1.8 * se)
    lo, hi = math.tanh(math.atanh(rho) - 1.96 * se), math.tanh(math.atanh(rho) + 1.96 * se)
    edge = {**indep, "magnitude": _test(rho, lo, hi, n=n), "gradient": _test(rho, lo, hi, n=n)}
    assert capability.orthogonality_verdict(edge["magnitude"]).verdict == "reproduced"
    rows = v(edge)  # Holm doubles the smaller of the two p-values: neither passes
    assert rows[names.index("magnitude")].verdict == rows[names.index("gradient")].verdict == "inconclusive"
    assert rows[names.index("wanda")].verdict == "reproduced"


def test_choosing_and_judging_data_are_disjoint(monkeypatch):
    for profile in ("cpu", "smoke"):
        cfg = capability.config_for(profile)
        plan = capability.text_plan(cfg)
        assert capability.overlaps(cfg) == [], profile
        assert {s.split for s in plan["choosing"].values()}.isdisjoint({s.split for s in plan["judging"].values()})
        assert plan["choosing"]["density (Wikipedia group)"].split == capability.DENSITY_SPLIT == "calib"
    assert capability.Span("eval", 0, 768).overlaps(capability.Span("eval", 0, 128))  # the old density text did

    # the runners read the plan's text: record the split each one asks for, then stop
    asked = []

    class Stop(Exception):
        pass

    def fake_lm_tokens(tokenizer, split, n_tokens):
        asked.append((split, n_tokens))
        raise Stop

    monkeypatch.setattr(capability.texts.data, "lm_tokens", fake_lm_tokens)
    cfg = capability.config_for("cpu")

    class Model:
        tokenizer = None

    for run in (
        lambda: capability.run_ablation(Model(), cfg, [], []),
        lambda: capability.run_transitions(Model(), cfg, torch.zeros(2, 2), torch.zeros(2, 2)),
        lambda: capability.run_budget(Model(), cfg, torch.zeros(2, 2), torch.zeros(2, 2), [], []),
        lambda: capability.domain_tokens(Model(), ["wikipedia"], 64),
    ):
        with pytest.raises(Stop):
            run()
    judged = [("eval", cfg.ablation_tokens), ("eval", cfg.ablation_tokens), ("eval", cfg.ppl_tokens)]
    assert asked == [*judged, ("calib", 64)]


def test_domain_tokens_leave_out_the_probe_examples(monkeypatch):
    from datasets import ClassLabel, Dataset, Features, Value

    ds = Dataset.from_dict(
        {"text": ["a b", "c d", "e f"], "label": [1, 1, 1]},
        features=Features({"text": Value("string"), "label": ClassLabel(names=["wikipedia", "film_review"])}),
    )
    monkeypatch.setattr(capability.run.data, "load_task", lambda name: ds)
    monkeypatch.setattr(capability.run.data, "document_token_ids", lambda tok, text: [ord(c) for c in text])

    class Model:
        tokenizer = None

    got = capability.domain_tokens(Model(), ["film_review"], 6, exclude=["a b"])["film_review"]
    assert got.tolist() == [ord(c) for c in "c de f"]


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
    half = rng.permutation(np.r_[np.ones(100), np.zeros(100)])
    draws = {f"random {r}": rng.permutation(np.r_[np.ones(80 + 10 * r), np.zeros(120 - 10 * r)]) for r in range(5)}
    frame, items = _budget({"capability": np.ones(200), "other": half, **draws}, {"other": rng.normal(3, 0.3, 10)})
    budget = capability.Budget(frame, items)
    findings = capability.budget_findings(frame, items, relations=RELATIONS)
    headline = _test(0.45, 0.3, 0.6)
    imp = capability.ImportanceTest(0.3, 0.1, 0.5, 0.1, 0.2, 270, 30, partial=0.1)
    flat = capability.ImportanceTest(*([float("nan")] * 5), 270, 30, partial=float("nan"))
    direct = capability.DirectImportance(
        capability.SignalTests(imp, flat), capability.SignalTests(flat, flat), capability.SignalTests(flat, flat)
    )
    trans = capability.Transitions([], torch.zeros(0, 1), torch.zeros(0), torch.zeros(0), torch.zeros(0), None)
    metrics = {m: _test(0.0, -0.02, 0.02) for m in capability.METRICS}
    out = capability.verdicts(headline, pd.DataFrame(), direct, trans, budget, findings, 300, RELATIONS, metrics)
    every = capability.metric_verdicts(metrics, wanda=capability.orthogonality_verdict(headline))
    assert out == [
        capability.orthogonality_verdict(headline),
        *every[1:],  # Wanda's own row is the headline
        capability.transition_verdict(None),
        capability.perplexity_verdict(findings, items),
        capability.allocation_verdict(frame, items, relations=RELATIONS),
        capability.importance_verdict(imp),
    ]
    kinds = [v.verdict for v in out]
    assert kinds[0] == "not reproduced" and kinds[5] == "not reproduced"  # related to Wanda, so not to all
    assert kinds[-2:] == ["reproduced", "reproduced"] and kinds[6] == "inconclusive"
    # without the other metrics: one row saying what is missing
    short = capability.verdicts(headline, pd.DataFrame(), direct, trans, budget, findings, 300, RELATIONS)
    assert len(short) == 6 and short[1].verdict == "inconclusive" and "not measured" in short[1].evidence


def test_config_marks_sizes_and_reads_its_own_profile_key():
    marked = {f.name for f in dataclasses.fields(capability.DensityConfig) if f.metadata.get("size")}
    assert {"ce_tokens", "n_facts", "n_boot", "n_random", "ladder", "sae"} <= marked
    assert not marked & {"probe_task", "domains", "layers", "extra_models", "seed", "break_fraction", "budget_spread"}
    assert capability.config_for("smoke") is capability.CONFIGS["smoke"]
