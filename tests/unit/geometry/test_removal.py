"""ShortGPT's Block Influence and Gromov et al.'s angular distance against direct numpy computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformer_lens import HookedTransformer

from analysis import geometry
from analysis.scores import ComponentScores


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


@pytest.fixture(scope="module")
def model3(tiny_cfg):
    return HookedTransformer(tiny_cfg(n_layers=3, initializer_range=0.3)).eval()


def _tokens(n=96, seed=0):
    return torch.randint(0, 50, (n,), generator=torch.Generator().manual_seed(seed))


def _np_cos(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _stream(model, tokens, context):
    """``x^0 .. x^L`` as numpy ``[L + 1, window, pos, d]`` from TransformerLens's cache, and each ``resid_mid``."""
    x = tokens[: len(tokens) // context * context].view(-1, context)
    _, cache = model.run_with_cache(x)
    L = model.cfg.n_layers
    xs = [cache[f"blocks.{l}.hook_resid_pre"] for l in range(L)] + [cache[f"blocks.{L - 1}.hook_resid_post"]]
    mids = [cache[f"blocks.{l}.hook_resid_mid"] for l in range(L)]
    return np.stack([t.detach().numpy() for t in xs]), np.stack([t.detach().numpy() for t in mids])


def test_block_influence_matches_numpy(model3):
    tokens = _tokens()
    s = geometry.block_influence(model3, tokens, context=16, batch_size=4)  # 6 windows, 2 batches
    xs, mids = _stream(model3, tokens, 16)
    expect = [1 - _np_cos(xs[l], xs[l + 1]).mean() for l in range(3)]  # every token of every window
    np.testing.assert_allclose(s.values[:, 0].numpy(), expect, rtol=1e-6)
    np.testing.assert_allclose(s.values[:, 1].numpy(), expect, rtol=1e-6)  # a block score: both kinds
    assert s.samples.shape == (6, 3, 2)
    sub = geometry.block_influence(model3, tokens, context=16, batch_size=4, per="sublayer")
    attn = [1 - _np_cos(xs[l], mids[l]).mean() for l in range(3)]
    mlp = [1 - _np_cos(mids[l], xs[l + 1]).mean() for l in range(3)]
    np.testing.assert_allclose(sub.values.numpy(), np.stack([attn, mlp], 1), rtol=1e-6)


def test_angular_distances_match_numpy(model3):
    tokens = _tokens(seed=1)
    d = geometry.angular_distances(model3, tokens, context=16, batch_size=4)
    xs, _ = _stream(model3, tokens, 16)
    last = xs[:, :, -1]  # [L + 1, window, d]: the last token only
    for n in (1, 2, 3):
        for l in range(3):
            if l + n > 3:
                assert np.isnan(d[n - 1, l].item())
            else:
                expect = (np.arccos(np.clip(_np_cos(last[l], last[l + n]), -1, 1)) / np.pi).mean()
                assert d[n - 1, l].item() == pytest.approx(expect, rel=1e-6)
    s = geometry.angular_distance_scores(model3, tokens, context=16, batch_size=4)
    np.testing.assert_allclose(s.values[:, 0].numpy(), d[0].numpy(), rtol=1e-9)


def test_an_identity_block_has_zero_influence_and_distance(tiny_cfg):
    model = HookedTransformer(tiny_cfg(n_layers=3, initializer_range=0.3)).eval()
    b = model.blocks[1]
    with torch.no_grad():
        for p in (b.attn.W_O, b.attn.b_O, b.mlp.W_out, b.mlp.b_out):
            p.zero_()  # block 1 now adds exactly nothing: x^2 == x^1
    tokens = _tokens(64, seed=2)
    bi = geometry.block_influence(model, tokens, context=16)
    assert abs(bi.values[1, 0].item()) < 1e-12 and bi.values[0, 0].item() > 1e-3
    sub = geometry.block_influence(model, tokens, context=16, per="sublayer")
    assert sub.values[1].abs().max().item() < 1e-12
    d = geometry.angular_distances(model, tokens, context=16)
    assert d[0, 1].item() == 0.0 and d[0, 0].item() > 1e-3
    assert geometry.shortgpt_layers(bi, 1) == [1]
    assert geometry.gromov_block(d, 1) == [1]


def test_angular_distance_of_vectors():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(5, 64, generator=g)
    assert torch.equal(geometry.angular_distance(v, v), torch.zeros(5, dtype=torch.float64))
    assert torch.allclose(geometry.angular_distance(v, 3 * v), torch.zeros(5, dtype=torch.float64))
    assert torch.allclose(geometry.angular_distance(v, -v), torch.ones(5, dtype=torch.float64))
    e = torch.eye(2)
    assert geometry.angular_distance(e[0], e[1]).item() == pytest.approx(0.5)
    w = torch.randn(5, 64, generator=g)
    expect = np.arccos(_np_cos(v.numpy(), w.numpy())) / np.pi
    np.testing.assert_allclose(geometry.angular_distance(v, w).numpy(), expect, rtol=1e-10)


def test_published_procedures_pick_the_papers_layers():
    s = ComponentScores("block influence", torch.tensor([[0.5, 0.5], [0.1, 0.1], [0.3, 0.3], [0.05, 0.05]]))
    assert geometry.shortgpt_layers(s, 2) == [1, 3]
    assert geometry.shortgpt_layers(s, 0) == []
    d = torch.tensor([[0.4, 0.2, 0.3, 0.1], [0.5, 0.25, 0.35, float("nan")], [0.6, 0.7, float("nan"), float("nan")]])
    assert geometry.gromov_block(d, 1) == [3]
    assert geometry.gromov_block(d, 2) == [1, 2]
    assert geometry.gromov_block(d, 3) == [0, 1, 2]
    with pytest.raises(ValueError, match="n must lie"):
        geometry.gromov_block(d, 4)
