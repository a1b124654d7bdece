"""analysis.compress factorization: SVD, FWSVD, ASVD and SVD-LLM against independent references.

References: Eckart-Young (the truncation error of a plain SVD is the root of the sum of the
discarded squared singular values, from ``torch.linalg.svdvals``); the activation-weighted
error ``||X (W - W')||_F`` computed directly on the calibration activations; parameter counts
from the factor shapes; and the unmodified model's outputs for ratio 0.
"""

from __future__ import annotations

import math

import pytest
import torch

from analysis import compress
from analysis.compress import ASVD, FWSVD, SVD, SVDLLM, Context, Stored


pytestmark = pytest.mark.usefixtures("one_thread")


def _stored(w: torch.Tensor) -> Stored:
    return Stored(w.clone(), 16.0, w.numel())


def test_truncated_svd_error_is_eckart_young():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(48, 80, generator=g, dtype=torch.float64).float()
    s = torch.linalg.svdvals(w.double())
    for r in (1, 7, 30, 48):
        out = SVD(rank=r)(_stored(w), name="blocks.0.mlp.W_in", context=Context())
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
    out = SVD(ratio)(_stored(w), name="x", context=Context())
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


def _calibration(model, n_tokens=2048):
    from analysis.data import lm_tokens

    return lm_tokens(model.tokenizer, "calib", n_tokens=n_tokens)


def test_activation_aware_methods_beat_svd_on_calibration_data(smollm2):
    """ASVD and SVD-LLM give less output error ||X (W - W')|| than SVD at the same rank."""
    weights = ["blocks.3.mlp.W_in", "blocks.14.mlp.W_gate", "blocks.27.mlp.W_out"]
    tokens = _calibration(smollm2, 512)
    ctx = compress.calibration_stats(smollm2, tokens, weights, kinds=("xtx", "absmean"), context=256)
    params = dict(smollm2.named_parameters())
    for w in weights:
        W = params[w].detach()
        xtx = ctx.stats[f"xtx:{compress.input_hook(w, smollm2)}"].double()

        def out_err(W2):
            D = (W2 - W).double()
            return float(torch.einsum("ij,ik,kj->", D, xtx, D).clamp(min=0).sqrt())

        r = compress.rank_for_ratio(*W.shape, 0.25)
        errs = {op.method: out_err(op(_stored(W), name=w, context=ctx).weight) for op in
                (SVD(rank=r), ASVD(rank=r), SVDLLM(rank=r))}
        assert errs["svdllm"] < errs["svd"], (w, errs)
        assert errs["asvd"] < errs["svd"], (w, errs)
        # SVD-LLM is optimal: its error (under the possibly damped L L^T) is the root of the
        # discarded squared singular values of L^T W
        L, lam = compress.whitening_factor(xtx)
        D = SVDLLM(rank=r)(_stored(W), name=w, context=ctx).weight.double() - W.double()
        s = torch.linalg.svdvals(L.T @ W.double())
        assert float(torch.linalg.matrix_norm(L.T @ D)) == pytest.approx(float(s[r:].pow(2).sum().sqrt()), rel=1e-3)


def test_statistics_match_a_direct_computation(tiny_model):
    tokens = torch.randint(0, 50, (4 * 16,), generator=torch.Generator().manual_seed(0))
    w = "blocks.1.mlp.W_out"
    ctx = compress.calibration_stats(tiny_model, tokens, [w], context=16, batch_size=3, max_grad_examples=2)
    hook = compress.input_hook(w)
    _, cache = tiny_model.run_with_cache(tokens.view(4, 16), names_filter=hook)
    x = cache[hook].reshape(-1, cache[hook].shape[-1]).double()
    assert torch.allclose(ctx.stats[f"xtx:{hook}"].double(), x.T @ x / len(x), rtol=1e-4, atol=1e-6)
    assert torch.allclose(ctx.stats[f"absmean:{hook}"].double(), x.abs().mean(0), rtol=1e-4, atol=1e-7)
    # Fisher rows: mean over the first two windows of the squared gradient, summed over d_in
    grads = []
    for i in range(2):
        tiny_model.zero_grad(set_to_none=True)
        tiny_model(tokens.view(4, 16)[i : i + 1], return_type="loss").backward()
        grads.append(dict(tiny_model.named_parameters())[w].grad.detach().pow(2).sum(0))
    tiny_model.zero_grad(set_to_none=True)
    assert torch.allclose(ctx.stats[f"grad2:{w}"], torch.stack(grads).mean(0), rtol=1e-4, atol=1e-12)
    assert all(p.requires_grad for p in tiny_model.parameters())  # flags restored


