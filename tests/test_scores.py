"""analysis.scores, analysis.sweep and evaluate.Reference against direct computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from analysis import scores as S
from analysis import sweep
from analysis.evaluate import Reference, lm_score


def test_weight_magnitude_is_the_squared_frobenius_norm(tiny_model):
    s = S.weight_magnitude(tiny_model)
    b = tiny_model.blocks[1]
    attn = sum(float(w.detach().double().pow(2).sum()) for w in (b.attn.W_Q, b.attn.W_K, b.attn.W_V, b.attn.W_O))
    mlp = float(b.mlp.W_in.detach().double().pow(2).sum() + b.mlp.W_out.detach().double().pow(2).sum())
    assert s.values[1, 0].item() == pytest.approx(attn)
    assert s.values[1, 1].item() == pytest.approx(mlp)


def test_gradient_magnitude_matches_autograd_and_leaves_the_model_alone(tiny_model):
    tokens = torch.randint(0, 50, (96,), generator=torch.Generator().manual_seed(0))
    before = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    s = S.gradient_magnitude(tiny_model, tokens, context=32, batch_size=2)  # 3 windows, 2 batches
    x = tokens.view(3, 32)
    logits = tiny_model(x)
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, 50), x[:, 1:].reshape(-1))  # independent loss
    w = tiny_model.blocks[0].mlp.W_in
    (g_in, g_out) = torch.autograd.grad(loss, [w, tiny_model.blocks[0].mlp.W_out])
    assert s.values[0, 1].item() == pytest.approx(float(g_in.double().pow(2).sum() + g_out.double().pow(2).sum()), rel=1e-4)
    for n, p in tiny_model.named_parameters():
        assert torch.equal(p, before[n]) and p.grad is None


def test_levels_follow_the_seeds_thresholds():
    v = torch.tensor([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0], [10.0, 4.0]], dtype=torch.float64)
    s = S.ComponentScores("t", v)
    z = s.zscores()
    assert torch.allclose(z.mean(0), torch.zeros(2, dtype=torch.float64), atol=1e-12)
    lv = s.levels()
    expect = S.levels_from_z(z[:, 0])
    assert [lv[f"blocks.{l}.attn"] for l in range(4)] == expect
    assert expect == ["low", "medium", "medium", "high"]  # z = -0.71, -0.49, -0.27, 1.48
    assert S.levels_from_z(torch.tensor([-0.51, -0.5, 0.5, 0.51])) == ["low", "medium", "medium", "high"]


def test_constant_scores_cannot_be_bucketed():
    with pytest.raises(ValueError, match="distinct"):
        S.ComponentScores("flat", torch.ones(4, 2)).levels()


def test_random_allocation_keeps_bucket_sizes():
    s = S.ComponentScores("m", torch.arange(20, dtype=torch.float64).view(10, 2))
    base = sweep.level_assignment("m", {"m": s})
    shuffled = sweep.level_assignment("random:m:3", {"m": s})
    for kind in ("attn", "mlp"):  # same level counts within each kind, so the same model size
        assert sorted(v for c, v in base.items() if c.endswith(kind)) == sorted(
            v for c, v in shuffled.items() if c.endswith(kind))
    assert base != shuffled
    assert shuffled == sweep.level_assignment("random:m:3", {"m": s})  # seeded
    assert set(sweep.level_assignment("constant low", {"m": s}).values()) == {"low"}


def test_reference_scores_agree_with_lm_score(tiny_model):
    tokens = torch.randint(0, 50, (200,), generator=torch.Generator().manual_seed(1))
    ref = Reference(tiny_model, tokens, context=32, batch_size=3)
    direct = lm_score(tiny_model, tokens[: 6 * 32], context=32)  # disjoint windows, same tokens
    assert ref.base.perplexity == pytest.approx(direct.perplexity, rel=1e-5)
    assert ref.base.accuracy == pytest.approx(direct.accuracy)
    assert abs(ref.base.kl) < 1e-6


def test_sweep_cells_compress_evaluate_and_resume(tiny_model, tmp_path, monkeypatch):
    import analysis.cache as cache_mod

    monkeypatch.setattr(cache_mod, "CACHE_DIR", tmp_path)
    tokens = torch.randint(0, 50, (128,), generator=torch.Generator().manual_seed(2))
    ref = Reference(tiny_model, tokens, context=32)
    scores = {"weight magnitude": S.weight_magnitude(tiny_model)}
    cells = sweep.grid(["weight magnitude", "constant high"], [(0.0, 0.0, 0.0)], [(16, 16, 16), (2, 3, 4)])
    results = sweep.run_sweep(tiny_model, ref, cells, scores, cache_config={"test": 1})
    by = {(r.cell.allocation, r.cell.bits): r for r in results}
    dense = by["weight magnitude", (16, 16, 16)]
    assert dense.kl == pytest.approx(0.0, abs=1e-6) and dense.bits_per_weight == 16.0
    mixed = by["weight magnitude", (2, 3, 4)]
    assert mixed.kl > 0 and mixed.bits_per_weight < 4.1
    assert 4.0 <= by["constant high", (2, 3, 4)].bits_per_weight < 4.6  # the high level's 4 bits everywhere
    monkeypatch.setattr(sweep, "evaluate_cell", lambda *a, **k: pytest.fail("cell recomputed"))
    again = sweep.run_sweep(tiny_model, ref, cells, scores, cache_config={"test": 1})
    assert [r.perplexity for r in again] == [r.perplexity for r in results]


@pytest.mark.parametrize("kw, match", [
    (dict(prune=(0.1, 1.0, 0.0)), r"\[0, 1\)"),
    (dict(bits=(2, 40, 4)), r"\[1, 32\]"),
    (dict(bits=(2, 4)), "one value per level"),
])
def test_bad_cells(kw, match):
    with pytest.raises(ValueError, match=match):
        sweep.Cell("x", **kw)


def test_empty_grid_and_unknown_allocation():
    with pytest.raises(ValueError, match="Empty sweep grid"):
        sweep.grid([], [(0, 0, 0)], [(4, 4, 4)])
    s = S.ComponentScores("m", torch.arange(4, dtype=torch.float64).view(2, 2))
    with pytest.raises(ValueError, match="Unknown allocation"):
        sweep.level_assignment("nonsense", {"m": s})


def test_sweep_runs_in_worker_processes(tmp_path, monkeypatch, save_tiny):
    """n_procs=2: workers load the model by path, and their cells equal the in-process ones."""
    import analysis.cache as cache_mod
    from analysis.models import load_model

    monkeypatch.setattr(cache_mod, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setenv("ANALYSIS_CACHE_DIR", str(tmp_path / "cache"))  # the workers' cache
    folder, _ = save_tiny(tmp_path, "gpt2")
    model = load_model(str(folder), device="cpu")
    args = dict(tokens=torch.randint(0, 128, (128,), generator=torch.Generator().manual_seed(3)), context=32)
    ref = Reference(model, **args)
    scores = {"weight magnitude": S.weight_magnitude(model)}
    cells = sweep.grid(["weight magnitude"], [(0.2, 0.1, 0.0)], [(3, 4, 5), (2, 2, 2)])
    par = sweep.run_sweep(model, ref, cells, scores, cache_config={"t": 2}, n_procs=2,
                          model_name=str(folder), reference_args=args)
    serial = [sweep.evaluate_cell(model, ref, c, scores) for c in cells]
    assert [r.perplexity for r in par] == pytest.approx([r.perplexity for r in serial], rel=1e-5)


def test_tercile_levels_are_equal_count_and_follow_rank():
    v = torch.tensor([[5.0, 0.0], [1.0, 1.0], [100.0, 2.0], [2.0, 3.0], [3.0, 4.0], [4.0, 5.0]], dtype=torch.float64)
    s = S.ComponentScores("t", v)
    lv = s.tercile_levels()
    attn = [lv[f"blocks.{l}.attn"] for l in range(6)]
    assert attn == ["high", "low", "high", "low", "medium", "medium"]  # ranks 4, 0, 5, 1, 2, 3
    assert sorted(lv[f"blocks.{l}.mlp"] for l in range(6)) == ["high", "high", "low", "low", "medium", "medium"]
    assert sweep.level_assignment("t (terciles)", {"t": s}) == lv
    # the heavy tail (100) puts every other attention layer in one z-score bucket
    assert sum(s.levels()[f"blocks.{l}.attn"] == "medium" for l in range(6)) >= 4
