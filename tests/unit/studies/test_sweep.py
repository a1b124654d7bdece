"""analysis.studies.sweep and evaluate.Reference against direct computations."""

from __future__ import annotations

import dataclasses
import importlib
import math

import pytest
import torch

from analysis import scores as S
from analysis.config import get_profile
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
    # the per-window sums are lm_score's windows (disjoint windows score context - 1 tokens each)
    assert ref.base.window_nll == pytest.approx(direct.window_nll, rel=1e-5)
    assert ref.base.window_tokens == direct.window_tokens == (31,) * 6
    assert ref.base.perplexity_interval() == pytest.approx(direct.perplexity_interval(), rel=1e-5)
    lo, hi = ref.base.perplexity_interval()
    assert lo < ref.base.perplexity < hi


def test_reference_fact_hits_and_their_wilson_interval(tiny_model, monkeypatch):
    import analysis.evaluate as E
    from analysis.stats import proportion_ci as proportion_interval

    # the tiny model has no tokenizer: prompts are space-separated token ids, targets one id
    def predictions(model, prompts, batch_size=16, desc=""):
        return torch.stack([model(torch.tensor([[int(t) for t in p.split()]]))[0, -1] for p in prompts])

    monkeypatch.setattr(E, "next_token_predictions", predictions)
    monkeypatch.setattr(E, "first_target_token", lambda model, target: int(target))
    prompts = ["1 2 3", "4 5", "6 7 8 9", "10"]
    with torch.no_grad():
        top = [int(tiny_model(torch.tensor([[int(t) for t in p.split()]]))[0, -1].argmax()) for p in prompts]
    targets = [str(top[0]), str(top[1]), str((top[2] + 1) % 50), str(top[3])]  # the third is wrong
    tokens = torch.randint(0, 50, (64,), generator=torch.Generator().manual_seed(4))
    ref = Reference(tiny_model, tokens, context=32, prompts=prompts, targets=targets)
    hits = [True, True, False, True]
    assert list(ref.base.fact_hits) == hits and ref.base.fact_recall == pytest.approx(sum(hits) / 4)
    # Wilson's interval by its formula (z = 1.96): 3 of 10
    z, p, n = 1.959964, 0.3, 10
    centre, half = (
        (p + z * z / (2 * n)) / (1 + z * z / n),
        z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n),
    )
    assert proportion_interval(3, 10) == pytest.approx((centre - half, centre + half), rel=1e-4)
    assert all(math.isnan(x) for x in proportion_interval(0, 0))


def test_constant_allocations_are_the_uniform_cells_of_their_level():
    c = sweep.Cell("constant low", (0.3, 0.2, 0.1), (2, 3, 4))
    assert c.canonical() == sweep.Cell(sweep.UNIFORM, (0.3,) * 3, (2,) * 3) and c.is_uniform
    assert sweep.Cell("constant high", (0.5, 0.3, 0.1), (2, 3, 4)).canonical() == sweep.Cell(
        sweep.UNIFORM, (0.1,) * 3, (4,) * 3
    )
    assert not sweep.Cell("m", (0.3, 0.2, 0.1), (2, 3, 4)).is_uniform


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
    import analysis.studies.sweep.cells as cells_mod

    monkeypatch.setattr(cells_mod, "evaluate_cell", lambda *a, **k: pytest.fail("cell recomputed"))
    again = sweep.run_sweep(tiny_model, ref, cells, scores, cache_config={"test": 1})
    assert [r.perplexity for r in again] == [r.perplexity for r in results]
    # "constant high" at (2, 3, 4) is uniform 4-bit: served from the cache under that name
    same = sweep.run_sweep(
        tiny_model, ref, [sweep.Cell(sweep.UNIFORM, (0.0,) * 3, (4,) * 3)], scores, cache_config={"test": 1}
    )
    assert same[0].perplexity == by["constant high", (2, 3, 4)].perplexity and same[0].cell.allocation == sweep.UNIFORM
    assert (
        len(mixed.window_nll) == 4
        and mixed.perplexity_interval()[0] < mixed.perplexity < mixed.perplexity_interval()[1]
    )


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


