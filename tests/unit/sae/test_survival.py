"""analysis.sae.survival: Pearson against numpy, the survival categories on streams of known
correlation, the Wilson interval against its closed form, and encode_stream against sae-lens's
``encode`` of TransformerLens's own cache."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from analysis.sae import survival as sv


def _topk_sae(d_in: int, hook_name: str | None, d_sae: int = 48, k: int = 6, head: int | None = None):
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig

    torch.manual_seed(0)
    meta = SAEMetadata(hook_name=hook_name, hook_head_index=head)
    return TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k, metadata=meta)).eval()


def _tokens(n=5, pos=12, seed=0):
    return torch.randint(1, 50, (n, pos), generator=torch.Generator().manual_seed(seed))


def _sparse(n, f, seed, p=0.3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, f, generator=g).abs() * (torch.rand(n, f, generator=g) < p)


def test_pearson_equals_numpy_corrcoef_column_by_column():
    a, b = _sparse(300, 7, 0), _sparse(300, 7, 1)
    b[:, 3] = 2.0 * a[:, 3] + 0.1 * b[:, 3]  # one strongly correlated column
    got = sv.pearson(a, b, chunk=3)  # chunks that do not divide the width
    want = [np.corrcoef(a[:, j].numpy(), b[:, j].numpy())[0, 1] for j in range(7)]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)


def test_pearson_is_nan_where_a_column_is_constant():
    a, b = _sparse(50, 3, 0), _sparse(50, 3, 1)
    b[:, 1] = 0.0
    a[:, 2] = 0.7
    r = sv.pearson(a, b)
    assert not math.isnan(r[0]) and math.isnan(r[1]) and math.isnan(r[2])


def test_identical_streams_keep_every_active_feature():
    x = _sparse(400, 20, 0)
    x[:, 5] = 0.0  # dead in the dense run: not active, not in the share
    s = sv.survival(x, x.clone())
    assert s.n_active == 19 and s.n_survived == 19 and s.share == 1.0 and s.degraded_share == 0.0
    np.testing.assert_allclose(s.r[s.active].numpy(), 1.0, rtol=1e-12)
    assert s.category()[5] == "inactive"


def test_an_independent_stream_keeps_almost_no_feature():
    dense, other = _sparse(2000, 200, 0), _sparse(2000, 200, 1)
    s = sv.survival(dense, other)
    assert s.n_active == 200
    assert s.share <= 0.01 and s.summary()["damaged"] >= 0.99  # |r| ~ 1/sqrt(2000) ≈ 0.02
    low, high = s.ci
    assert low <= s.share <= high


def test_categories_follow_r_and_a_feature_silenced_by_compression_is_damaged():
    n = 4000
    x = _sparse(n, 5, 0)
    noise = _sparse(n, 5, 1)
    y = x.clone()
    y[:, 1] = x[:, 1] + 1.0 * noise[:, 1]  # r ≈ 0.7: blurred
    y[:, 2] = 0.0  # silent after compression: r undefined, damaged
    x[:, 4], y[:, 4] = 0.0, noise[:, 4]  # born: fires only after compression
    s = sv.survival(x, y)
    assert list(s.category()) == ["survived", "blurred", "damaged", "survived", "inactive"]
    want = np.corrcoef(x[:, 1].numpy(), y[:, 1].numpy())[0, 1]
    assert s.r[1].item() == pytest.approx(want, rel=1e-10) and 0.5 < want < 0.9
    assert math.isnan(s.r[2]) and s.born == 1
    summ = s.summary()
    assert (summ["active"], summ["survived"]) == (4, 2)
    assert summ["blurred"] == pytest.approx(0.25, rel=1e-12) and summ["damaged"] == pytest.approx(0.25, rel=1e-12)
    frame = s.frame()
    assert list(frame["category"]) == list(s.category()) and len(frame) == 5
    np.testing.assert_allclose(frame["density"], (x > 0).double().mean(0).numpy(), rtol=1e-12)
    np.testing.assert_allclose(frame["peak"], x.amax(0).numpy(), rtol=1e-7)


def test_min_active_and_threshold_set_which_features_count():
    x = torch.zeros(1000, 2)
    x[:5, 0] = torch.arange(1.0, 6.0)  # fires on 0.5% of tokens
    x[:, 1] = torch.rand(1000, generator=torch.Generator().manual_seed(0))
    y = x.clone()
    y[:, 1] += 0.2 * torch.randn(1000, generator=torch.Generator().manual_seed(1))
    r1 = np.corrcoef(x[:, 1].numpy(), y[:, 1].numpy())[0, 1]
    assert sv.survival(x, y, min_active=0.001).n_active == 2
    assert sv.survival(x, y, min_active=0.01).n_active == 1
    assert bool(sv.survival(x, y, threshold=r1 - 1e-6).survived[1])
    assert not bool(sv.survival(x, y, threshold=r1 + 1e-6).survived[1])


def test_share_interval_is_the_wilson_interval():
    x = _sparse(500, 40, 0)
    y = x.clone()
    y[:, :13] = _sparse(500, 13, 1)  # 13 of 40 features replaced: 27 survive
    s = sv.survival(x, y)
    k, n, z = s.n_survived, s.n_active, 1.959963984540054
    assert (k, n) == (27, 40)
    p = k / n
    centre, half = (p + z * z / (2 * n)), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low, high = (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)
    assert s.ci == pytest.approx((low, high), rel=1e-9)


@pytest.mark.parametrize(
    "dense, compressed, match",
    [
        (torch.zeros(10, 4), torch.zeros(10, 5), "differ in shape"),
        (torch.zeros(10), torch.zeros(10), r"\[token, feature\]"),
        (torch.zeros(0, 4), torch.zeros(0, 4), "at least 2 tokens"),
        (torch.zeros(10, 0), torch.zeros(10, 0), "at least 2 tokens"),
        (torch.full((10, 2), float("nan")), torch.zeros(10, 2), "NaN"),
    ],
)
def test_bad_streams_raise_with_a_clear_message(dense, compressed, match):
    with pytest.raises(ValueError, match=match):
        sv.survival(dense, compressed)


def test_bad_definitions_raise():
    x = _sparse(10, 2, 0)
    with pytest.raises(ValueError, match="threshold"):
        sv.survival(x, x, threshold=0.4, damaged_below=0.5)
    with pytest.raises(ValueError, match="min_active"):
        sv.survival(x, x, min_active=2.0)


def test_encode_stream_equals_sae_encode_of_the_cached_activations(tiny_model):
    hook = "blocks.0.hook_resid_post"
    sae = _topk_sae(tiny_model.cfg.d_model, hook)
    tokens = _tokens()
    ran = []
    handle = tiny_model.blocks[1].register_forward_hook(lambda *a: ran.append(1))
    try:
        got = sv.encode_stream(tiny_model, sae, tokens, batch_size=2)  # hook name from the SAE's metadata
    finally:
        handle.remove()
    assert not ran  # the forward stopped after block 0
    _, cache = tiny_model.run_with_cache(tokens)
    with torch.no_grad():
        want = sae.encode(cache[hook].reshape(-1, tiny_model.cfg.d_model))
    assert got.shape == (tokens.numel(), 48)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    kept = sv.encode_stream(tiny_model, sae, tokens, hook, batch_size=3, ignore_token=int(tokens[0, 0]))
    torch.testing.assert_close(kept, want[(tokens != tokens[0, 0]).flatten()], rtol=1e-5, atol=1e-6)


def test_encode_stream_encodes_the_model_as_the_caller_left_it(tiny_model):
    hook = "blocks.1.hook_resid_post"
    sae = _topk_sae(tiny_model.cfg.d_model, hook)
    tokens = _tokens(seed=1)
    halve = [("blocks.0.hook_mlp_out", lambda act, hook: 0.5 * act)]
    with tiny_model.hooks(fwd_hooks=halve):
        got = sv.encode_stream(tiny_model, sae, tokens)
    dense = sv.encode_stream(tiny_model, sae, tokens)
    with tiny_model.hooks(fwd_hooks=halve):
        _, cache = tiny_model.run_with_cache(tokens)
    with torch.no_grad():
        want = sae.encode(cache[hook].reshape(-1, tiny_model.cfg.d_model))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got, dense)


def test_encode_stream_reads_per_head_hooks_as_the_sae_was_trained(tiny_model):
    hook = "blocks.0.attn.hook_z"
    tokens = _tokens(n=3)
    _, cache = tiny_model.run_with_cache(tokens)
    z = cache[hook]  # [batch, pos, head, d_head]
    layer_sae = _topk_sae(32, hook)  # all 4 heads of 8, concatenated
    head_sae = _topk_sae(8, hook, d_sae=16, k=2, head=2)
    with torch.no_grad():
        torch.testing.assert_close(
            sv.encode_stream(tiny_model, layer_sae, tokens), layer_sae.encode(z.flatten(-2).reshape(-1, 32))
        )
        torch.testing.assert_close(
            sv.encode_stream(tiny_model, head_sae, tokens), head_sae.encode(z[:, :, 2].reshape(-1, 8))
        )


def test_encode_stream_rejects_bad_input(tiny_model):
    sae = _topk_sae(tiny_model.cfg.d_model, "blocks.0.hook_resid_post")
    with pytest.raises(ValueError, match=r"\[batch, pos\]"):
        sv.encode_stream(tiny_model, sae, torch.zeros(0, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[batch, pos\]"):
        sv.encode_stream(tiny_model, sae, torch.arange(8))
    with pytest.raises(ValueError, match="integer"):
        sv.encode_stream(tiny_model, sae, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="width"):
        sv.encode_stream(tiny_model, sae, _tokens(), "blocks.0.mlp.hook_post")  # d_mlp 64, not 32
    with pytest.raises(ValueError, match="hook_name="):
        sv.encode_stream(tiny_model, _topk_sae(32, None), _tokens())
