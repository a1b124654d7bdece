"""The oracle against analysis.evaluate.Reference scoring independently compressed copies."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from transformer_lens import HookedTransformer

from analysis import stats
from analysis.cache import DiskCache
from analysis.compress import CompressionPlan, Prune, Quantize, oracle
from analysis.evaluate import Reference
from analysis.forward import windows as cut


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


@pytest.fixture(scope="module")
def model(tiny_cfg):
    return HookedTransformer(tiny_cfg(n_layers=3, initializer_range=0.3)).eval()


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 50, (80,), generator=torch.Generator().manual_seed(0))


def _removed(model, cell):
    """A deep copy with the unit's output weights and biases zeroed: its output is exactly zero."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        for comp in cell.components:
            part = getattr(m.blocks[cell.layer], comp.rsplit(".", 1)[1])
            for p in (part.W_O, part.b_O) if comp.endswith("attn") else (part.W_out, part.b_out):
                p.zero_()
    return m


def _compressed(model, cell, ops):
    if ops is None:
        return _removed(model, cell)
    return CompressionPlan({c: list(ops) for c in cell.components}).apply_copy(model)[0]


def test_every_cell_matches_the_reference_on_a_compressed_copy(model, tokens):
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    units = oracle.units(model, blocks=True)  # 3 layers x (attn, mlp, block)
    result = oracle.measure(model, cut(tokens, 16), units, batch_size=2, cache=False)  # 5 windows, 3 batches
    assert len(result.cells) == 27 and result.tokens_per_window == 15
    ref = Reference(model, tokens, context=16, batch_size=4)
    np.testing.assert_allclose(result.base_nll.numpy(), ref.base.window_nll, rtol=1e-5)
    for i, cell in enumerate(result.cells):
        got = ref.score(_compressed(model, cell, oracle.OPERATIONS[cell.operation])).window_nll
        np.testing.assert_allclose(result.window_nll[i].numpy(), got, rtol=1e-5, err_msg=str(cell))
    assert (result.window_nll != result.base_nll).any(1).all()  # every cell changed something
    b = result.scores("remove", blocks=True)
    torch.testing.assert_close(b.samples[:, 2, 0], result.delta("blocks.2", "remove"))
    torch.testing.assert_close(b.values[:, 0], b.values[:, 1])
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n])
    assert not any(h.fwd_hooks for h in model.hook_dict.values())


def test_naive_cells_agree_with_the_layerwise_pass(model, tokens):
    w = cut(tokens, 16)
    ops = {"prune": (Prune(0.5),), "q4": (Quantize(4),), "remove": None}
    result = oracle.measure(model, w, ["blocks.2.mlp", "blocks.1"], ops, batch_size=4, cache=False)
    for i, cell in enumerate(result.cells):
        naive = oracle.naive_cell_nll(model, w, cell, ops[cell.operation], batch_size=5)
        torch.testing.assert_close(result.window_nll[i], naive, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(result.base_nll, oracle.naive_cell_nll(model, w, None), rtol=1e-5, atol=1e-6)


def test_a_unit_that_does_nothing_costs_nothing(tiny_cfg, tokens):
    m = HookedTransformer(tiny_cfg(n_layers=2)).eval()
    with torch.no_grad():
        m.blocks[1].attn.W_O.zero_()
        m.blocks[1].attn.b_O.zero_()
    result = oracle.measure(m, cut(tokens, 16), cache=False)
    for op in oracle.OPERATIONS:
        assert torch.equal(result.delta("blocks.1.attn", op), torch.zeros(5, dtype=torch.float64))
        assert result.delta("blocks.1.mlp", op).abs().max() > 0


def test_scores_and_intervals_are_the_per_window_deltas(model, tokens):
    result = oracle.measure(model, cut(tokens, 16), cache=False)
    s = result.scores("remove")
    assert s.values.shape == (3, 2) and s.samples.shape == (5, 3, 2)
    d = result.delta("blocks.1.mlp", "remove")
    torch.testing.assert_close(s.samples[:, 1, 1], d)
    i = result.index("blocks.1.mlp", "remove")
    expect = ((result.window_nll[i] - result.base_nll) / 15).mean().item()
    assert s.values[1, 1].item() == pytest.approx(expect)
    diff = result.difference("blocks.1.mlp", "remove")
    ref = stats.paired(d.numpy())
    assert (diff.estimate, diff.low, diff.high, diff.n) == pytest.approx((ref.estimate, ref.low, ref.high, 5))
    frame = result.frame()
    assert len(frame) == 18 and set(frame["operation"]) == set(oracle.OPERATIONS)
    with pytest.raises(KeyError, match="No oracle cell"):
        result.delta("blocks.1", "remove")


def test_an_interrupted_run_resumes_from_the_cache(model, tokens, tmp_path, monkeypatch):
    store = DiskCache(tmp_path)
    w = cut(tokens, 16)
    first = oracle.measure(model, w, ["blocks.0.attn", "blocks.2.mlp"], store=store)
    calls = []
    original = oracle.applied

    def counting(m, cell, ops):
        calls.append(cell)
        return original(m, cell, ops)

    monkeypatch.setattr(oracle, "applied", counting)
    full = oracle.measure(model, w, store=store)
    assert len(calls) == len(full.cells) - 6  # the first run's 2 units x 3 operations came from disk
    assert oracle.OracleCell("blocks.0.attn", "prune") not in calls
    for i, cell in enumerate(first.cells):
        assert torch.equal(full.window_nll[full.cells.index(cell)], first.window_nll[i])
    calls.clear()
    again = oracle.measure(model, w, store=store)
    assert calls == [] and torch.equal(again.window_nll, full.window_nll)
    other = copy.deepcopy(model)
    with torch.no_grad():  # other weights: other cells
        other.blocks[0].mlp.b_in.add_(0.5)
    oracle.measure(other, w, ["blocks.0.attn"], store=store)
    assert len(calls) == 3


def test_bad_inputs_are_explained(model):
    with pytest.raises(ValueError, match="Unknown unit"):
        oracle.OracleCell("blocks.0.head", "prune")
    with pytest.raises(ValueError, match="3 layers"):
        oracle.measure(model, torch.zeros(2, 8, dtype=torch.long), ["blocks.5.attn"], cache=False)
    with pytest.raises(ValueError, match="windows must be"):
        oracle.measure(model, torch.zeros(8, dtype=torch.long), cache=False)
