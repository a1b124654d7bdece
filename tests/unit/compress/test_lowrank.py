"""analysis.compress.lowrank: SVD, FWSVD, ASVD and SVD-LLM against independent references.

References: Eckart-Young (the truncation error of a plain SVD is the root of the sum of the
discarded squared singular values, from ``torch.linalg.svdvals``); the weighted errors those
methods minimise, computed directly; parameter counts from the factor shapes; and the
unmodified model's outputs for ratio 0.
"""

from __future__ import annotations

import pytest
import torch

from analysis import compress, hooks
from analysis.compress import ASVD, FWSVD, SVD, SVDLLM, Calibration, Stored

pytestmark = pytest.mark.usefixtures("one_thread")

IN_HOOK = hooks.normalized(0, "ln2")  # the input of blocks.0.mlp.W_in


def _stored(w: torch.Tensor) -> Stored:
    return Stored(w.clone(), 16.0, w.numel())


def test_truncated_svd_error_is_eckart_young():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(48, 80, generator=g, dtype=torch.float64).float()
    s = torch.linalg.svdvals(w.double())
    for r in (1, 7, 30, 48):
        out = SVD(rank=r)(_stored(w), name="blocks.0.mlp.W_in", calibration=Calibration())
        err = torch.linalg.matrix_norm(out.weight.double() - w.double())
        expected = s[r:].pow(2).sum().sqrt()
        assert err == pytest.approx(float(expected), rel=1e-4, abs=1e-4)
        assert torch.linalg.matrix_rank(out.weight.double(), rtol=1e-5) == r


@pytest.mark.parametrize("d_in,d_out", [(576, 1536), (384, 1536), (40, 40)])
@pytest.mark.parametrize("ratio", [0.05, 0.1, 0.15, 0.25, 0.35, 0.9])
def test_parameter_count_matches_ratio(d_in, d_out, ratio):
    r = compress.rank_for_ratio(d_in, d_out, ratio)
    kept = (1 - ratio) * d_in * d_out
    assert r * (d_in + d_out) <= kept + 1e-6 < (r + 1) * (d_in + d_out)  # the largest such rank
    w = torch.randn(d_in, d_out)
    out = SVD(ratio)(_stored(w), name="x", calibration=Calibration())
    A, B = SVD(ratio).factors(w, r)
    assert A.shape == (d_in, r) and B.shape == (r, d_out)
    assert out.n_values == A.numel() + B.numel() == compress.factor_params(d_in, d_out, r)
    removed = 1 - out.n_values / (d_in * d_out)
    assert ratio - 1e-9 <= removed < ratio + (d_in + d_out) / (d_in * d_out) + 1e-12


def test_plan_size_reports_the_ratio(tiny_model):
    plan = compress.factorization_plan(tiny_model, "svd", 0.25)
    report = plan.size(tiny_model)
    # d_model 32, d_mlp 64: rank 16 keeps 16 * 96 = 1536 of 2048 values per matrix: exactly 25 % removed
    assert report.ratio == pytest.approx(0.75)
    assert set(report.per_weight) == set(compress.mlp_weights(tiny_model))


def test_the_decomposition_cache_is_keyed_by_content():
    """A shared cache decomposes once per weight, and a permuted weight is a new entry."""
    w = torch.randn(20, 30, generator=torch.Generator().manual_seed(2))
    cache: dict = {}
    a = SVD(0.5, cache=cache)(_stored(w), name="blocks.0.mlp.W_in").weight
    b = SVD(0.25, cache=cache)(_stored(w), name="blocks.0.mlp.W_in").weight
    assert len(cache) == 1 and not torch.equal(a, b)
    flipped = w.flip(0)  # the same entries (the same sum and sum of squares), other rows
    c = SVD(0.5, cache=cache)(_stored(flipped), name="blocks.0.mlp.W_in").weight
    assert len(cache) == 2
    assert torch.allclose(c, SVD(0.5)(_stored(flipped)).weight)


def test_fwsvd_minimises_the_fisher_weighted_error():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(30, 20, generator=g)
    fisher = torch.rand(20, generator=g) ** 4 + 1e-3
    ctx = Calibration(stats={"grad2:blocks.0.mlp.W_in": fisher})
    d = fisher.double().sqrt()
    for r in (3, 10):
        out = FWSVD(rank=r)(_stored(w), name="blocks.0.mlp.W_in", calibration=ctx).weight.double()
        weighted = torch.linalg.matrix_norm((out - w.double()) * d)
        s = torch.linalg.svdvals(w.double() * d)
        assert float(weighted) == pytest.approx(float(s[r:].pow(2).sum().sqrt()), rel=1e-4)