def test_sweep_on_a_dask_cluster_equals_the_serial_run_and_resumes(tmp_path, monkeypatch, save_tiny):
    """A two-worker LocalCluster: each worker loads the model by path once; cells equal the
    in-process ones, land in the local cache, and a rerun evaluates nothing."""
    import distributed

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
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        par = sweep.run_sweep(
            model, ref, cells, scores, cache_config={"t": 3}, client=client, model_name=str(folder), reference_args=args
        )
    serial = [sweep.evaluate_cell(model, ref, c, scores) for c in cells]
    assert [r.perplexity for r in par] == pytest.approx([r.perplexity for r in serial], rel=1e-5)

    def no_work(*a, **k):
        raise AssertionError("a cached cell was evaluated again")

    monkeypatch.setattr(sweep.cells, "evaluate_cell", no_work)
    again = sweep.run_sweep(model, ref, cells, scores, cache_config={"t": 3})
    assert [r.perplexity for r in again] == [r.perplexity for r in par]


def test_unigram_bar_counts_by_hand():
    from analysis.evaluate import unigram_score

    train = torch.tensor([0, 0, 1, 2])  # add-one counts [3, 2, 2, 1] over a vocabulary of 4: total 8
    windows = torch.tensor([[0, 1, 2], [3, 0, 0]])  # targets (1, 2) and (0, 0)
    u = unigram_score(train, windows, vocab_size=4)
    assert u.window_nll == pytest.approx((-2 * math.log(2 / 8), -2 * math.log(3 / 8)))
    assert u.window_tokens == (2, 2) and u.n_tokens == 4
    assert u.perplexity == pytest.approx(math.exp(-(2 * math.log(2 / 8) + 2 * math.log(3 / 8)) / 4))
    assert u.accuracy == pytest.approx(0.5)  # always predicting token 0 hits the last window's two targets
    with pytest.raises(ValueError, match="d_vocab"):
        unigram_score(train, windows, vocab_size=3)
    with pytest.raises(ValueError, match="training tokens"):
        unigram_score(torch.tensor([], dtype=torch.long), windows, vocab_size=4)


def test_a_model_that_predicts_unigram_frequencies_scores_the_unigram_bar(tiny_model):
    """The bar is scored as a model is: one whose every prediction is the unigram distribution
    gets exactly its perplexity, window by window, through Reference.score and lm_score."""
    from analysis.evaluate import unigram_score

    class Unigram(torch.nn.Module):
        def __init__(self, cfg, logp):
            super().__init__()
            self.cfg, self.logp = cfg, logp

        def forward(self, x, return_type="logits"):
            return self.logp.expand(*x.shape, -1)

    gen = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, 50, (200,), generator=gen)
    train = torch.randint(0, 30, (500,), generator=gen)  # tokens 30..49 unseen: smoothing matters
    ref = Reference(tiny_model, tokens, context=32)
    bar = unigram_score(train, ref.windows, tiny_model.cfg.d_vocab)
    counts = torch.bincount(train, minlength=tiny_model.cfg.d_vocab).float() + 1
    as_model = ref.score(Unigram(tiny_model.cfg, (counts / counts.sum()).log()))
    assert bar.window_tokens == as_model.window_tokens
    assert bar.window_nll == pytest.approx(as_model.window_nll, rel=1e-5)
    assert bar.perplexity == pytest.approx(as_model.perplexity, rel=1e-5)
    direct = lm_score(Unigram(tiny_model.cfg, (counts / counts.sum()).log()), ref.windows.flatten(), context=32)
    assert direct.window_nll == pytest.approx(bar.window_nll, rel=1e-5)


def test_tercile_cells_and_their_shuffles_put_a_third_of_each_kind_in_each_level():
    cfg = sweep.config_for("smoke")
    cells = sweep.tercile_grid(cfg)
    assert len(cells) == len(cfg.terciles) * len(cfg.tercile_scores) * (1 + cfg.n_shuffles)
    assert cells[0].allocation == "causal tracing (terciles)"
    heavy = torch.tensor([[0.0, 0.0]] * 8 + [[100.0, 50.0]])  # one outlier layer
    s = {"causal tracing": S.ComponentScores("causal tracing", heavy.to(torch.float64))}
    assert list(s["causal tracing"].levels().values()).count("medium") == 16  # z-scores: 16 of 18 medium
    for cell in cells:
        levels = sweep.level_assignment(cell.allocation, s)
        for kind in ("attn", "mlp"):
            got = sorted(v for c, v in levels.items() if c.endswith(kind))
            assert got == sorted(["low"] * 3 + ["medium"] * 3 + ["high"] * 3), cell.allocation
    shuffled = [sweep.level_assignment(c.allocation, s) for c in cells[1:]]
    assert any(a != sweep.level_assignment(cells[0].allocation, s) for a in shuffled)


