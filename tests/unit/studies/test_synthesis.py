"""The synthesis study: the allocator keeps size matched, rank agreement matches scipy, the verdict
rules hold, fail and stay inconclusive where they should (and rarely call a null "reproduced"),
costs are recorded, and the text that chooses never judges."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import stats as sps

from analysis import cache, compress, stats
from analysis.components import component
from analysis.scores import ComponentScores
from analysis.studies import synthesis
from analysis.studies import verdicts as shared
from analysis.studies.synthesis import agreement, allocate
from analysis.studies.synthesis import run as run_mod
from analysis.studies.synthesis.signals import Signal

L = 9


def signal(values, name="s", level="component") -> Signal:
    v = torch.as_tensor(np.asarray(values, dtype=float))
    if v.ndim == 1:
        v = torch.stack([v, v], 1)
    return Signal(ComponentScores(name, v), level=level)


# ---- the allocator -----------------------------------------------------------------------------


@pytest.mark.parametrize("op,budget", [("prune", 0.4), ("quantize", 4)])
def test_allocation_is_size_matched_and_compresses_the_lowest_third_hardest(op, budget):
    rng = np.random.default_rng(0)
    s = signal(rng.normal(size=(L, 2)))
    a = allocate.by_signal(s, op, budget)
    u = allocate.uniform(L, op, budget)
    got = dict(a.settings)
    for k, kind in enumerate(("attn", "mlp")):
        per_layer = np.array([got[component(l, kind)] for l in range(L)])
        assert per_layer.mean() == pytest.approx(budget, rel=1e-12)  # matched size, kind by kind
        order = np.argsort(s.scores.values[:, k].numpy())
        harsh = per_layer[order[: L // 3]]
        mild = per_layer[order[-(L // 3) :]]
        if op == "prune":
            assert (harsh > mild).all()  # least information: pruned most
        else:
            assert (harsh < mild).all()  # least information: fewest bits
    assert sorted(v for _, v in u.settings) == [budget] * (2 * L)
    r = allocate.randomized(L, op, budget, seed=3)
    assert sorted(v for _, v in r.settings) == sorted(got.values())  # same multiset: same size
    assert r == allocate.randomized(L, op, budget, seed=3) and r != allocate.randomized(L, op, budget, seed=4)


def test_an_attention_only_signal_leaves_every_mlp_at_the_budget():
    s = synthesis.from_layers("dens", np.arange(L, dtype=float), "attn")
    got = dict(allocate.by_signal(s, "prune", 0.3).settings)
    assert {got[component(l, "mlp")] for l in range(L)} == {0.3}
    assert got[component(0, "attn")] == pytest.approx(0.5) and got[component(L - 1, "attn")] == pytest.approx(0.1)


def test_removal_drops_the_lowest_blocks_and_checks_its_budget():
    s = signal([5, 1, 7, 0, 9, 3, 8, 2, 6])
    assert allocate.by_signal(s, "remove", 3).removed == (1, 3, 7)
    with pytest.raises(ValueError, match="layer count"):
        allocate.by_signal(s, "remove", L)
    with pytest.raises(ValueError, match="no uniform"):
        allocate.uniform(L, "remove", 2)
    with pytest.raises(ValueError, match="Unknown operation"):
        allocate.by_signal(s, "distill", 2)


def test_applied_allocations_have_the_uniform_size_and_removal_skips_the_block(tiny_cfg):
    from transformer_lens import HookedTransformer

    tiny_model = HookedTransformer(tiny_cfg(n_layers=7)).eval()
    n = tiny_model.cfg.n_layers
    s = signal(np.arange(n * 2, dtype=float).reshape(n, 2))
    for op, b in (("prune", 0.4), ("quantize", 4)):
        sized = []
        for a in (allocate.by_signal(s, op, b), allocate.uniform(n, op, b)):
            make = compress.Prune if op == "prune" else (lambda v: compress.Quantize(int(v)))
            sized.append(compress.CompressionPlan({c: [make(v)] for c, v in a.settings}).size(tiny_model).bits)
        assert sized[0] == pytest.approx(sized[1], rel=1e-3)  # equal but for rounding one weight per matrix
    x = torch.randint(0, tiny_model.cfg.d_vocab, (2, 6))
    with allocate.removal("r", [1]).applied(tiny_model):
        _, got = tiny_model.run_with_cache(x)
    assert torch.allclose(got["blocks.1.hook_resid_post"], got["blocks.1.hook_resid_pre"])
    _, dense = tiny_model.run_with_cache(x)
    assert not torch.allclose(dense["blocks.1.hook_resid_post"], dense["blocks.1.hook_resid_pre"])


# ---- rank agreement ------------------------------------------------------------------------------


def test_rank_correlations_match_scipy_with_ties():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 4, (5, 12)).astype(float)
    y = x + rng.integers(0, 3, (5, 12))
    for i in range(5):
        assert agreement._spearman(x, y)[i] == pytest.approx(sps.spearmanr(x[i], y[i])[0], rel=1e-9)
        assert agreement._kendall(x, y)[i] == pytest.approx(sps.kendalltau(x[i], y[i])[0], rel=1e-9)


def test_agreement_is_the_mean_within_kind_correlation_and_blocks_compare_blocks():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(L, 2)), rng.normal(size=(L, 2))
    idx = agreement.draws(L, 50)
    want = np.mean([sps.spearmanr(a[:, k], b[:, k])[0] for k in range(2)])
    assert agreement.correlation_draws(signal(a), signal(b), idx)[0] == pytest.approx(want, rel=1e-9)
    block = signal(b[:, 0], level="block")
    got = agreement.correlation_draws(signal(a), block, idx)[0]
    assert got == pytest.approx(sps.spearmanr(signal(a).block_values(), b[:, 0])[0], rel=1e-9)
    est, lo, hi = agreement.interval(agreement.correlation_draws(signal(a), signal(a), idx))
    assert est == lo == hi == pytest.approx(1.0)


# ---- the verdict rules ---------------------------------------------------------------------------


def gains_of(means, n=10, sd=0.01, seed=0):
    rng = np.random.default_rng(seed)
    return {name: [stats.paired(rng.normal(m, sd, n)) for m in per_budget] for name, per_budget in means.items()}


def test_any_beats_holds_fails_and_stays_inconclusive():
    win = synthesis.any_beats("c", gains_of({"a": [0.05, 0.06, 0.04], "b": [0.0, 0.0, 0.0]}), 0.01)
    assert win.verdict == "reproduced"
    lose = synthesis.any_beats("c", gains_of({"a": [-0.05, 0.0, 0.0], "b": [-0.1, -0.1, -0.1]}), 0.01)
    assert lose.verdict == "not reproduced"
    noisy = synthesis.any_beats("c", gains_of({"a": [0.01, 0.02, 0.02]}, sd=0.1), 0.01)
    assert noisy.verdict == "inconclusive"
    few = synthesis.any_beats("c", gains_of({"a": [0.05, 0.06, 0.04]}, n=5), 0.01)
    assert few.verdict == "inconclusive"
    one_bad_budget = synthesis.any_beats("c", gains_of({"a": [0.05, 0.06, -0.02]}), 0.01)
    assert one_bad_budget.verdict != "reproduced"  # a win must hold at every budget


def test_any_beats_rarely_calls_a_null_reproduced_at_the_studys_n():
    """26 candidates (13 signals x 2 operations) x 3 budgets at the cpu profile's windows, no true
    gain, heavy tails, candidates correlated through shared windows."""
    n = synthesis.config_for("cpu").eval_windows

    def judge(rng):
        shared_noise = rng.standard_t(3, (3, n))
        gains = {
            f"s{k}": [stats.paired(0.7 * shared_noise[b] + 0.7 * rng.standard_t(3, n)) for b in range(3)]
            for k in range(26)
        }
        return synthesis.any_beats("c", gains, 0.01)

    assert shared.false_reproduced_rate(judge, n_sims=300) <= 0.05


def test_cheapest_near_best_holds_fails_and_stays_inconclusive():
    rng = np.random.default_rng(3)
    n = 30
    y = rng.normal(size=n)
    oracle = {"o": signal(y, "oracle", level="block")}

    def priced(v, name, seconds):
        s = signal(v, name)
        return Signal(s.scores, synthesis.Cost(seconds, 1.0, True))

    same = {"best": priced(y, "best", 10.0), "cheap": priced(y + 1e-3 * rng.normal(size=n), "cheap", 0.1)}
    assert synthesis.cheapest_near_best(same, oracle, 0.1, 200).verdict == "reproduced"
    far = {"best": priced(y, "best", 10.0), "cheap": priced(rng.normal(size=n), "cheap", 0.1)}
    assert synthesis.cheapest_near_best(far, oracle, 0.1, 200).verdict == "not reproduced"
    mid = {"best": priced(y, "best", 10.0), "cheap": priced(y + 0.5 * rng.normal(size=n), "cheap", 0.1)}
    assert synthesis.cheapest_near_best(mid, oracle, 0.1, 200).verdict == "inconclusive"
    unpriced = {"a": signal(y, "a")}
    assert synthesis.cheapest_near_best(unpriced, oracle, 0.1).verdict == "inconclusive"


def test_cheapest_near_best_rarely_reproduces_when_the_cheapest_is_a_margin_worse():
    """At the boundary: over 30 layers the best signal has ρ ≈ 0.9 with the oracle, the cheapest ρ ≈ 0.8."""
    n = synthesis.config_for("cpu").n_boot

    def judge(rng):
        y = rng.normal(size=30)
        best = signal(y + 0.48 * rng.normal(size=30), "best")
        cheap = signal(y + 0.75 * rng.normal(size=30), "cheap")
        sigs = {
            "best": Signal(best.scores, synthesis.Cost(10.0, 1.0, True)),
            "cheap": Signal(cheap.scores, synthesis.Cost(0.1, 1.0, True)),
        }
        return synthesis.cheapest_near_best(
            sigs, {"o": signal(y, "o", "block")}, 0.1, min(n, 200), int(rng.integers(1e6))
        )

    assert shared.false_reproduced_rate(judge, n_sims=150) <= 0.05


# ---- costs and the texts ----------------------------------------------------------------------


def test_a_cache_hit_carries_the_cost_recorded_when_it_was_computed(tmp_path):
    store = cache.DiskCache(tmp_path)
    ticks = iter([0.0, 7.5])
    cache.cached("t", lambda: 1, {"a": 1}, cache=store, clock=lambda: next(ticks))
    with synthesis.metered() as cost:
        cache.cached("t", lambda: 1, {"a": 1}, cache=store)
    assert cache.RUNS[-1].hit and cache.RUNS[-1].recorded.seconds == pytest.approx(7.5)
    assert cost.seconds >= 7.5 and cost.complete
    store.record_path("t", cache.cache_key("t", {"a": 1})).unlink()
    with synthesis.metered() as cost:
        cache.cached("t", lambda: 1, {"a": 1}, cache=store)
    assert not cost.complete and cost.seconds < 7.5


@pytest.mark.parametrize("name", ["smoke", "cpu"])
def test_choosing_and_judging_data_are_disjoint(monkeypatch, name):
    """Calibration text chooses (signals), the oracle's windows and facts choose the oracle's allocation,
    the leaderboard's windows and facts judge: no token window and no fact is in two of them."""
    from datasets import Dataset

    asked = []

    def lm_tokens(tok, split, n_tokens):
        asked.append(split)
        return torch.arange(n_tokens) + (10**7 if split == "calib" else 0)

    facts = Dataset.from_dict({k: [f"{k}{i}" for i in range(40)] for k in ("id", "prompt", "target", "relation")})
    recipe = SimpleNamespace(screen=SimpleNamespace(splits=lambda model: {"eval": facts}))
    seen = {}

    class Reference:
        def __init__(self, model, tokens, context, batch_size, prompts, targets):
            seen.update(tokens=tokens, prompts=prompts)
            self.windows = tokens.view(-1, context)

    monkeypatch.setattr(run_mod.data, "lm_tokens", lm_tokens)
    monkeypatch.setattr(run_mod.tracing, "recipe_for", lambda profile: recipe)
    monkeypatch.setattr(run_mod, "Reference", Reference)
    monkeypatch.setattr(run_mod.mmlu, "mmlu_items", lambda n, split="test": [{"id": f"{split}/{i}"} for i in range(n)])
    s = run_mod.setup(SimpleNamespace(tokenizer=None), name)
    assert asked == ["calib", "eval"]
    assert set(s.oracle_windows.flatten().tolist()).isdisjoint(seen["tokens"].tolist())
    assert set(s.calib.tolist()).isdisjoint(seen["tokens"].tolist())
    assert set(s.oracle_facts[0]).isdisjoint(seen["prompts"]) and s.oracle_facts[0] and seen["prompts"]
    assert all(it["id"].startswith("test/") for it in s.mmlu_items)  # the oracle's MMLU (if any) is the dev split


