"""analysis.scores against direct computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from analysis import scores
from analysis.studies import sweep


def test_weight_magnitude_is_the_squared_frobenius_norm(tiny_model):
    s = scores.weight_magnitude(tiny_model)
    b = tiny_model.blocks[1]
    attn = sum(float(w.detach().double().pow(2).sum()) for w in (b.attn.W_Q, b.attn.W_K, b.attn.W_V, b.attn.W_O))
    mlp = float(b.mlp.W_in.detach().double().pow(2).sum() + b.mlp.W_out.detach().double().pow(2).sum())
    assert s.values[1, 0].item() == pytest.approx(attn)
    assert s.values[1, 1].item() == pytest.approx(mlp)


def test_gradient_magnitude_matches_autograd_and_leaves_the_model_alone(tiny_model):
    tokens = torch.randint(0, 50, (96,), generator=torch.Generator().manual_seed(0))
    before = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    s = scores.gradient_magnitude(tiny_model, tokens, context=32, batch_size=2, cache=False)  # 3 windows, 2 batches
    x = tokens.view(3, 32)
    logits = tiny_model(x)
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, 50), x[:, 1:].reshape(-1))  # independent loss
    w = tiny_model.blocks[0].mlp.W_in
    (g_in, g_out) = torch.autograd.grad(loss, [w, tiny_model.blocks[0].mlp.W_out])
    assert s.values[0, 1].item() == pytest.approx(
        float(g_in.double().pow(2).sum() + g_out.double().pow(2).sum()), rel=1e-4
    )
    for n, p in tiny_model.named_parameters():
        assert torch.equal(p, before[n]) and p.grad is None


def test_levels_follow_the_seeds_thresholds():
    v = torch.tensor([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0], [10.0, 4.0]], dtype=torch.float64)
    s = scores.ComponentScores("t", v)
    z = s.zscores()
    assert torch.allclose(z.mean(0), torch.zeros(2, dtype=torch.float64), atol=1e-12)
    lv = s.levels()
    expect = scores.levels_from_z(z[:, 0])
    assert [lv[f"blocks.{l}.attn"] for l in range(4)] == expect
    assert expect == ["low", "medium", "medium", "high"]  # z = -0.71, -0.49, -0.27, 1.48
    assert scores.levels_from_z(torch.tensor([-0.51, -0.5, 0.5, 0.51])) == ["low", "medium", "medium", "high"]


def test_constant_scores_cannot_be_bucketed():
    with pytest.raises(ValueError, match="distinct"):
        scores.ComponentScores("flat", torch.ones(4, 2)).levels()


def test_tercile_levels_are_equal_count_and_follow_rank():
    v = torch.tensor([[5.0, 0.0], [1.0, 1.0], [100.0, 2.0], [2.0, 3.0], [3.0, 4.0], [4.0, 5.0]], dtype=torch.float64)
    s = scores.ComponentScores("t", v)
    lv = s.tercile_levels()
    attn = [lv[f"blocks.{l}.attn"] for l in range(6)]
    assert attn == ["high", "low", "high", "low", "medium", "medium"]  # ranks 4, 0, 5, 1, 2, 3
    assert sorted(lv[f"blocks.{l}.mlp"] for l in range(6)) == ["high", "high", "low", "low", "medium", "medium"]
    assert sweep.level_assignment("t (terciles)", {"t": s}) == lv
    # the heavy tail (100) puts every other attention layer in one z-score bucket
    assert sum(s.levels()[f"blocks.{l}.attn"] == "medium" for l in range(6)) >= 4


def test_gradient_magnitude_caches_by_model_and_tokens(tiny_model, monkeypatch, tmp_path):
    monkeypatch.setattr("analysis.cache.CACHE_DIR", tmp_path)
    tokens = torch.randint(0, 50, (64,), generator=torch.Generator().manual_seed(1))
    first = scores.gradient_magnitude(tiny_model, tokens, context=32)
    assert len(list(tmp_path.rglob("*.pt"))) == 1
    assert torch.equal(scores.gradient_magnitude(tiny_model, tokens, context=32).values, first.values)
    assert len(list(tmp_path.rglob("*.pt"))) == 1  # a hit, not a second entry
    other = scores.gradient_magnitude(tiny_model, tokens.flip(0), context=32)  # other tokens, other key
    assert not torch.equal(other.values, first.values)
    with torch.no_grad():
        tiny_model.blocks[0].mlp.W_in.mul_(2.0)  # other weights, same name: another entry
    changed = scores.gradient_magnitude(tiny_model, tokens, context=32)
    assert not torch.equal(changed.values, first.values)
    assert len(list(tmp_path.rglob("*.pt"))) == 3


def test_levels_z_score_within_each_kind_and_pooling_is_only_an_option():
    # attention scores are small, MLP scores large: pooled (not the seed's definition), every MLP
    # is high and every attention low; the default z-scores each kind over its own layers
    v = torch.tensor([[1.0, 10.0], [2.0, 11.0], [3.0, 12.0], [4.0, 13.0]], dtype=torch.float64)
    s = scores.ComponentScores("t", v)
    pooled = s.levels(by_kind=False)
    assert [pooled[f"blocks.{l}.attn"] for l in range(4)] == ["low"] * 4
    assert [pooled[f"blocks.{l}.mlp"] for l in range(4)] == ["high"] * 4
    per_kind = s.levels()
    assert [per_kind[f"blocks.{l}.mlp"] for l in range(4)] == ["low", "medium", "medium", "high"]  # z = ±1.16, ±0.39
    assert per_kind == s.levels(by_kind=True) and [per_kind[f"blocks.{l}.attn"] for l in range(4)] == [
        "low",
        "medium",
        "medium",
        "high",
    ]
    assert torch.allclose(s.zscores(by_kind=False).reshape(-1), scores.zscores(v.reshape(-1)))
    frame = s.frame(by_kind=False)
    assert frame["mlp level"].tolist() == ["high"] * 4 and frame["attn"].tolist() == [1.0, 2.0, 3.0, 4.0]


def test_rank_correlations_follow_the_ranks():
    up = scores.ComponentScores("up", torch.tensor([[1.0, 4.0], [2.0, 3.0], [3.0, 2.0], [4.0, 1.0]]))
    down = scores.ComponentScores("down", torch.tensor([[4.0, 1.0], [3.0, 2.0], [2.0, 3.0], [1.0, 5.0]]))
    corr = scores.rank_correlations([up, down])
    assert corr["attn"].loc["up", "down"] == pytest.approx(-1.0)
    assert corr["mlp"].loc["up", "down"] == pytest.approx(-1.0)
    assert corr["attn"].loc["up", "up"] == pytest.approx(1.0)
    pooled = scores.rank_correlations([up, down], by_kind=False)["all"].loc["up", "down"]
    assert pooled == pytest.approx(-0.99381, abs=1e-5)  # scipy.stats.spearmanr of the flat scores


def test_samples_must_match_the_scores_shape():
    with pytest.raises(ValueError, match="samples"):
        scores.ComponentScores("t", torch.ones(4, 2).cumsum(0), samples=torch.ones(3, 5, 2))
    with pytest.raises(ValueError, match="no per-unit samples"):
        scores.ComponentScores("t", torch.ones(4, 2).cumsum(0)).split_half()


def test_gradient_curve_checkpoints_equal_the_score_on_each_prefix(tiny_model):
    tokens = torch.randint(0, 50, (160,), generator=torch.Generator().manual_seed(5))  # 5 windows of 32
    curve = scores.gradient_magnitude_curve(tiny_model, tokens, [64, 160], context=32, batch_size=3, cache=False)
    assert sorted(curve) == [64, 160]
    for n in (64, 160):  # each checkpoint is the gradient of the mean loss over its own prefix
        direct = scores.gradient_magnitude(tiny_model, tokens[:n], context=32, batch_size=2, cache=False)
        assert torch.allclose(curve[n].values, direct.values, rtol=1e-4)
    assert not torch.allclose(curve[64].values, curve[160].values, rtol=1e-2)
    table = scores.curve_agreement(curve)
    assert table.loc[160].tolist() == pytest.approx([1.0, 1.0, 1.0])  # the largest agrees with itself
    assert list(table.index) == [64, 160]


def test_gradient_curve_rejects_too_few_tokens(tiny_model):
    with pytest.raises(ValueError, match="at least context="):
        scores.gradient_magnitude_curve(tiny_model, torch.arange(10), [10], context=32)
