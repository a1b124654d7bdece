"""analysis.studies.sweep and evaluate.Reference against direct computations."""

from __future__ import annotations

import math

import pytest
import torch

from analysis import scores as S
from analysis.evaluate import Reference, lm_score
from analysis.studies import sweep


def test_random_allocation_keeps_bucket_sizes():
    s = S.ComponentScores("m", torch.arange(20, dtype=torch.float64).view(10, 2))
    base = sweep.level_assignment("m", {"m": s})
    shuffled = sweep.level_assignment("random:m:3", {"m": s})
    for kind in ("attn", "mlp"):  # same level counts within each kind, so the same model size
        assert sorted(v for c, v in base.items() if c.endswith(kind)) == sorted(
            v for c, v in shuffled.items() if c.endswith(kind)
        )
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


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(prune=(0.1, 1.0, 0.0)), r"\[0, 1\)"),
        (dict(bits=(2, 40, 4)), r"\[1, 32\]"),
        (dict(bits=(2, 4)), "one value per level"),
    ],
)
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
    par = sweep.run_sweep(
        model, ref, cells, scores, cache_config={"t": 2}, n_procs=2, model_name=str(folder), reference_args=args
    )
    serial = [sweep.evaluate_cell(model, ref, c, scores) for c in cells]
    assert [r.perplexity for r in par] == pytest.approx([r.perplexity for r in serial], rel=1e-5)


# --------------------------------------------------------------------------------------
# Verdicts on hand-made results whose answers are known
# --------------------------------------------------------------------------------------


def _res(alloc, prune, bits, ppl, mb, kl=0.0, recall=1.0):
    return sweep.CellResult(sweep.Cell(alloc, prune, bits), ppl, kl, recall, 0.5, 4.0, mb, 0.0, 0.0)


def test_versus_random_is_the_log_ratio_to_the_mean_control():
    s = ((0.3, 0.2, 0.1), (2, 3, 4))
    results = [
        _res("m", *s, ppl=10.0, mb=5.0, kl=0.2, recall=0.5),
        _res("random:m:0", *s, ppl=12.0, mb=5.0, kl=0.4, recall=0.7),
        _res("random:m:1", *s, ppl=8.0, mb=5.0, kl=0.2, recall=0.5),
        _res(sweep.UNIFORM, (0.1,) * 3, (4,) * 3, ppl=9.0, mb=5.0),  # no controls: no row
        _res("n", *s, ppl=10.0, mb=5.0),
    ]  # no controls: no row
    vs = sweep.versus_random(results)
    assert list(vs["score"]) == ["m"]
    row = vs.iloc[0]
    assert row["delta log ppl"] == pytest.approx(math.log(10) - (math.log(12) + math.log(8)) / 2)
    assert row["delta log ppl"] > 0  # the geometric mean of the controls (9.80) beats 10: the score does not help
    assert row["delta KL"] == pytest.approx(-0.1) and row["delta fact recall"] == pytest.approx(-0.1)
    assert bool(row["same size"]) and row["n random"] == 2
    results[2] = _res("random:m:1", *s, ppl=8.0, mb=5.5)  # a control of another size is flagged
    assert not bool(sweep.versus_random(results).iloc[0]["same size"])


def test_uniform_matched_interpolates_log_perplexity_in_size():
    uniform = [_res(sweep.UNIFORM, (0,) * 3, (b,) * 3, ppl=p, mb=mb) for b, p, mb in ((3, 20.0, 4.0), (5, 10.0, 8.0))]
    results = [
        _res("m", (0,) * 3, (2, 3, 4), ppl=12.0, mb=6.0),
        _res("w", (0,) * 3, (2, 3, 4), ppl=16.0, mb=6.0),
        _res("m", (0,) * 3, (8, 8, 8), ppl=5.0, mb=10.0),
    ]
    m = sweep.uniform_matched(results, uniform)
    assert m["uniform ppl at same size"].iloc[0] == pytest.approx(math.sqrt(200))  # halfway in log ppl
    assert m["delta log ppl"].iloc[0] == pytest.approx(math.log(12 / math.sqrt(200)))
    assert m["delta log ppl"].iloc[0] < 0 < m["delta log ppl"].iloc[1]  # m beats uniform, w does not
    assert math.isnan(m["delta log ppl"].iloc[2])  # outside the uniform cells' sizes: not compared