def test_per_layer_and_per_head_maps_become_block_and_attention_signals():
    b = synthesis.from_layers("b", [3.0, 1.0, 2.0])
    assert b.level == "block" and torch.equal(b.scores.values[:, 0], b.scores.values[:, 1])
    heads = torch.tensor([[1.0, 3.0], [0.0, 0.0], [5.0, 7.0]])
    a = synthesis.from_heads("a", heads)
    assert a.scores.kinds == ("attn",) and a.kind_values("mlp") is None
    assert np.allclose(a.kind_values("attn"), [2.0, 0.0, 6.0])
    with pytest.raises(ValueError, match="one finite value per layer"):
        synthesis.from_layers("x", [1.0, float("nan")])


def test_cheap_signals_equal_their_library_functions_and_keep_their_cost(gqa_model, tmp_path, monkeypatch):
    from analysis import saliency, scores
    from analysis.geometry import removal

    monkeypatch.setattr(cache, "CACHE_DIR", tmp_path)
    tokens = torch.randint(0, gqa_model.cfg.d_vocab, (64,))
    got = synthesis.cheap_signals(gqa_model, tokens, context=16, batch_size=2, lens_tokens=32)
    assert torch.allclose(got["Wanda"].scores.values, saliency.wanda(gqa_model, tokens, 16, 2).values.double())
    assert torch.allclose(
        got["Block Influence (ShortGPT)"].scores.values,
        removal.block_influence(gqa_model, tokens, 16, 2).values.double(),
    )
    lens = saliency.lens_kl_gain(gqa_model, tokens[:32], 16, 2).values.double()
    assert torch.allclose(got["logit-lens KL gain"].scores.values, lens)
    assert torch.allclose(got["weight magnitude"].scores.values, scores.weight_magnitude(gqa_model).values.double())
    assert all(s.cost.seconds > 0 and s.cost.complete for s in got.values())
    again = synthesis.cheap_signals(gqa_model, tokens, context=16, batch_size=2, lens_tokens=32)
    assert again["Fisher"].cost.seconds == got["Fisher"].cost.seconds  # the cost recorded when computed


