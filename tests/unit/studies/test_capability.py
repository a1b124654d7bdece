"""analysis.studies.capability: allocation, break points, head ablation and transitions against
direct computations, the head operations they use, the statistics, and every verdict on
constructed inputs whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr

from analysis import compress, hooks, stats
from analysis.studies import capability


def _study(density, wanda) -> capability.DensityStudy:
    return capability.DensityStudy(
        "constructed", {}, None, None, {"density": torch.as_tensor(density), "wanda": torch.as_tensor(wanda)}
    )


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
        assert res["loss"][l, h].item() == pytest.approx(loss - clean, abs=1e-5)


#


def test_transition_curve_matches_full_forward_with_the_plan(tiny_model):
    tokens = torch.randint(0, 50, (2 * 16,), generator=torch.Generator().manual_seed(3))
    curves = capability.transition_curves(tiny_model, tokens, [(1, 2)], [0.5, 0.9], context=16)
    clean = tiny_model(tokens.view(2, 16), return_type="loss").item()
    for j, s in enumerate([0.5, 0.9]):
        plan = compress.CompressionPlan({"blocks.1.attn": [compress.HeadSparsity((0.0, 0.0, s, 0.0))]})
        with plan.applied(tiny_model):
            loss = tiny_model(tokens.view(2, 16), return_type="loss").item()
        assert curves[0, j].item() == pytest.approx(loss - clean, abs=1e-5)


def test_spread_heads_takes_quantiles_and_skips_nan():
    values = torch.arange(12.0).view(3, 4)
    values[0, 0] = float("nan")
    assert capability.spread_heads(values, 3) == [(0, 1), (1, 2), (2, 3)]  # lowest, middle, highest


# ---- statistics through the study ---------------------------------------------------------


def test_spearman_and_rank_test_match_scipy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=60)
    y = x + 0.5 * rng.normal(size=60)
    y[:5] = y[5]  # ties
    assert stats.spearman(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    cfg = capability.DensityConfig(capability.CONFIGS["smoke"].sae, 1, 1, 1, 1, 1, 1, 1, n_boot=300, n_perm=300)
    res = _study(x, y).headline(cfg)
    assert res == stats.rank_test(x, y, 300, 300, 0)
    assert res["ci_low"] < res["rho"] < res["ci_high"]
    assert res["p_perm"] < 0.05
    null = stats.rank_test(x, rng.normal(size=60), n_boot=100, n_perm=300, seed=1)
    assert null["p_perm"] > 0.01


def test_layer_share_and_within_layer_rank_test():
    layer_only = torch.arange(4.0)[:, None].expand(4, 5)
    assert stats.layer_share(layer_only) == pytest.approx(1.0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, generator=g)
    assert stats.layer_share(x - x.mean(1, keepdim=True)) == pytest.approx(0.0, abs=1e-12)
    y = layer_only.repeat(2, 1)[:6] * 10 + x  # shares its within-layer order with x
    cfg = capability.DensityConfig(capability.CONFIGS["smoke"].sae, 1, 1, 1, 1, 1, 1, 1, n_perm=200)
    res = _study(x, y).within_layers(cfg)
    assert res["rho"] == pytest.approx(1.0) and res["p_perm"] < 0.01 and res["n_groups"] == 6
    assert _study(x, y).layer_shares()["wanda"] > 0.9
    # a shared layer effect alone gives no within-layer correlation, though the global ρ is high
    z = torch.randn(6, 5, generator=g)
    assert stats.spearman(y, layer_only.repeat(2, 1)[:6] * 10 + z) > 0.5
    assert abs(_study(x, z).within_layers(cfg)["rho"]) < 0.5


def test_importance_table_tests_both_signals_on_measured_heads():
    g = torch.Generator().manual_seed(1)
    density, wanda = torch.rand(4, 5, generator=g), torch.rand(4, 5, generator=g)
    loss = density + 0.1 * torch.rand(4, 5, generator=g)
    loss[1:3] = float("nan")  # two layers not ablated
    abl = {"loss": loss, "logp": -loss, "recall": torch.zeros(4, 5)}  # no head changes recall
    cfg = capability.DensityConfig(capability.CONFIGS["smoke"].sae, 1, 1, 1, 1, 1, 1, 1, n_boot=100, n_perm=100)
    table = capability.importance_table({"density": density, "wanda": wanda}, abl, cfg)
    row = table.loc[("ΔCE when ablated", "density")]
    assert row["n"] == 10 and row["rho"] > 0.8
    assert row["partial ρ given the other"] == pytest.approx(stats.partial_spearman(density, loss, wanda))
    assert table.loc[("Δ log p(answer) when ablated", "density"), "rho"] == pytest.approx(-row["rho"])
    flat = table.loc[("Δ fact recall when ablated", "density")]  # ρ undefined, so no p-value either
    assert math.isnan(flat["rho"]) and math.isnan(flat["p_perm"])


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


def test_orthogonality_verdict():
    v = capability.orthogonality_verdict
    assert v({"rho": 0.01, "p_perm": 0.8, "n": 2000}).verdict == "reproduced"  # inside ±0.1, not significant
    assert v({"rho": 0.06, "p_perm": 0.001, "n": 5000}).verdict == "partly"  # detectable but inside the margin
    assert v({"rho": 0.45, "p_perm": 0.0005, "n": 270}).verdict == "not reproduced"  # the claim fails
    assert v({"rho": 0.05, "p_perm": 0.4, "n": 20}).verdict == "inconclusive"  # too few heads to tell
    out = v({"rho": 0.45, "p_perm": 0.0005, "n": 270})
    assert "TOST" in out.criterion and "0.450" in out.evidence and out.verdict in capability.VERDICTS


def test_importance_verdict():
    v = capability.importance_verdict

    def row(rho, p, partial, n=270):
        return {"rho": rho, "p_perm": p, "partial ρ given the other": partial, "n": n}

    assert v(row(0.3, 0.001, 0.25)).verdict == "reproduced"
    assert v(row(-0.3, 0.001, -0.25)).verdict == "partly"  # information, but denser heads matter less
    assert v(row(0.02, 0.7, 0.01, n=2000)).verdict == "not reproduced"  # the claim fails: nothing beyond Wanda
    assert v(row(0.3, 0.001, 0.05, n=30)).verdict == "inconclusive"
    assert v(row(float("nan"), 1.0, float("nan"))).verdict == "inconclusive"  # constant importance


def test_transition_verdict():
    v = capability.transition_verdict
    assert v({"rho": -0.6, "p_perm": 0.002, "n": 24}).verdict == "reproduced"
    assert v({"rho": 0.6, "p_perm": 0.002, "n": 24}).verdict == "not reproduced"  # denser heads break later
    assert v({"rho": 0.0, "p_perm": 0.9, "n": 3000}).verdict == "not reproduced"  # equivalent to no relation
    assert v({"rho": -0.2, "p_perm": 0.3, "n": 24}).verdict == "inconclusive"
    assert v(None).verdict == "inconclusive"


def _budget(rows) -> pd.DataFrame:
    frame = [{"mean sparsity": 0.0, "strategy": "dense", "perplexity": 10.0, "fact recall": 1.0, "probe accuracy": 0.9}]
    for mean, strat, ppl, rec, acc in rows:
        frame.append(
            {"mean sparsity": mean, "strategy": strat, "perplexity": ppl, "fact recall": rec, "probe accuracy": acc}
        )
    return pd.DataFrame(frame)


def test_budget_summary():
    frame = _budget(
        [
            (0.3, "capability", 12.0, 0.50, 0.80),
            (0.3, "wanda", 11.0, 0.75, 0.80),
            (0.3, "uniform", 11.0, 0.75, 0.70),
            (0.3, "random", 13.0, 0.25, 0.60),
            (0.5, "capability", 15.0, 0.50, 0.7),
            (0.5, "wanda", 16.0, 0.25, 0.6),
            (0.5, "uniform", 14.0, 0.50, 0.7),
            (0.5, "random", 17.0, 0.0, 0.5),
        ]
    )
    s = capability.budget_summary(frame)
    assert list(s.columns) == [0.3, 0.5]
    assert s[0.3]["best by perplexity"] == "uniform, wanda"
    assert s[0.3]["best by probe accuracy"] == "capability, wanda"
    assert s[0.3]["capability vs Wanda, perplexity"] == "wanda"
    assert s[0.3]["capability vs Wanda, probe accuracy"] == "tie"
    assert s[0.3]["metrics agree on a best strategy"] is True  # wanda is best by all three
    assert s[0.3]["perplexity and fact recall disagree (capability vs Wanda)"] is False
    assert s[0.5]["best by fact recall"] == "capability, uniform" and s[0.5]["best by perplexity"] == "uniform"
    assert s[0.5]["capability vs Wanda, perplexity"] == "capability"
    assert s[0.5]["perplexity and fact recall disagree (capability vs Wanda)"] is False
    frame.loc[(frame["mean sparsity"] == 0.5) & (frame["strategy"] == "capability"), "perplexity"] = 17.0
    s = capability.budget_summary(frame)
    assert s[0.5]["perplexity and fact recall disagree (capability vs Wanda)"] is True
    assert s[0.5]["metrics agree on a best strategy"] is True  # uniform is best by all three
    frame.loc[(frame["mean sparsity"] == 0.5) & (frame["strategy"] == "uniform"), "perplexity"] = 18.0
    s = capability.budget_summary(frame)
    assert s[0.5]["best by perplexity"] == "wanda" and s[0.5]["metrics agree on a best strategy"] is False


def test_perplexity_verdict_and_report():
    def frame(cap_ppl, cap_rec, w_ppl, w_rec):
        return _budget(
            [
                (0.5, "capability", cap_ppl, cap_rec, 0.7),
                (0.5, "wanda", w_ppl, w_rec, 0.7),
                (0.5, "uniform", 14.0, 0.5, 0.7),
                (0.5, "random", 15.0, 0.5, 0.7),
            ]
        )

    # n = 100 facts: two standard errors are 0.10
    assert capability.binomial_noise(100) == pytest.approx(0.1)
    assert capability.perplexity_verdict(frame(14.0, 0.8, 13.0, 0.5), 100).verdict == "reproduced"
    assert capability.perplexity_verdict(frame(14.0, 0.55, 13.0, 0.5), 100).verdict == "partly"
    assert capability.perplexity_verdict(frame(13.0, 0.8, 14.0, 0.5), 100).verdict == "not reproduced"
    assert capability.perplexity_verdict(frame(13.0, 0.52, 14.0, 0.5), 100).verdict == "inconclusive"
    assert capability.perplexity_verdict(frame(13.0, 0.8, 13.0, 0.5), 100).verdict == "inconclusive"  # tie
    (line,) = capability.budget_report(frame(14.0, 0.55, 13.0, 0.5), 100)
    assert "opposite way" in line and "within two standard errors (100 facts)" in line
    (line,) = capability.budget_report(frame(13.0, 0.8, 14.0, 0.5), 100)
    assert "the same way" in line and "within two standard errors" not in line