def test_fwsvd_minimises_the_fisher_weighted_error():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(30, 20, generator=g)
    fisher = torch.rand(20, generator=g) ** 4 + 1e-3
    ctx = Context(stats={"grad2:blocks.0.mlp.W_in": fisher})
    d = fisher.double().sqrt()
    for r in (3, 10):
        out = FWSVD(rank=r)(_stored(w), name="blocks.0.mlp.W_in", context=ctx).weight.double()
        weighted = torch.linalg.matrix_norm((out - w.double()) * d)
        s = torch.linalg.svdvals(w.double() * d)
        assert float(weighted) == pytest.approx(float(s[r:].pow(2).sum().sqrt()), rel=1e-4)


@pytest.mark.parametrize("method", compress.FACTOR_METHODS)
def test_decoder_round_trips_at_ratio_zero(tiny_model, method):
    tokens = torch.randint(0, 50, (2, 16))
    ctx = compress.calibration_stats(tiny_model, tokens.flatten(), compress.mlp_weights(tiny_model), context=16)
    before = tiny_model(tokens)
    plan = compress.factorization_plan(tiny_model, method, 0.0, context=ctx)
    with plan.applied(tiny_model) as report:
        assert torch.equal(tiny_model(tokens), before)
        assert report.ratio == 1.0
    compressed, _ = compress.factorization_plan(tiny_model, method, 0.5, context=ctx).apply_copy(tiny_model)
    assert not torch.allclose(compressed(tokens), before)
    assert torch.equal(tiny_model(tokens), before)


@pytest.fixture(scope="module")
def minilm():
    from analysis.models import load_model

    return load_model("minilm-l6")


def test_encoder_round_trips_and_is_calibrated(minilm):
    """The HookedEncoder: MLP weights found, ratio 0 is exact, statistics skip padding."""
    assert compress.weights_of(minilm, "blocks.0.mlp") == ["blocks.0.mlp.W_in", "blocks.0.mlp.W_out"]
    assert compress.input_hook("blocks.1.mlp.W_in", minilm) == "blocks.1.ln1.hook_normalized"
    enc = minilm.tokenizer(["A short one.", "The cat that the dogs chase is black."], return_tensors="pt", padding=True)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    names = lambda n: n.endswith("hook_normalized_resid_post")  # noqa: E731
    _, base = minilm.run_with_cache(ids, one_zero_attention_mask=mask, names_filter=names)
    weights = compress.mlp_weights(minilm)

    def loss(m, t, k, row):  # any differentiable function of the encoder's output
        out = []
        m.run_with_hooks(t, one_zero_attention_mask=k, fwd_hooks=[
            ("blocks.5.hook_normalized_resid_post", lambda a, hook: out.append(a))])
        return out[0][:, 0].pow(2).sum()

    ctx = compress.calibration_stats(minilm, ids, weights, attention_mask=mask, kinds=("xtx", "absmean"))
    hook = "blocks.0.ln1.hook_normalized"
    captured = []  # the MLP's true input: the norm module's output (after its weight and bias)
    handle = minilm.blocks[0].ln1.register_forward_hook(lambda mod, inp, out: captured.append(out.detach()))
    with torch.inference_mode():
        minilm.encoder_output(ids, None, mask)
    handle.remove()
    base_x = captured[0][mask.bool()].double()
    assert torch.allclose(ctx.stats[f"xtx:{hook}"].double(), base_x.T @ base_x / len(base_x), rtol=1e-4, atol=1e-6)
    for method in ("svd", "asvd", "svdllm"):
        with compress.factorization_plan(minilm, method, 0.0, context=ctx).applied(minilm):
            _, after = minilm.run_with_cache(ids, one_zero_attention_mask=mask, names_filter=names)
        assert all(torch.equal(after[k], base[k]) for k in base.keys())
    with compress.factorization_plan(minilm, "svdllm", 0.35, context=ctx).applied(minilm) as report:
        _, after = minilm.run_with_cache(ids, one_zero_attention_mask=mask, names_filter=names)
        assert report.ratio == pytest.approx(0.65, abs=0.01)
    assert not torch.allclose(after["blocks.5.hook_normalized_resid_post"], base["blocks.5.hook_normalized_resid_post"])
    with pytest.raises(ValueError, match="loss_fn"):
        compress.calibration_stats(minilm, ids, weights[:1], attention_mask=mask, kinds=("grad2",))
    grads = compress.calibration_stats(minilm, ids, weights[:1], attention_mask=mask, kinds=("grad2",), loss_fn=loss)
    assert grads.stats["grad2:blocks.0.mlp.W_in"].shape == (minilm.cfg.d_mlp,)


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
        SVD(rank=41)(_stored(torch.randn(40, 60)), name="x", context=Context())
    with pytest.raises(ValueError, match="positive integer"):
        SVD(rank=0)