def test_head_layers_and_head_prediction_against_the_measured_head_oracle(tiny_cfg):
    from transformer_lens import HookedTransformer

    from analysis.compress import oracle

    assert synthesis.heads.head_layers(30, 3) == [0, 14, 29] and synthesis.heads.head_layers(4, 9) == [0, 1, 2, 3]
    assert synthesis.heads.head_layers(30, 0) == []
    model = HookedTransformer(tiny_cfg(n_layers=3)).eval()
    wins = torch.randint(0, model.cfg.d_vocab, (3, 12))
    measured = oracle.measure(model, wins, oracle.head_units(model, [0, 2]), {oracle.REMOVE: None}, cache=False)
    cost = measured.head_scores()
    maps = {"truth": torch.nan_to_num(cost, nan=0.0), "reversed": -torch.nan_to_num(cost, nan=0.0)}
    got = synthesis.heads.head_prediction(maps, measured, n_boot=50).set_index("signal")
    assert got.loc["truth", "spearman"] == pytest.approx(1.0) and got.loc["reversed", "spearman"] == pytest.approx(-1.0)


def fake_result(gain: float, n_windows: int = 10, seed: int = 0):
    """A run where signal "good" beats uniform by ``gain`` nats/token at every prune and quantize budget."""
    rng = np.random.default_rng(seed)
    cfg = synthesis.config_for("cpu")
    sigs = {"good": signal(rng.normal(size=L), "good"), "meh": signal(rng.normal(size=L), "meh")}
    base = rng.normal(3.0, 0.3, n_windows)
    tokens = 95

    def score(name, op, b, extra):
        nll = (base + extra + rng.normal(0, 0.005, n_windows)) * tokens
        return synthesis.Score(allocate.Allocation(name, op, b), tuple(nll), tokens, (True, False))

    scores = []
    for op, budgets in (("prune", cfg.prune_budgets), ("quantize", cfg.bit_budgets)):
        for b in budgets:
            scores += [score("uniform", op, b, 0.3), score("good", op, b, 0.3 - gain), score("meh", op, b, 0.3)]
    for b in cfg.remove_budgets:
        scores += [score(allocate.SHORTGPT, "remove", b, 1.0), score(allocate.GROMOV, "remove", b, 1.0)]
        scores += [score("good", "remove", b, 1.5), score("meh", "remove", b, 1.2)]
    oracles = {k: signal(rng.normal(size=L), k) for k in ("prune", "quantize")}
    oracles["remove (block)"] = signal(rng.normal(size=L), "rb", "block")
    dense = synthesis.Score(allocate.Allocation("dense", "dense", 0), tuple(base * tokens), tokens, (True, True))
    return synthesis.SynthesisResult(cfg, sigs, oracles, tuple(scores), dense, 1000.0)


