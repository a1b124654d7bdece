"""Linearity score against the paper's own package, least-squares maps against lstsq, streamed fits."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from analysis import geometry
from analysis.compress import linear_block


def microscope():
    """``llm_microscope.functions`` loaded from its file: 0.0.7's ``__init__`` imports a module that
    does not exist (``from logit_lens import *``), so the package itself cannot be imported."""
    spec = importlib.util.find_spec("llm_microscope")
    if spec is None:
        pytest.skip("llm-microscope is not installed (pip install --no-deps llm-microscope==0.0.7)")
    path = Path(spec.submodule_search_locations[0]) / "functions.py"
    fspec = importlib.util.spec_from_file_location("llm_microscope_functions", path)
    module = importlib.util.module_from_spec(fspec)
    fspec.loader.exec_module(module)
    return module


def pair(n=300, d=12, seed=0, noise=0.5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(0.5, 3, d, dtype=torch.float64)
    y = (
        x
        + torch.tanh(x @ torch.randn(d, d, generator=g, dtype=torch.float64))
        + noise * torch.randn(n, d, generator=g, dtype=torch.float64)
    )
    return x, y


@pytest.mark.parametrize("seed", [0, 1])
def test_score_equals_procrustes_similarity(seed):
    mic = microscope()
    x, y = pair(seed=seed)
    assert geometry.linearity_score(x, y) == pytest.approx(mic.procrustes_similarity(x, y), rel=1e-9)
    # without the residual: the paper's centered variant applied as (x, y - x); 0.0.7's own
    # procrustes_similarity_centered returns the type `float`, not a number
    ours = geometry.linearity_score(x, y, residual=False)
    assert ours == pytest.approx(mic.procrustes_similarity(x, y - x), rel=1e-9)
    assert ours < geometry.linearity_score(x, y)  # the identity carries part of y's variance


def test_score_on_model_states_equals_procrustes_similarity(tiny_model):
    mic = microscope()
    tokens = torch.randint(0, 50, (4, 64), generator=torch.Generator().manual_seed(0))
    _, cache = tiny_model.run_with_cache(tokens)
    x = cache["blocks.1.hook_resid_pre"].reshape(-1, 32).double()
    y = cache["blocks.1.hook_resid_post"].reshape(-1, 32).double()
    assert geometry.linearity_score(x, y) == pytest.approx(mic.procrustes_similarity(x, y), rel=1e-7)
    assert geometry.linearity_score(x, y, False) == pytest.approx(mic.procrustes_similarity(x, y - x), rel=1e-7)


def test_streamed_score_equals_direct_score():
    x, y = pair()
    stats = geometry.GramStats()
    for i in range(0, 300, 64):
        stats.add(x[i : i + 64].float(), y[i : i + 64].float())
    assert geometry.score_from_stats(stats) == pytest.approx(geometry.linearity_score(x, y), rel=1e-5)
    upd = stats.update_stats()
    assert geometry.score_from_stats(upd) == pytest.approx(geometry.linearity_score(x, y, False), rel=1e-5)
    m = geometry.fit_map(stats)
    assert geometry.r2_from_stats(m, stats) == pytest.approx(geometry.linearity_score(x, y), rel=1e-5)


def test_map_equals_lstsq():
    x, y = pair(n=80, d=6, seed=3)
    stats = geometry.GramStats().add(x, y)
    m = geometry.fit_map(stats, ridge=0.0)
    design = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    ref = torch.linalg.lstsq(design, y, driver="gelsd").solution
    torch.testing.assert_close(m.weight, ref[:-1], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(m.bias, ref[-1], rtol=1e-4, atol=1e-6)
    assert m.ridge == 0.0


def test_singular_system_is_regularized_and_reported():
    x, y = pair(n=5, d=12)  # fewer tokens than dimensions: X^T X is singular
    stats = geometry.GramStats().add(x, y)
    with pytest.raises(ValueError, match="singular"):
        geometry.fit_map(stats, ridge=0.0)
    m = geometry.fit_map(stats)
    assert m.ridge > 0 and torch.isfinite(m.weight).all()


def test_empty_calibration_set_is_an_error(tiny_model):
    with pytest.raises(ValueError, match="non-empty"):
        geometry.fit_map(geometry.GramStats())
    with pytest.raises(ValueError, match="at least context="):
        geometry.block_stats(tiny_model, torch.zeros(0, dtype=torch.long), context=16)


def test_rank_out_of_range_is_an_error():
    stats = geometry.GramStats().add(*pair(d=6))
    for bad in (0, 7):
        with pytest.raises(ValueError, match="rank must be"):
            geometry.reduced_rank(stats, bad)


def test_reduced_rank_full_rank_is_the_full_map():
    stats = geometry.GramStats().add(*pair(d=6))
    full, r6 = geometry.fit_map(stats), geometry.reduced_rank(stats, 6)
    torch.testing.assert_close(r6.weight, full.weight, rtol=1e-6, atol=1e-8)
    r1 = geometry.reduced_rank(stats, 1)
    assert torch.linalg.matrix_rank(r1.weight) == 1
    assert geometry.r2_from_stats(r1, stats) < geometry.r2_from_stats(full, stats)


def test_r2_is_one_for_an_exactly_linear_block(tiny_model):
    """Block 0 is overwritten by a known affine map; the fit recovers it and scores R² = 1 held out."""
    g = torch.Generator().manual_seed(1)
    d = tiny_model.cfg.d_model
    known = linear_block.BlockMap(
        0,
        torch.randn(d, generator=g, dtype=torch.float64),
        weight=torch.randn(d, d, generator=g, dtype=torch.float64) / 6,
    )
    calib = torch.randint(0, 50, (2048,), generator=g)
    held = torch.randint(0, 50, (512,), generator=g)
    with linear_block.replaced(tiny_model, [known]):
        stats = geometry.block_stats(tiny_model, calib, context=32)["block"][0]
        m = geometry.fit_map(stats)
        r2 = geometry.heldout_r2(tiny_model, held, {0: m}, context=32)
        r2_update = geometry.heldout_r2(tiny_model, held, {0: m}, context=32, update=True)
    torch.testing.assert_close(m.weight, known.weight, rtol=1e-3, atol=1e-4)
    assert r2[0] == pytest.approx(1.0, abs=1e-6)
    assert r2_update[0] == pytest.approx(1.0, abs=1e-6)


def test_replaced_upstream_changes_later_inputs(tiny_model):
    g = torch.Generator().manual_seed(2)
    calib, held = torch.randint(0, 50, (1024,), generator=g), torch.randint(0, 50, (512,), generator=g)
    stats = geometry.block_stats(tiny_model, calib, context=32)["block"]
    maps = {l: geometry.fit_map(s) for l, s in enumerate(stats)}
    clean = geometry.heldout_r2(tiny_model, held, maps, context=32)
    repl = geometry.heldout_r2(tiny_model, held, maps, context=32, upstream="replaced")
    assert repl[0] == pytest.approx(clean[0], rel=1e-9)  # block 0 has no upstream to replace
    assert repl[1] != pytest.approx(clean[1], rel=1e-6)
    assert all(v < 1 for v in clean.values())  # a random block is not linear


def test_gram_stats_accumulate_in_float64():
    """An exactly affine map, streamed from float32 batches with large offsets, scores R² = 1 to ~1e-12
    (float32 products left it at 1 + 2e-9), and the moments equal a float64 computation."""
    g = torch.Generator().manual_seed(4)
    x = (torch.randn(4096, 16, generator=g) * 3 + 50).float()
    w, b = torch.randn(16, 16, generator=g, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    y = (x.double() @ w + b).float()
    stats = geometry.GramStats()
    for i in range(0, len(x), 512):
        stats.add(x[i : i + 512], y[i : i + 512])
    xd, yd = x.double(), y.double()
    _, _, cxx, cxy, cyy = stats.moments()
    ref = torch.cov(torch.cat([xd, yd], 1).T, correction=0)
    torch.testing.assert_close(cxx, ref[:16, :16], rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(cxy, ref[:16, 16:], rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(cyy, ref[16:, 16:], rtol=1e-12, atol=1e-9)
    m = geometry.fit_map(stats, ridge=0.0)
    assert geometry.r2_from_stats(m, stats) == pytest.approx(1.0, abs=1e-12)
    assert geometry.score_from_stats(stats) == pytest.approx(1.0, abs=1e-12)


def test_subtracting_a_subset_of_the_tokens():
    x, y = pair(n=200, d=6)
    whole = geometry.GramStats().add(x, y)
    head = geometry.GramStats(shift_x=whole.shift_x, shift_y=whole.shift_y)
    head.sx, head.sy = torch.zeros(6, dtype=torch.float64), torch.zeros(6, dtype=torch.float64)
    head.xx, head.xy, head.yy = (torch.zeros(6, 6, dtype=torch.float64) for _ in range(3))
    head.add(x[:20], y[:20])
    rest = whole - head
    ref = geometry.GramStats().add(x[20:], y[20:])
    assert rest.n == 180
    for a, b in zip(rest.moments(), ref.moments()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
    with pytest.raises(ValueError, match="same shifts"):
        whole - ref


@pytest.mark.parametrize("skip", [0, 1])
def test_block_stats_positions_against_procrustes_similarity(tiny_model, skip):
    """Streamed block statistics with and without window position 0 (the attention sink) give
    LLM-Microscope's score on exactly those positions' states, with and without the residual."""
    mic = microscope()
    g = torch.Generator().manual_seed(5)
    tokens = torch.randint(0, 50, (8 * 32,), generator=g)
    st = geometry.block_stats(tiny_model, tokens, context=32, batch_size=4, skip_first=skip)
    _, cache = tiny_model.run_with_cache(tokens.view(8, 32))
    for layer in range(tiny_model.cfg.n_layers):
        x = cache[f"blocks.{layer}.hook_resid_pre"][:, skip:].reshape(-1, tiny_model.cfg.d_model).double()
        y = cache[f"blocks.{layer}.hook_resid_post"][:, skip:].reshape(-1, tiny_model.cfg.d_model).double()
        s = st["block_skip" if skip else "block"][layer]
        assert s.n == len(x)
        assert geometry.score_from_stats(s) == pytest.approx(mic.procrustes_similarity(x, y), rel=1e-6)
        assert geometry.score_from_stats(s.update_stats()) == pytest.approx(
            mic.procrustes_similarity(x, y - x), rel=1e-6
        )
    assert ("block_skip" in st) == bool(skip)


def test_heldout_windows_pool_to_the_pooled_r2(tiny_model):
    """Per-window errors and deviations sum to the pooled held-out R², for every position convention;
    leaving position 0 out scores exactly the other positions."""
    g = torch.Generator().manual_seed(6)
    calib, held = torch.randint(0, 50, (1024,), generator=g), torch.randint(0, 50, (256,), generator=g)
    stats = geometry.block_stats(tiny_model, calib, context=32)["block"]
    maps = {l: geometry.fit_map(s) for l, s in enumerate(stats)}
    _, cache = tiny_model.run_with_cache(held.view(8, 32))
    for skip in (0, 1):
        w = geometry.heldout_windows(tiny_model, held, maps, context=32, batch_size=3, skip_first=skip)
        assert all(len(v) == 8 for v in w["sse"].values())
        x = cache["blocks.1.hook_resid_pre"][:, skip:].reshape(-1, 32).double()
        y = cache["blocks.1.hook_resid_post"][:, skip:].reshape(-1, 32).double()
        sse = (maps[1](x) - y).square().sum()
        r2 = 1 - sse / (y - y.mean(0)).square().sum()
        r2_update = 1 - sse / ((y - x) - (y - x).mean(0)).square().sum()
        assert 1 - w["sse"][1].sum() / w["sst output"][1].sum() == pytest.approx(float(r2), rel=1e-6)
        assert 1 - w["sse"][1].sum() / w["sst update"][1].sum() == pytest.approx(float(r2_update), rel=1e-6)
        sc = geometry.heldout_scores(tiny_model, held, maps, context=32, skip_first=skip)
        assert sc["update"][1] == pytest.approx(float(r2_update), rel=1e-6)
