"""analysis.compress on the embedded models: SmolLM2's grouped-query weights and calibration
data, and the MiniLM encoder (post-LN inputs, padding, no default loss)."""

from __future__ import annotations

import pytest
import torch

from analysis import compress, hooks
from analysis.compress import ASVD, SVD, SVDLLM, Stored

pytestmark = pytest.mark.usefixtures("one_thread")


def _stored(w: torch.Tensor) -> Stored:
    return Stored(w.clone(), 16.0, w.numel())


def test_components_cover_every_attention_and_mlp_weight(smollm2):
    names = compress.weights_of(smollm2, "blocks.3.attn") + compress.weights_of(smollm2, "blocks.3.mlp")
    assert names == [f"blocks.3.attn.{w}" for w in compress.ATTN_WEIGHTS] + [
        f"blocks.3.mlp.{w}" for w in compress.MLP_WEIGHTS
    ]
    assert compress.parameter_name(smollm2, "blocks.3.attn.W_K") == "blocks.3.attn._W_K"  # grouped-query K
    assert len(compress.components(smollm2)) == 2 * smollm2.cfg.n_layers


def test_activation_aware_methods_beat_svd_on_calibration_data(smollm2):
    """ASVD and SVD-LLM give less output error ||X (W - W')|| than SVD at the same rank."""
    from analysis.data import lm_tokens

    weights = ["blocks.3.mlp.W_in", "blocks.14.mlp.W_gate", "blocks.27.mlp.W_out"]
    tokens = lm_tokens(smollm2.tokenizer, "calib", n_tokens=512)
    ctx = compress.calibration_stats(smollm2, tokens, weights, kinds=("xtx", "absmean"), context=256)
    params = dict(smollm2.named_parameters())
    for w in weights:
        W = params[w].detach()
        xtx = ctx.stats[f"xtx:{hooks.input_hook(w, smollm2)}"].double()

        def out_err(W2):
            D = (W2 - W).double()
            return float(torch.einsum("ij,ik,kj->", D, xtx, D).clamp(min=0).sqrt())

        r = compress.rank_for_ratio(*W.shape, 0.25)
        errs = {
            op.method: out_err(op(_stored(W), name=w, calibration=ctx).weight)
            for op in (SVD(rank=r), ASVD(rank=r), SVDLLM(rank=r))
        }
        assert errs["svdllm"] < errs["svd"], (w, errs)
        assert errs["asvd"] < errs["svd"], (w, errs)
        # SVD-LLM is optimal: its error (under the possibly damped L L^T) is the root of the
        # discarded squared singular values of L^T W
        L, lam = compress.whitening_factor(xtx)
        D = SVDLLM(rank=r)(_stored(W), name=w, calibration=ctx).weight.double() - W.double()
        s = torch.linalg.svdvals(L.T @ W.double())
        assert float(torch.linalg.matrix_norm(L.T @ D)) == pytest.approx(float(s[r:].pow(2).sum().sqrt()), rel=1e-3)


@pytest.fixture(scope="module")
def minilm():
    from analysis.models import load_model

    return load_model("minilm-l6")


def test_encoder_round_trips_and_is_calibrated(minilm):
    """The HookedEncoder: MLP weights found, ratio 0 is exact, statistics skip padding."""
    assert compress.weights_of(minilm, "blocks.0.mlp") == ["blocks.0.mlp.W_in", "blocks.0.mlp.W_out"]
    assert hooks.input_hook("blocks.1.mlp.W_in", minilm) == hooks.normalized(1, "ln1")
    enc = minilm.tokenizer(["A short one.", "The cat that the dogs chase is black."], return_tensors="pt", padding=True)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    last = hooks.feature_hook(minilm, 5)  # "blocks.5.hook_normalized_resid_post"
    names = lambda n: n.endswith("hook_normalized_resid_post")  # noqa: E731
    _, base = minilm.run_with_cache(ids, one_zero_attention_mask=mask, names_filter=names)
    weights = compress.mlp_weights(minilm)

    def loss(m, t, k, row):  # any differentiable function of the encoder's output
        out = []
        m.run_with_hooks(t, one_zero_attention_mask=k, fwd_hooks=[(last, lambda a, hook: out.append(a))])
        return out[0][:, 0].pow(2).sum()

    ctx = compress.calibration_stats(minilm, ids, weights, attention_mask=mask, kinds=("xtx", "absmean"))
    hook = hooks.normalized(0, "ln1")
    captured = []  # the MLP's true input: the norm module's output (after its weight and bias)
    handle = minilm.blocks[0].ln1.register_forward_hook(lambda mod, inp, out: captured.append(out.detach()))
    with torch.inference_mode():
        minilm.encoder_output(ids, None, mask)
    handle.remove()
    base_x = captured[0][mask.bool()].double()
    assert torch.allclose(ctx.stats[f"xtx:{hook}"].double(), base_x.T @ base_x / len(base_x), rtol=1e-4, atol=1e-6)
    for method in ("svd", "asvd", "svdllm"):
        with compress.factorization_plan(minilm, method, 0.0, calibration=ctx).applied(minilm):
            _, after = minilm.run_with_cache(ids, one_zero_attention_mask=mask, names_filter=names)
        assert all(torch.equal(after[k], base[k]) for k in base.keys())
    with compress.factorization_plan(minilm, "svdllm", 0.35, calibration=ctx).applied(minilm) as report:
        _, after = minilm.run_with_cache(ids, one_zero_attention_mask=mask, names_filter=names)
        assert report.ratio == pytest.approx(0.65, abs=0.01)
    assert not torch.allclose(after[last], base[last])
    with pytest.raises(ValueError, match="loss_fn"):
        compress.calibration_stats(minilm, ids, weights[:1], attention_mask=mask, kinds=("grad2",))
    grads = compress.calibration_stats(minilm, ids, weights[:1], attention_mask=mask, kinds=("grad2",), loss_fn=loss)
    assert grads.stats["grad2:blocks.0.mlp.W_in"].shape == (minilm.cfg.d_mlp,)