def test_the_study_verdicts_read_the_leaderboard():
    win = synthesis.verdicts(fake_result(0.1))
    assert [v.verdict for v in win[:2]] == ["reproduced", "not reproduced"]
    assert win[0].claim == synthesis.verdicts.__globals__["BEATS_UNIFORM"]
    none = synthesis.verdicts(fake_result(-0.1))
    assert none[0].verdict == "not reproduced"
    assert synthesis.verdicts(fake_result(0.1, n_windows=6))[0].verdict == "inconclusive"
    lines = synthesis.answer(
        fake_result(0.1), synthesis.agreement.prediction(fake_result(0.1).signals, fake_result(0.1).oracles, 50)
    )
    assert any(line.startswith("prune: best signal allocation good") for line in lines)


def test_survival_beside_the_anchors_reads_the_uniform_rows():
    import pandas as pd

    t = pd.DataFrame(
        {
            "model": ["uniform 6 bits"] * 2 + ["uniform 7 bits"] * 2 + ["best: x"],
            "share": [0.4, 0.6, 0.8, 0.9, 0.1],
            "degraded": [0.6, 0.4, 0.2, 0.1, 0.9],
            "perplexity": [11.0, 11.0, 10.5, 10.5, 30.0],
        }
    )
    got = synthesis.features.beside_anchors(t, 10.0, synthesis.SURVIVAL_ANCHORS)
    assert got.iloc[0, 0] == pytest.approx(0.5) and "0.624" in got.iloc[0, 2] and "0.513" in got.iloc[0, 2]
    assert got.iloc[1, 0] == pytest.approx(0.15) and "0.187" in got.iloc[1, 2]
    assert got.iloc[2, 0] == pytest.approx(0.05)