@pytest.mark.parametrize("op,key", [(FWSVD(0.5), "grad2:blocks.0.mlp.W_in"),
                                    (ASVD(0.5), "absmean:blocks.0.ln2.hook_normalized"),
                                    (SVDLLM(0.5), "xtx:blocks.0.ln2.hook_normalized")])
def test_missing_calibration_data_is_an_error(op, key):
    with pytest.raises(ValueError, match=key):
        op(_stored(torch.randn(8, 12)), name="blocks.0.mlp.W_in", context=Context())


def test_no_calibration_tokens_is_an_error(tiny_model):
    with pytest.raises(ValueError, match="no calibration tokens"):
        compress.calibration_stats(tiny_model, torch.tensor([], dtype=torch.long), ["blocks.0.mlp.W_in"])


def test_singular_xtx_is_regularized_not_nan():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 16, generator=g)  # 5 tokens: X^T X has rank 5 of 16
    x[:, 3] = 0  # and one dead channel
    w = torch.randn(16, 24, generator=g)
    for xtx in (x.T @ x, torch.zeros(16, 16)):
        ctx = Context(stats={"xtx:blocks.0.ln2.hook_normalized": xtx,
                             "absmean:blocks.0.ln2.hook_normalized": x.abs().mean(0)})
        L, lam = compress.whitening_factor(xtx)
        assert lam > 0 and torch.isfinite(L).all()
        for op in (SVDLLM(rank=4), ASVD(rank=4)):
            out = op(_stored(w), name="blocks.0.mlp.W_in", context=ctx).weight
            assert torch.isfinite(out).all()
    # an all-zero X^T X degenerates to plain SVD
    ctx = Context(stats={"xtx:blocks.0.ln2.hook_normalized": torch.zeros(16, 16)})
    plain = SVD(rank=4)(_stored(w), name="blocks.0.mlp.W_in", context=ctx).weight
    zero = SVDLLM(rank=4)(_stored(w), name="blocks.0.mlp.W_in", context=ctx).weight
    assert torch.allclose(plain, zero, atol=1e-4)
    with pytest.raises(ValueError, match="not finite"):
        compress.whitening_factor(torch.full((4, 4), float("nan")))


def test_norm_inputs_include_the_norm_weight_and_count_once(tiny_model):
    """Q/K/V read ln1's output (after its weight and bias), and ln1 runs three times per forward."""
    with torch.no_grad():  # make the norm's affine map matter
        tiny_model.blocks[1].ln1.w.uniform_(0.5, 2.0)
        tiny_model.blocks[1].ln1.b.uniform_(-1.0, 1.0)
    tokens = torch.randint(0, 50, (3 * 16,), generator=torch.Generator().manual_seed(1))
    ctx = compress.calibration_stats(tiny_model, tokens, ["blocks.1.attn.W_Q"], kinds=("xtx",), context=16)
    calls = []
    handle = tiny_model.blocks[1].ln1.register_forward_hook(lambda mod, inp, out: calls.append(out.detach()))
    with torch.inference_mode():
        tiny_model(tokens.view(3, 16))
    handle.remove()
    assert len(calls) == 3  # once each for Q, K and V
    x = calls[0].reshape(-1, calls[0].shape[-1]).double()
    got = ctx.stats[f"xtx:{compress.input_hook('blocks.1.attn.W_Q')}"].double()
    assert torch.allclose(got, x.T @ x / len(x), rtol=1e-4, atol=1e-6)
