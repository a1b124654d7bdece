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
    with pytest.raises(ValueError, match="prompt is empty"):
        oracle.measure(model, torch.zeros(2, 8, dtype=torch.long), facts=(["a", " "], ["b", "c"]), cache=False)
    with pytest.raises(ValueError, match="pair up"):
        oracle.measure(model, torch.zeros(2, 8, dtype=torch.long), facts=(["a"], ["b", "c"]), cache=False)
    with pytest.raises(ValueError, match="windows must be"):
        oracle.measure(model, torch.zeros(8, dtype=torch.long), cache=False)


WORDS = (
    "the capital of france is paris city river germany berlin who wrote hamlet shakespeare what colour sky "
    "blue red green question A B C D Answer: a an one two three"
).split()
PROMPTS = [
    "the capital of france is",
    "who wrote",
    "the river of the city of germany is the",
    "what colour is the sky",
    "capital",
    "the city of berlin is in",
    "one two",
    "who wrote hamlet and who wrote the",
]
QUESTIONS = [
    "question what colour is the sky A blue B red C green D paris Answer:",
    "question who wrote hamlet Answer:",
    "the capital of germany is A paris B berlin C the D river Answer:",
    "question one two three A one B two C three D an Answer:",
    "Answer:",
]


@pytest.fixture(scope="module")
def worded(tiny_cfg, word_tokenizer):
    """A 3-layer random model over WORDS; fact targets and MMLU answers half its dense top-1 (so the
    dense hits are mixed), and windows of its tokens."""
    from analysis.data.mmlu_scoring import letter_logits
    from analysis.forward import next_token_predictions

    tok = word_tokenizer(WORDS)
    m = HookedTransformer(tiny_cfg(n_layers=3, initializer_range=0.3, d_vocab=len(tok.get_vocab())), tokenizer=tok)
    m.eval()
    top = next_token_predictions(m, PROMPTS).argmax(-1).tolist()
    targets = [" " + (tok.convert_ids_to_tokens(t) if i % 2 == 0 else "paris") for i, t in enumerate(top)]
    items = [{"prompt": q, "answer": 0, "id": f"q{i}"} for i, q in enumerate(QUESTIONS)]
    best = letter_logits(m, items).argmax(-1).tolist()
    items = [{**it, "answer": best[i] if i % 2 == 0 else (best[i] + 1) % 4} for i, it in enumerate(items)]
    w = cut(torch.randint(0, m.cfg.d_vocab, (64,), generator=torch.Generator().manual_seed(1)), 16)
    return m, (PROMPTS, targets), items, w


def test_fact_and_mmlu_hits_match_the_plain_way(worded):
    """Per cell, the held-stream hits over right-padded, length-sorted batches equal fact_recall and
    mmlu_correct of the model with the cell applied, each prompt run alone (no padding)."""
    from analysis.data.mmlu_scoring import mmlu_correct
    from analysis.evaluate import fact_recall

    m, facts, items, w = worded
    result = oracle.measure(m, w, oracle.units(m, blocks=True), batch_size=3, cache=False, facts=facts, mmlu=items)
    assert result.fact_hits.shape == (27, len(PROMPTS)) and result.mmlu_hits.shape == (27, len(QUESTIONS))
    assert torch.equal(result.base_fact_hits, fact_recall(m, *facts, batch_size=1))
    assert result.base_mmlu_hits.tolist() == mmlu_correct(m, items, batch_size=1)
    assert 0 < result.base_fact_hits.sum() < len(PROMPTS) and 0 < result.base_mmlu_hits.sum() < len(QUESTIONS)
    for i, cell in enumerate(result.cells):
        with oracle.applied(m, cell, oracle.OPERATIONS[cell.operation]):
            assert torch.equal(result.fact_hits[i], fact_recall(m, *facts, batch_size=1)), cell
            assert result.mmlu_hits[i].tolist() == mmlu_correct(m, items, batch_size=1), cell
    assert (result.fact_hits != result.base_fact_hits).any() and (result.mmlu_hits != result.base_mmlu_hits).any()
    naive = torch.stack([oracle.naive_cell_nll(m, w, c, oracle.OPERATIONS[c.operation]) for c in result.cells])
    torch.testing.assert_close(result.window_nll, naive, rtol=1e-5, atol=1e-6)  # the windows are unchanged

    i = result.index("blocks.1", "remove")
    base, cell = result.base_fact_hits.numpy(), result.fact_hits[i].numpy()
    d, ref = result.fact_recall_drop("blocks.1", "remove"), stats.paired(base, cell, unit="facts")
    assert (d.estimate, d.low, d.high, d.p, d.n) == pytest.approx((ref.estimate, ref.low, ref.high, ref.p, 8))
    assert d.estimate == pytest.approx(base.mean() - cell.mean())
    q = result.mmlu_drop("blocks.1", "remove")
    assert q.estimate == pytest.approx(result.base_mmlu_hits.double().mean() - result.mmlu_hits[i].double().mean())
    s = result.scores("remove", blocks=True, metric="facts")
    assert s.samples.shape == (8, 3, 2) and torch.equal(
        s.samples[:, 1, 1], torch.tensor(base, dtype=torch.float64) - torch.tensor(cell, dtype=torch.float64)
    )
    k = result.scores("prune", metric="mmlu")
    j = result.index("blocks.2.attn", "prune")
    torch.testing.assert_close(k.values[2, 0], (result.base_mmlu_hits.double() - result.mmlu_hits[j].double()).mean())
    frame = result.frame().set_index(["unit", "operation"])
    assert frame.loc[("blocks.1", "remove"), "fact drop"] == pytest.approx(d.estimate)
    assert frame.loc[("blocks.1", "remove"), "mmlu drop"] == pytest.approx(q.estimate)