def test_feature_deaths_are_credited_to_the_head_that_writes_the_feature():
    import pandas as pd

    n_heads, d_head, d_sae = 3, 2, 6
    w = torch.zeros(d_sae, n_heads * d_head)
    for f in range(d_sae):  # feature f is written by head f % 3
        w[f, (f % n_heads) * d_head] = 1.0
    sae = SimpleNamespace(cfg=SimpleNamespace(d_sae=d_sae), W_dec=w, decode=lambda a: a @ w)
    active = np.array([True] * 6)
    survived = np.array([True, True, False, True, False, False])  # heads 0: 2/2, 1: 1/2, 2: 0/2
    table = pd.DataFrame(
        [
            {
                "model": "uniform 6 bits",
                "SAE hook": "blocks.1.attn.hook_z",
                "SAE layer": 1,
                "share": 0.5,
                "active mask": active,
                "survived mask": survived,
            }
        ]
    )
    deaths = synthesis.features.deaths_by_head(table, {"blocks.1.attn.hook_z": sae}, "uniform 6 bits", n_heads)
    assert deaths["surviving"].tolist() == [1.0, 0.5, 0.0] and deaths["active"].tolist() == [2, 2, 2]
    maps = {"good": torch.tensor([[0.0, 0.0, 0.0], [3.0, 2.0, 1.0]]), "bad": torch.tensor([[0.0] * 3, [1.0, 2.0, 3.0]])}
    got = synthesis.features.death_prediction(deaths, maps, min_active=1, n_boot=50)
    assert got.loc["good", "spearman"] == pytest.approx(1.0) and got.loc["bad", "spearman"] == pytest.approx(-1.0)
    assert synthesis.features.most_informative(table.assign(share=[0.45]), [6]) == "uniform 6 bits"