def test_asvd_minimises_the_input_scaled_error():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(16, 24, generator=g)
    absmean = torch.rand(16, generator=g) + 0.1
    ctx = Calibration(stats={f"absmean:{IN_HOOK}": absmean})
    s_in = absmean.double().sqrt()  # alpha 0.5
    out = ASVD(rank=5)(_stored(w), name="blocks.0.mlp.W_in", calibration=ctx).weight.double()
    scaled = torch.linalg.matrix_norm(s_in[:, None] * (out - w.double()))
    s = torch.linalg.svdvals(s_in[:, None] * w.double())
    assert float(scaled) == pytest.approx(float(s[5:].pow(2).sum().sqrt()), rel=1e-4)


@pytest.mark.parametrize("method", compress.FACTOR_METHODS)
def test_decoder_round_trips_at_ratio_zero(tiny_model, method):
    tokens = torch.randint(0, 50, (2, 16))
    ctx = compress.calibration_stats(tiny_model, tokens.flatten(), compress.mlp_weights(tiny_model), context=16)
    before = tiny_model(tokens)
    plan = compress.factorization_plan(tiny_model, method, 0.0, calibration=ctx)
    with plan.applied(tiny_model) as report:
        assert torch.equal(tiny_model(tokens), before)
        assert report.ratio == 1.0
    compressed, _ = compress.factorization_plan(tiny_model, method, 0.5, calibration=ctx).apply_copy(tiny_model)
    assert not torch.allclose(compressed(tokens), before)
    assert torch.equal(tiny_model(tokens), before)


def test_per_layer_plan(tiny_model):
    plan = compress.factorization_plan(tiny_model, "svd", {1: 0.5})
    assert set(plan.targets(tiny_model)) == {"blocks.1.mlp.W_in", "blocks.1.mlp.W_out"}


# --- bad input ---


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, float("nan")])
def test_ratio_outside_unit_interval_is_an_error(ratio):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        SVD(ratio)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        compress.rank_for_ratio(10, 10, ratio)


def test_rank_too_large_is_an_error():
    with pytest.raises(ValueError, match="larger than"):
        SVD(rank=41)(_stored(torch.randn(40, 60)), name="x", calibration=Calibration())
    with pytest.raises(ValueError, match="positive integer"):
        SVD(rank=0)


def test_unknown_method_is_an_error():
    with pytest.raises(ValueError, match="Unknown factorization method"):
        compress.factorization("pca", 0.5)


@pytest.mark.parametrize(
    "op,key",
    [(FWSVD(0.5), "grad2:blocks.0.mlp.W_in"), (ASVD(0.5), f"absmean:{IN_HOOK}"), (SVDLLM(0.5), f"xtx:{IN_HOOK}")],
)
def test_missing_calibration_data_is_an_error(op, key):
    with pytest.raises(ValueError, match=key):
        op(_stored(torch.randn(8, 12)), name="blocks.0.mlp.W_in", calibration=Calibration())


def test_singular_xtx_is_regularized_not_nan():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 16, generator=g)  # 5 tokens: X^T X has rank 5 of 16
    x[:, 3] = 0  # and one dead channel
    w = torch.randn(16, 24, generator=g)
    for xtx in (x.T @ x, torch.zeros(16, 16)):
        ctx = Calibration(stats={f"xtx:{IN_HOOK}": xtx, f"absmean:{IN_HOOK}": x.abs().mean(0)})
        L, lam = compress.whitening_factor(xtx)
        assert lam > 0 and torch.isfinite(L).all()
        for op in (SVDLLM(rank=4), ASVD(rank=4)):
            out = op(_stored(w), name="blocks.0.mlp.W_in", calibration=ctx).weight
            assert torch.isfinite(out).all()
    # an all-zero X^T X degenerates to plain SVD
    ctx = Calibration(stats={f"xtx:{IN_HOOK}": torch.zeros(16, 16)})
    plain = SVD(rank=4)(_stored(w), name="blocks.0.mlp.W_in", calibration=ctx).weight
    zero = SVDLLM(rank=4)(_stored(w), name="blocks.0.mlp.W_in", calibration=ctx).weight
    assert torch.allclose(plain, zero, atol=1e-4)
    with pytest.raises(ValueError, match="not finite"):
        compress.whitening_factor(torch.full((4, 4), float("nan")))


# --------------------------------------------------------------------------------------
# ASVD's sensitivity-based rank search
# --------------------------------------------------------------------------------------


def _reference_allocation(sens, shapes, budget):
    """ASVD's rule by a linear scan: the largest prefix cut m whose allocation fits the budget."""
    from analysis.compress import lowrank

    cands = sorted(((u, k, p) for u, ks in sens.items() for k, p in ks.items()), key=lambda c: -c[2])
    best = None
    for m in range(len(cands) + 1):
        keep = {u: 1.0 for u in sens}
        for u, k, _ in cands[m:]:
            keep[u] = min(keep[u], k)
        alloc = {u: 0.0 if k >= 1 else round(1 - k, 10) for u, k in keep.items()}
        if sum(lowrank.unit_values(shapes[u], r) for u, r in alloc.items()) <= budget:
            best = alloc
    return best