def test_run_scores_every_grid_on_one_reference(tiny_model, tmp_path, monkeypatch):
    """``run`` wires the inputs into the seed grid, the controls (random, then uniform) and the
    terciles of the profile's config, every cell scored on the one reference it built."""
    import analysis.cache as cache_mod

    run_module = importlib.import_module("analysis.studies.sweep.run")  # ``sweep.run`` is the function
    monkeypatch.setattr(cache_mod, "CACHE_DIR", tmp_path)
    gen = torch.Generator().manual_seed(5)
    by_name = {
        name: S.ComponentScores(name, torch.rand(2, 2, generator=gen, dtype=torch.float64)) for name in sweep.SCORES
    }
    setup = sweep.ReferenceSetup(
        Reference(tiny_model, torch.randint(0, 50, (128,), generator=gen), context=32), {"t": 5}, {}
    )
    bar = setup.reference.base.lm_score()
    monkeypatch.setattr(run_module, "redundancy_scores", lambda model, cfg, profile: by_name)
    monkeypatch.setattr(
        run_module, "gradient_curve", lambda model, cfg, profile: {cfg.calib_tokens: by_name["gradient magnitude"]}
    )
    monkeypatch.setattr(run_module, "reference_for", lambda model, cfg, profile: setup)
    monkeypatch.setattr(run_module, "unigram_bar", lambda model, cfg, reference: bar)
    result = sweep.run(tiny_model, "smoke")
    cfg = sweep.config_for("smoke")
    assert (
        result.config == cfg and result.scores is by_name and result.bar is bar and result.base is setup.reference.base
    )
    assert [r.cell for r in result.seed_grid] == sweep.seed_grid(cfg, by_name)
    assert [r.cell for r in result.controls] == sweep.control_grid(cfg, by_name) + sweep.uniform_grid(cfg)
    assert [r.cell for r in result.terciles] == sweep.tercile_grid(cfg)
    first = result.seed_grid[0]
    direct = sweep.evaluate_cell(tiny_model, setup.reference, first.cell, by_name, cfg.threshold)
    assert first.perplexity == pytest.approx(direct.perplexity) and first.kl == pytest.approx(direct.kl)
    assert result.boot.n_windows == len(setup.reference.base.window_nll) == 4


def test_what_smoke_shrinks_is_marked_as_a_size():
    """Every field the small profile sets apart from ``gpu`` is a size, except the choices (which
    model, which scores get terciles); ``gpu`` with smoke's sizes is a consistent grid."""
    sizes = {f.name for f in dataclasses.fields(sweep.SweepConfig) if f.metadata.get("size")}
    smoke, gpu = sweep.CONFIGS["smoke"], sweep.CONFIGS["gpu"]
    differ = {f.name for f in dataclasses.fields(gpu) if getattr(smoke, f.name) != getattr(gpu, f.name)}
    assert differ - sizes == {"model", "tercile_scores"}
    toy = dataclasses.replace(gpu, **{name: getattr(smoke, name) for name in sizes})
    assert toy.model == gpu.model and toy.controls == smoke.controls


def test_choosing_and_judging_data_are_disjoint(monkeypatch):
    """The facts that choose an allocation (``"score"``: the causal-tracing score) never judge it
    (``"eval"``: every cell's fact recall), and the text that chooses (``"calib"``: the gradient
    score) is not the text that judges (``"eval"``), under the cpu and smoke configs."""
    from types import SimpleNamespace

    from datasets import Dataset

    inputs = importlib.import_module("analysis.studies.sweep.inputs")
    ids = lambda *xs: Dataset.from_dict({"id": list(xs)})  # noqa: E731
    splits = {"score": ids("a", "b"), "eval": ids("c", "d")}
    recipe = SimpleNamespace(screen=SimpleNamespace(splits=lambda model: splits))
    monkeypatch.setattr(inputs.tracing, "recipe_for", lambda profile: recipe)
    got = inputs.fact_split(None, "cpu")
    assert set(got["score"]["id"]).isdisjoint(got["eval"]["id"])
    splits["eval"] = ids("b", "c")
    with pytest.raises(ValueError, match="disjoint"):
        inputs.fact_split(None, "cpu")
    asked = []
    monkeypatch.setattr(inputs.data, "lm_tokens", lambda tok, split, n_tokens: asked.append(split) or torch.zeros(1))
    monkeypatch.setattr(inputs.scores, "gradient_magnitude_curve", lambda *a: {})
    for name in ("smoke", "cpu"):
        inputs.gradient_curve(SimpleNamespace(tokenizer=None), sweep.config_for(name), get_profile(name))
    assert asked == ["calib", "calib"]  # the judging windows are "eval" (reference_for)