def test_facts_and_questions_are_part_of_the_cache_key(worded, tmp_path, monkeypatch):
    m, facts, items, w = worded
    store = DiskCache(tmp_path)
    unit = ["blocks.1.mlp"]
    first = oracle.measure(m, w, unit, store=store, facts=facts, mmlu=items)
    calls = []
    original = oracle.applied
    monkeypatch.setattr(oracle, "applied", lambda mm, cell, ops: calls.append(cell) or original(mm, cell, ops))
    again = oracle.measure(m, w, unit, store=store, facts=facts, mmlu=items)
    assert calls == []
    for f in ("window_nll", "base_nll", "fact_hits", "base_fact_hits", "mmlu_hits", "base_mmlu_hits"):
        assert torch.equal(getattr(again, f), getattr(first, f)), f
    other = (facts[0][:-1] + ["who wrote hamlet"], facts[1])
    changed = oracle.measure(m, w, unit, store=store, facts=other, mmlu=items)
    assert len(calls) == 3 and changed.fact_hits.shape == first.fact_hits.shape
    oracle.measure(m, w, unit, store=store, facts=facts, mmlu=[{**it, "id": it["id"] + "x"} for it in items])
    assert len(calls) == 6
    plain = oracle.measure(m, w, unit, store=store)
    assert len(calls) == 9 and plain.fact_hits.shape == (3, 0) and torch.equal(plain.window_nll, first.window_nll)
    with pytest.raises(ValueError, match="measured no facts"):
        plain.fact_recall_drop("blocks.1.mlp", "remove")
    assert plain.frame()["fact drop"].isna().all()


def test_removing_a_head_equals_zeroing_its_output_rows_and_maps_to_a_layer_head_table(tiny_model):
    """Zeroing head h's ``hook_z`` is zeroing its rows of W_O (an independent route to the same model)."""
    import copy

    x = torch.randint(0, tiny_model.cfg.d_vocab, (3, 10))
    cell = oracle.OracleCell(oracle.head(1, 2), oracle.REMOVE)
    assert cell.head == 2 and cell.layer == 1 and cell.components == ["blocks.1.attn"]
    with torch.no_grad(), oracle.applied(tiny_model, cell, None):
        got = tiny_model(x)
    ref = copy.deepcopy(tiny_model)
    with torch.no_grad():
        ref.blocks[1].attn.W_O[2] = 0
        want = ref(x)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="only be removed"):
        with oracle.applied(tiny_model, cell, oracle.OPERATIONS["prune"]):
            pass
    with pytest.raises(ValueError, match="Unknown unit"):
        oracle.OracleCell("blocks.1.mlp.2", oracle.REMOVE)
    wins = torch.randint(0, tiny_model.cfg.d_vocab, (2, 8))
    heads = oracle.head_units(tiny_model, [1])
    o = oracle.measure(tiny_model, wins, heads, {oracle.REMOVE: None}, cache=False)
    table = o.head_scores()
    assert table.shape == (2, tiny_model.cfg.n_heads) and torch.isnan(table[0]).all()
    naive = oracle.naive_cell_nll(tiny_model, wins, cell)
    base = oracle.naive_cell_nll(tiny_model, wins, None)
    assert table[1, 2] == pytest.approx(float((naive - base).mean() / 7), rel=1e-4)


def test_contiguous_layer_chunks_cover_every_unit_once():
    from analysis.compress import oracle_pool

    units = [f"blocks.{l}.{k}" for l in range(7) for k in ("attn", "mlp")] + ["blocks.3"]
    parts = oracle_pool.chunks(units, 3)
    assert sorted(u for p in parts for u in p) == sorted(units) and len(parts) == 3
    layers = [{oracle.OracleCell(u, oracle.REMOVE).layer for u in p} for p in parts]
    assert all(max(a) < min(b) for a, b in zip(layers, layers[1:]))  # contiguous, in order
    assert oracle_pool.chunks(units[:2], 5) == [units[:2]]


def test_worker_processes_fill_the_cache_with_the_serial_oracle(tmp_path, monkeypatch, save_tiny):
    """Two spawned workers load the model by folder and measure their layers; the result equals the
    serial oracle's, cell for cell."""
    from analysis import cache
    from analysis.compress import oracle_pool
    from analysis.models import load_model

    folder, _ = save_tiny(tmp_path / "ckpt", "llama")
    monkeypatch.setenv("ANALYSIS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "CACHE_DIR", tmp_path / "cache")
    model = load_model(str(folder))
    wins = torch.randint(0, model.cfg.d_vocab, (2, 8), generator=torch.Generator().manual_seed(0))
    units = oracle.units(model)
    par = oracle_pool.measure(model, str(folder), wins, units, n_procs=2)
    ser = oracle.measure(model, wins, units, cache=False)
    assert par.cells == ser.cells
    assert torch.allclose(par.window_nll, ser.window_nll, rtol=1e-5)
    assert len(list((tmp_path / "cache" / "oracle" / "cell").glob("*.pt"))) == len(units) * 3 + 1