def test_rank_search_spares_the_sensitive_unit_and_fits_the_budget():
    from analysis.compress import lowrank

    g = torch.Generator().manual_seed(0)
    sens = {
        f"u{i}": {k: float(10 + (1 - k) * s) for k in (0.5, 0.65, 0.8, 0.95)}
        for i, s in enumerate(torch.rand(6, generator=g).mul(40).tolist())
    }
    shapes = {u: {"w": (32, 64), "v": (64, 32)} for u in sens}
    dense = sum(lowrank.unit_values(s, 0.0) for s in shapes.values())
    for frac in (0.95, 0.8, 0.7, 0.55):
        budget = int(frac * dense)
        alloc = lowrank.allocate_ranks(sens, shapes, budget)
        assert sum(lowrank.unit_values(shapes[u], r) for u, r in alloc.items()) <= budget
        assert alloc == _reference_allocation(sens, shapes, budget)
    # the most sensitive unit is cut least, the least sensitive most
    alloc = lowrank.allocate_ranks(sens, shapes, int(0.75 * dense))
    slope = {u: v[0.5] for u, v in sens.items()}
    assert alloc[max(slope, key=slope.get)] <= alloc[min(slope, key=slope.get)]
    with pytest.raises(ValueError, match="smaller keep"):
        lowrank.allocate_ranks(sens, shapes, int(0.3 * dense))


def test_sensitivity_is_the_loss_with_one_unit_factorized(tiny_model):
    from analysis.compress import lowrank

    tokens = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(3))
    weights = compress.mlp_weights(tiny_model)
    ctx = compress.calibration_stats(tiny_model, tokens.reshape(-1), weights, kinds=("absmean",), context=16)
    units = lowrank.mlp_units(tiny_model)
    assert units == {
        "blocks.0.mlp": ["blocks.0.mlp.W_in", "blocks.0.mlp.W_out"],
        "blocks.1.mlp": ["blocks.1.mlp.W_in", "blocks.1.mlp.W_out"],
    }
    before = [p.clone() for p in tiny_model.parameters()]
    sens = lowrank.truncation_sensitivity(tiny_model, units, tokens, ctx, keep=(0.5,), batch_size=1)
    assert all(torch.equal(a, b) for a, b in zip(before, tiny_model.parameters()))  # restored
    plan = compress.CompressionPlan({w: [ASVD(ratio=0.5)] for w in units["blocks.1.mlp"]}, calibration=ctx)
    with plan.applied(tiny_model), torch.no_grad():
        ref = float(tiny_model(tokens, return_type="loss").exp())
    assert sens["blocks.1.mlp"][0.5] == pytest.approx(ref, rel=1e-4)
    # the allocated plan stores no more than the uniform one
    shapes = {u: lowrank.weight_shapes(tiny_model, ws) for u, ws in units.items()}
    budget = sum(lowrank.unit_values(s, 0.3) for s in shapes.values())
    alloc = lowrank.allocate_ranks(sens | {"blocks.0.mlp": {0.5: sens["blocks.0.mlp"][0.5]}}, shapes, budget)
    size = lowrank.allocated_plan(tiny_model, alloc, units, ctx).size(tiny_model)
    uniform = compress.factorization_plan(tiny_model, "asvd", 0.3, calibration=ctx).size(tiny_model)
    assert size.bits <= uniform.bits
    with pytest.raises(ValueError, match="unit"):
        lowrank.mlp_units(tiny_model, by="head")


def test_allocation_removed_counts_units_left_dense():
    from analysis.compress.lowrank import allocate_ranks, allocation_removed, unit_values

    shapes = {"a": {"w1": (32, 64)}, "b": {"w2": (64, 32), "w3": (32, 32)}}
    kept_a = 10 * (32 + 64)  # rank_for_ratio(32, 64, 0.5) = int(1024 // 96) = 10
    assert allocation_removed(shapes, {"a": 0.5}) == pytest.approx(1 - (kept_a + 2048 + 1024) / 5120)
    assert allocation_removed(shapes, {"a": 0.5, "b": 0.0}) == allocation_removed(shapes, {"a": 0.5})
    assert allocation_removed(shapes, {}) == 0.0
    # the search's allocation at a uniform ratio's budget removes at least as much as that ratio does
    sensitivity = {"a": {0.5: 9.0, 0.8: 5.0}, "b": {0.5: 4.0, 0.8: 3.0}}
    uniform = sum(unit_values(s, 0.3) for s in shapes.values())
    alloc = allocate_ranks(sensitivity, shapes, uniform)
    assert allocation_removed(shapes, alloc) >= 1 - uniform / 5120