def test_matched_verdict_and_summary_count_wins():
    import pandas as pd

    vs = pd.DataFrame(
        {
            "score": ["a", "a", "b"],
            "delta log ppl": [-0.2, 0.1, 0.3],
            "delta KL": [0.0, 0.1, 0.2],
            "delta fact recall": [0.0, 0.0, -0.1],
        }
    )
    matched = pd.DataFrame({"allocation": ["a", "b", "b"], "delta log ppl": [-0.1, 0.2, float("nan")]})
    v = sweep.matched_verdict(vs, matched)
    assert (v["wins vs random"], v["n vs random"]) == (1, 3)
    assert v["mean vs random"] == pytest.approx(0.2 / 3)
    assert (v["wins vs uniform"], v["n vs uniform"]) == (1, 2)  # the NaN comparison is not counted
    assert v["mean vs uniform"] == pytest.approx(0.05)
    s = sweep.allocation_summary(vs, matched)
    assert s.loc["a", "better than random (settings)"] == 1 and s.loc["b", "better than random (settings)"] == 0
    assert s.loc["a", "delta log ppl"] == pytest.approx(-0.05)
    assert s.loc["b", "vs uniform at same size (mean delta log ppl)"] == pytest.approx(0.2)
    lost = sweep.matched_verdict(vs.assign(**{"delta log ppl": [0.1, 0.1, 0.1]}), matched.iloc[1:])
    assert lost["wins vs random"] == 0 and lost["wins vs uniform"] == 0


def _seed_frame(ppl_of):
    """Three allocations x two prune settings x two bit settings; ``ppl_of(alloc, prune_total, bits_total)``."""
    results = []
    for prune in ((0.3, 0.2, 0.1), (0.5, 0.3, 0.1)):
        for bits in ((2, 3, 4), (3, 4, 5)):
            for alloc in ("causal tracing", "weight magnitude", "constant high"):
                mb = 10.0 - 5 * sum(prune) + sum(bits) / 10
                mb = 10.0 if alloc == "constant high" else mb  # the same pruning everywhere: its size never changes
                results.append(_res(alloc, prune, bits, ppl_of(alloc, sum(prune), sum(bits)), mb))
    return sweep.frame(results)


def test_seed_claims_hold_on_a_sweep_that_shows_them():
    import pandas as pd

    f = _seed_frame(lambda a, p, b: 10 * p + (1 if a == "causal tracing" else 2) - 0.1 * b)
    vs = pd.DataFrame(
        {
            "score": ["causal tracing"] * 2 + ["gradient magnitude"] * 2 + ["weight magnitude"] * 2,
            "delta log ppl": [-0.1, -0.2, -0.05, -0.01, 0.1, -0.01],
        }
    )
    c = sweep.seed_claims(f, vs, ["causal tracing", "weight magnitude", "gradient magnitude"])
    assert list(c["holds"]) == [True, True, True, True]
    assert "in 4 of 4" in c["evidence (ours)"].iloc[0]  # "constant high" never changes size: not counted
    assert "causal tracing" in c["evidence (ours)"].iloc[3]


def test_seed_claims_fail_on_a_sweep_that_contradicts_them():
    import pandas as pd

    f = _seed_frame(lambda a, p, b: 20 - 10 * p + (1 if a == "weight magnitude" else 2))  # pruning helps
    vs = pd.DataFrame(
        {"score": ["causal tracing"] * 2 + ["weight magnitude"] * 2, "delta log ppl": [0.1, -0.01, -0.3, -0.2]}
    )
    c = sweep.seed_claims(f, vs, ["causal tracing", "weight magnitude"])
    assert list(c["holds"]) == [False, False, False, False]
    assert "weight magnitude" in c["evidence (ours)"].iloc[3]
    # no random controls: the claims that need them are untested, not failed
    none = sweep.seed_claims(f, vs.iloc[:0], ["causal tracing", "weight magnitude"])
    assert none["holds"].iloc[1] is None and none["holds"].iloc[2] is None
