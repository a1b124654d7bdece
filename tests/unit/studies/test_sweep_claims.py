"""The sweep's matched-size comparisons and verdicts on hand-made cells whose answers are known.

Every cell is scored on the same 20 windows of 100 tokens; a cell's per-token NLL in a window is
the shared window difficulty plus the cell's ``shift`` (plus seeded noise), so its Δ log perplexity
against another cell is exactly the difference of the shifts when there is no noise.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from analysis.evaluate import Comparison, LMScore
from analysis.studies import sweep

W = 20
DIFFICULTY = np.linspace(3.0, 4.0, W)
MILD, MODERATE, AGG = (0.3, 0.2, 0.1), (0.5, 0.3, 0.1), (2, 3, 4)
SETTING = (MILD, AGG)


def _cell(alloc, prune, bits, mb, shift=0.0, noise=0.0, seed=0, recall=1.0):
    per_token = DIFFICULTY + shift + noise * np.random.default_rng(seed).standard_normal(W)
    nll = tuple(float(x) * 100 for x in per_token)
    ppl = math.exp(sum(nll) / (100 * W))
    return sweep.CellResult(
        sweep.Cell(alloc, tuple(prune), tuple(bits)), ppl, 0.0, recall, 0.5, 4.0, mb, 0.0, 0.0, {}, nll, (100,) * W
    )


def _uniform():
    """Uniform cells at 4, 6, 8, 10 MB (shift 1.0, 0.6, 0.3, 0.1) and a dominated one at 7 MB (0.9)."""
    pts = [
        ((0.0, 2), 4.0, 1.0),
        ((0.0, 3), 6.0, 0.6),
        ((0.0, 4), 8.0, 0.3),
        ((0.0, 5), 10.0, 0.1),
        ((0.3, 4), 7.0, 0.9),
    ]
    return [_cell(sweep.UNIFORM, (p,) * 3, (b,) * 3, mb, s) for (p, b), mb, s in pts]


def _boot(results):
    return sweep.Bootstrap.of(results, n_boot=400)


def _config(prunes, bits, controls=(), **sizes) -> sweep.SweepConfig:
    """A sweep config with the given grid; sizes that these tests never use are 1."""
    base = dict(eval_tokens=1, n_facts=1, calib_tokens=1, calib_sizes=(1,), uniform=())
    return sweep.SweepConfig(prunes=prunes, bits=bits, controls=controls, **{**base, **sizes})


def _result(results, cfg, bar: float = 1e9, controls=()) -> sweep.SweepResult:
    """A run whose seed grid is ``results`` (then ``controls``) and whose unigram line is ``bar``."""
    base = Comparison(float(DIFFICULTY.mean()), 0.5, 0.0, 1.0, 100 * W, 0, tuple(DIFFICULTY * 100), (100,) * W)
    return sweep.SweepResult(cfg, {}, {}, base, LMScore(math.log(bar), 0.0, 1), tuple(results), tuple(controls), ())


# ---------------------------------------------------------------------------------------------
# Frontier and paired differences
# ---------------------------------------------------------------------------------------------


def test_pareto_front_keeps_the_best_uniform_result_at_each_size():
    sizes, values = [4.0, 6.0, 7.0, 8.0, 8.0], [1.0, 0.6, 0.9, 0.3, 0.5]
    assert sweep.pareto_front(sizes, values).tolist() == [0, 1, 3]  # 7 MB is dominated by 6 MB; tie at 8 keeps the best
    at = sweep.frontier_at(sizes, values, [5.0, 7.0, 3.0, 9.0])
    assert at[0] == pytest.approx(0.8) and at[1] == pytest.approx(0.45)  # interpolated between 6 and 8, not through 7
    assert math.isnan(at[2]) and math.isnan(at[3])  # outside the frontier's sizes


def test_versus_uniform_uses_the_frontier_not_every_uniform_cell():
    uniform = _uniform()
    m = _cell("m", MILD, AGG, 7.0, shift=0.5)
    results = uniform + [m]
    (d,) = sweep.versus_uniform([m], uniform, _boot(results))
    assert d.estimate == pytest.approx(0.5 - 0.45)  # the 7 MB uniform cell (0.9) would make m look better
    assert d.ci() == pytest.approx((0.05, 0.05), abs=1e-9)  # no noise: every resample agrees
    table = sweep.uniform_frontier(uniform)
    assert table["on frontier"].tolist() == [True, True, False, True, True]
    f = sweep.uniform_matched([m], uniform, _boot(results))
    assert f["uniform ppl at same size"].iloc[0] == pytest.approx(m.perplexity / math.exp(0.05))


def test_bootstrap_differences_are_paired_over_windows():
    a, b = _cell("a", MILD, AGG, 5.0, shift=0.1, noise=0.05, seed=1), _cell("b", MILD, AGG, 5.0, noise=0.05, seed=2)
    boot = _boot([a, b])
    d = boot.between(a, b)
    assert d.estimate == pytest.approx(math.log(a.perplexity / b.perplexity))
    lo, hi = d.ci()
    assert lo < d.estimate < hi and hi - lo < 0.1  # the window difficulty (spread 1.0) cancels
    assert d.p_below(0.0) > 0.9 and d.p_above(0.0) < 0.01


def test_versus_random_compares_with_the_mean_of_the_shuffles_and_holm_adjusts():
    results = [_cell("m", *SETTING, 5.0, shift=0.2)] + [
        _cell(f"random:m:{s}", *SETTING, 5.0, shift=0.3 + 0.02 * s) for s in range(5)
    ]
    results += [_cell("m", MILD, (3, 4, 5), 6.0, shift=0.1)] + [
        _cell(f"random:m:{s}", MILD, (3, 4, 5), 6.0, shift=0.1, noise=0.3, seed=s) for s in range(5)
    ]
    vs = sweep.versus_random(results, _boot(results)).set_index("bits")
    row = vs.loc[str(list(AGG))]
    assert row["delta log ppl"] == pytest.approx(0.2 - np.mean([0.3 + 0.02 * s for s in range(5)]))
    assert row["ci high"] < 0 and bool(row["same size"]) and row["n random"] == 5
    assert row["p Holm"] == pytest.approx(min(1.0, 2 * min(vs["p (one-sided)"])))  # the smaller p, doubled
    noisy = vs.loc["[3, 4, 5]"]
    assert noisy["ci low"] < 0 < noisy["ci high"]  # five noisy shuffles: the interval includes 0


def _with_hits(cell, hits):
    return dataclasses.replace(cell, fact_hits=tuple(hits), fact_recall=float(np.mean(hits)))


def test_versus_random_gives_fact_recall_an_interval_over_the_facts():
    knows = [True] * 120 + [False] * 80  # the score's cell keeps 60% of 200 facts
    results = [_with_hits(_cell("m", *SETTING, 5.0), knows)]
    results += [
        _with_hits(_cell(f"random:m:{s}", *SETTING, 5.0), np.roll(knows, 40 * s) & (np.arange(200) % 4 > 0))
        for s in range(3)
    ]
    row = sweep.versus_random(results, _boot(results)).iloc[0]
    controls = np.mean([r.fact_recall for r in results[1:]])
    assert row["delta fact recall"] == pytest.approx(0.6 - controls)
    assert 0 < row["recall ci low"] < row["delta fact recall"] < row["recall ci high"]
    same = [_with_hits(_cell("m", *SETTING, 5.0), knows)] + [
        _with_hits(_cell(f"random:m:{s}", *SETTING, 5.0), np.roll(knows, 7 * s)) for s in range(3)
    ]
    tie = sweep.versus_random(same, _boot(same)).iloc[0]
    assert tie["delta fact recall"] == pytest.approx(0.0) and tie["recall ci low"] < 0 < tie["recall ci high"]


# ---------------------------------------------------------------------------------------------
# Claim 1: more pruning is worse
# ---------------------------------------------------------------------------------------------


def _pruning(shift_more, noise=0.0):
    out = []
    for i, alloc in enumerate(("m", "constant low")):
        out.append(_cell(alloc, MILD, AGG, 7.0, shift=0.3, noise=noise, seed=i))
        out.append(_cell(alloc, MODERATE, AGG, 7.0, shift=0.3 + shift_more, noise=noise, seed=10 + i))  # same size
    out.append(_cell("constant high", MILD, AGG, 8.0, 0.1))
    out.append(_cell("constant high", MODERATE, AGG, 8.0, 0.1))  # prunes 0.1 in both: one model, not a pair
    return out


@pytest.mark.parametrize(
    "shift, noise, expect", [(0.2, 0.0, "reproduced"), (-0.2, 0.0, "not reproduced"), (0.005, 0.3, "inconclusive")]
)
def test_claim_pruning(shift, noise, expect):
    results = _pruning(shift, noise)
    assert len(sweep.pruning_pairs(results, _boot(results))) == 2
    v = sweep.claim_pruning(results, _boot(results))
    assert v.verdict == expect
    if expect == "inconclusive":
        assert "would settle it" in v.evidence


def test_claim_pruning_is_partly_when_one_method_does_not_follow():
    results = _pruning(0.2)
    results[3] = _cell("constant low", MODERATE, AGG, 7.0, shift=0.3, noise=0.01, seed=5)  # no worse with more pruning
    assert sweep.claim_pruning(results, _boot(results)).verdict == "partly"


# ---------------------------------------------------------------------------------------------
# Claim 2: weight magnitude comparable to uniform (equivalence)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "offset, noise, expect",
    [(0.0, 0.0, "reproduced"), (-0.1, 0.0, "not reproduced"), (0.1, 0.0, "partly"), (0.0, 0.2, "inconclusive")],
)
def test_claim_comparable(offset, noise, expect):
    uniform = _uniform()
    wm = [  # frontier at 5 MB: 0.8, at 9 MB: 0.2
        _cell("weight magnitude", MILD, AGG, 5.0, 0.8 + offset, noise, 1),
        _cell("weight magnitude", MILD, (3, 4, 5), 9.0, 0.2 + offset, noise, 2),
    ]
    results = uniform + wm
    v = sweep.claim_comparable(results, uniform, _boot(results), margin=0.02)
    assert v.verdict == expect
    assert v.ours == pytest.approx(offset, abs=0.1 if noise else 1e-9)


def test_claim_comparable_without_matched_cells_is_inconclusive():
    uniform = _uniform()
    results = uniform + [_cell("weight magnitude", MILD, AGG, 12.0, 0.0)]  # larger than every uniform cell
    assert sweep.claim_comparable(results, uniform, _boot(results), 0.02).verdict == "inconclusive"


# ---------------------------------------------------------------------------------------------
# Claims 3, 4 and the open question
# ---------------------------------------------------------------------------------------------


def _scored(ct, gm, wm, random_shift=0.8, noise=0.0):
    """Each score at the aggressive setting at 5 MB (frontier 0.8), five random controls each."""
    out = _uniform()
    for i, (name, shift) in enumerate((("causal tracing", ct), ("gradient magnitude", gm), ("weight magnitude", wm))):
        out.append(_cell(name, *SETTING, 5.0, shift, noise, i))
        out += [_cell(f"random:{name}:{s}", *SETTING, 5.0, random_shift, noise, 100 * i + s) for s in range(5)]
    return out


@pytest.mark.parametrize(
    "ct, gm, noise, expect",
    [
        (0.6, 0.7, 0.0, "reproduced"),
        (0.9, 1.0, 0.0, "not reproduced"),
        (0.6, 1.0, 0.0, "partly"),
        (0.8, 0.8, 0.3, "inconclusive"),
    ],
)
def test_claim_perform_well(ct, gm, noise, expect):
    results = _scored(ct, gm, 0.8, noise=noise)
    v = sweep.claim_perform_well(results, [r for r in results if r.cell.is_uniform], _boot(results))
    assert v.verdict == expect
    assert v.evidence.count("vs uniform") == 2 and v.evidence.count("vs random") == 2


@pytest.mark.parametrize(
    "ct, noise, expect", [(0.6, 0.0, "reproduced"), (0.9, 0.0, "not reproduced"), (0.79, 0.3, "inconclusive")]
)
def test_claim_aggressive(ct, noise, expect):
    results = _scored(ct, 0.8, 0.8, noise=noise)
    v = sweep.claim_aggressive(results, [r for r in results if r.cell.is_uniform], _boot(results), SETTING)
    assert v.verdict == expect
    if expect == "reproduced":
        assert v.ours == pytest.approx(-0.2) and v.ci_high < 0


def test_claim_aggressive_is_inconclusive_when_one_competitor_ties():
    # causal tracing beats weight magnitude but ties gradient magnitude: one part open, none failed
    results = _scored(0.6, 0.8, 0.6)
    v = sweep.claim_aggressive(results, [r for r in results if r.cell.is_uniform], _boot(results), SETTING)
    assert v.verdict == "inconclusive"


def _two_settings(ct_mild, ct_moderate):
    """Each score at the mild and the moderate setting (5 MB, frontier 0.8); the other scores at 0.8."""
    out = _uniform()
    for prune, ct in ((MILD, ct_mild), (MODERATE, ct_moderate)):
        for i, (name, shift) in enumerate(
            (("causal tracing", ct), ("gradient magnitude", 0.8), ("weight magnitude", 0.8))
        ):
            out.append(_cell(name, prune, AGG, 5.0, shift, 0.0, i))
    return out


@pytest.mark.parametrize(
    "mild, moderate, expect",
    [(0.6, 0.6, "reproduced"), (0.6, 0.9, "partly"), (0.9, 0.9, "not reproduced"), (0.6, 0.8, "inconclusive")],
)
def test_claim_aggressive_is_judged_at_every_setting_the_seed_names(mild, moderate, expect):
    results = _two_settings(mild, moderate)
    uniform = [r for r in results if r.cell.is_uniform]
    v = sweep.claim_aggressive(results, uniform, _boot(results), [(MILD, AGG), (MODERATE, AGG)])
    assert v.verdict == expect
    assert v.evidence.count("minus") == 4  # two settings x two other scores, Holm over all four
    if expect == "reproduced":  # winning at one setting alone does not do
        assert sweep.claim_aggressive(results, uniform, _boot(results), (MILD, AGG)).verdict == expect


def test_claim_aggressive_is_inconclusive_when_a_named_setting_was_not_run():
    results = [r for r in _two_settings(0.6, 0.6) if r.cell.prune != MODERATE or r.cell.is_uniform]
    uniform = [r for r in results if r.cell.is_uniform]
    v = sweep.claim_aggressive(results, uniform, _boot(results), [(MILD, AGG), (MODERATE, AGG)])
    assert v.verdict == "inconclusive" and "not judged" in v.evidence and "0.5" in v.evidence


def test_the_aggressive_settings_are_every_pruning_setting_at_its_lowest_bits():
    cfg = _config(((0.0,) * 3, MODERATE, MILD), ((3, 4, 5), AGG))
    assert sweep.aggressive_settings([], cfg) == [(MILD, AGG), (MODERATE, AGG)]
    cpu = sweep.config_for("cpu")
    assert cpu.aggressive_prunes == [MILD, MODERATE] and cpu.aggressive == (MILD, AGG)


@pytest.mark.parametrize(
    "shifts, noise, expect",
    [
        ((0.8, 0.8, 0.7), 0.0, "reproduced"),
        ((0.8, 0.9, 0.8), 0.0, "not reproduced"),
        ((0.8, 0.8, 0.8), 0.3, "inconclusive"),
    ],
)
def test_open_question(shifts, noise, expect):
    results = _scored(*shifts, noise=noise)
    v = sweep.open_question(results, [r for r in results if r.cell.is_uniform], _boot(results), margin=0.02)
    assert v.verdict == expect


def test_seed_verdicts_give_one_row_per_claim():
    results = _scored(0.6, 0.7, 0.8) + _pruning(0.2)
    results += [_cell(n, MODERATE, AGG, 5.0, s) for n, s in (("causal tracing", 0.6), ("weight magnitude", 0.8))]
    cfg = _config((MILD, MODERATE), (AGG,), (SETTING,), n_boot=300)
    vs = sweep.verdicts(_result(results, cfg), limit=None)
    assert [v.claim for v in vs] == sweep.SEED_RESULTS["claims"] + [sweep.SEED_RESULTS["open_question"]]
    assert [v.verdict for v in vs][2:] == ["reproduced", "reproduced", "reproduced"]


def test_the_aggressive_setting_prunes_mildly_but_does_prune():
    cfg = _config(((0.0,) * 3, MODERATE, MILD), ((3, 4, 5), AGG))
    assert cfg.aggressive == (MILD, AGG)
    assert sweep.config_for("cpu").aggressive == (MILD, AGG)


def test_control_settings_must_be_in_the_seed_grid():
    with pytest.raises(ValueError, match="not in the seed grid"):
        _config((MILD,), (AGG,), ((MODERATE, AGG),))


# ---------------------------------------------------------------------------------------------
# Usable models only: comparisons between two broken models do not count
# ---------------------------------------------------------------------------------------------

LIMIT = math.exp(3.5 + 2.0)
"""A perplexity limit: cells with a shift below about 2 are usable, the broken ones sit near 5."""


def _broken_uniform():
    """Uniform cells broken at 4 and 6 MB (shift 6.0, 5.0), usable at 8 and 10 MB (0.3, 0.1)."""
    pts = [((0.0, 2), 4.0, 6.0), ((0.0, 3), 6.0, 5.0), ((0.0, 4), 8.0, 0.3), ((0.0, 5), 10.0, 0.1)]
    return [_cell(sweep.UNIFORM, (p,) * 3, (b,) * 3, mb, s) for (p, b), mb, s in pts]


def _wins_only_when_broken():
    """Causal tracing beats uniform by 0.5 where both are broken (5 MB: 5.0 against the frontier's
    5.5) and loses by 0.1 where both are usable (9 MB: 0.3 against 0.2); its random controls are
    broken too."""
    out = _broken_uniform()
    out.append(_cell("causal tracing", MILD, AGG, 5.0, 5.0))
    out.append(_cell("causal tracing", MILD, (3, 4, 5), 9.0, 0.3))
    out += [_cell(f"random:causal tracing:{s}", MILD, AGG, 5.0, 5.5) for s in range(3)]
    return out


def test_a_score_that_wins_only_among_broken_models_does_not_beat_uniform():
    results = _wins_only_when_broken()
    uniform, boot = [r for r in results if r.cell.is_uniform], _boot(results)
    every = sweep.open_question(results, uniform, boot, 0.02, names=("causal tracing",))
    assert every.verdict == "reproduced" and every.ours == pytest.approx(-0.2)  # the broken win outweighs the loss
    usable = sweep.open_question(results, uniform, boot, 0.02, names=("causal tracing",), limit=LIMIT)
    assert usable.verdict == "not reproduced" and usable.ours == pytest.approx(0.1)
    # the random controls are broken, and so is the score's cell beside them: nothing to compare
    assert sweep.score_versus_random("causal tracing", results, boot).estimate == pytest.approx(-0.5)
    assert math.isnan(sweep.score_versus_random("causal tracing", results, boot, LIMIT).estimate)
    v = sweep.claim_perform_well(results, uniform, boot, names=("causal tracing",), limit=LIMIT)
    assert v.verdict == "not reproduced"


def test_the_frontier_is_not_interpolated_across_the_cliff():
    """Between a broken uniform model (6 MB) and a usable one (8 MB) the interpolated baseline is an
    assumed model: with the limit only usable uniform cells make the frontier, and a cell outside
    their sizes is not compared."""
    uniform = _broken_uniform()
    cells = [
        _cell("causal tracing", MILD, AGG, 5.0, 0.5),  # usable where uniform is broken
        _cell("causal tracing", MILD, AGG, 7.0, 0.5),  # on the cliff: frontier 2.65 interpolated
        _cell("causal tracing", MILD, (3, 4, 5), 9.0, 0.1),  # between usable uniform cells (0.2)
    ]
    boot = _boot(uniform + cells)
    every = [d.estimate for d in sweep.versus_uniform(cells, uniform, boot)]
    assert every == pytest.approx([0.5 - 5.5, 0.5 - 2.65, 0.1 - 0.2])
    usable = [d.estimate for d in sweep.versus_uniform(cells, uniform, boot, LIMIT)]
    assert math.isnan(usable[0]) and math.isnan(usable[1]) and usable[2] == pytest.approx(-0.1)
    front = sweep.uniform_frontier(uniform, LIMIT)
    assert front["usable"].tolist() == [False, False, True, True] and front["on frontier"].tolist() == [0, 0, 1, 1]
    v = sweep.open_question(uniform + cells, uniform, boot, 0.02, names=("causal tracing",), limit=LIMIT)
    assert v.verdict == "reproduced" and v.ours == pytest.approx(-0.1)
    assert math.isnan(sweep.versus_uniform(cells, uniform[:2], boot, LIMIT)[2].estimate)  # no usable uniform cell
    labels = sweep.size_frame(uniform + cells, LIMIT)["allocation"].tolist()
    assert labels[:4] == ["uniform (broken)"] * 2 + ["uniform"] * 2


def test_pruning_pairs_between_broken_models_are_left_out():
    results = _pruning(0.2)  # every pair usable: unchanged by the limit
    assert sweep.claim_pruning(results, _boot(results), LIMIT).verdict == "reproduced"
    broken = [
        _cell(r.cell.allocation, r.cell.prune, r.cell.bits, r.model_mb, math.log(r.perplexity) - 3.5 + 5)
        for r in results
    ]
    assert sweep.claim_pruning(broken, _boot(broken)).verdict == "reproduced"
    v = sweep.claim_pruning(broken, _boot(broken), LIMIT)
    assert v.verdict == "inconclusive" and "usable" in v.evidence


def test_claim_aggressive_is_judged_at_the_lowest_usable_bits():
    cfg = _config(((0.0,) * 3, MILD), ((3, 4, 5), AGG))
    results = _broken_uniform() + [
        _cell("causal tracing", MILD, AGG, 5.0, 5.0),
        _cell("weight magnitude", MILD, AGG, 5.0, 5.2),  # broken at 2/3/4 bits: causal tracing "wins"
        _cell("causal tracing", MILD, (3, 4, 5), 9.0, 0.3),
        _cell("weight magnitude", MILD, (3, 4, 5), 9.0, 0.2),  # usable at 3/4/5 bits: causal tracing loses
    ]
    assert sweep.aggressive_setting(results, cfg) == (MILD, AGG)
    assert sweep.aggressive_setting(results, cfg, LIMIT) == (MILD, (3, 4, 5))
    assert sweep.aggressive_setting(results[:6], cfg, LIMIT) == (MILD, AGG)  # nothing usable: the grid's own
    verdicts = sweep.verdicts(_result(results, cfg), limit=None)
    usable = sweep.verdicts(_result(results, cfg), LIMIT)
    assert verdicts[3].verdict == "reproduced"
    assert usable[3].verdict == "not reproduced" and "bits [3, 4, 5]" in usable[3].criterion
    assert all("usable side" in v.criterion for v in usable)
    uniform = [r for r in results if r.cell.is_uniform]
    v = sweep.claim_aggressive(results, uniform, _boot(results), (MILD, AGG), limit=LIMIT)
    assert v.verdict == "inconclusive" and "broken" in v.evidence


def test_verdicts_by_limit_shows_each_claim_under_each_bar():
    cfg = _config((MILD,), (AGG, (3, 4, 5)))
    frame = sweep.verdicts_by_limit(_result(_wins_only_when_broken(), cfg), {"usable": LIMIT, "every cell": None})
    assert list(frame.columns) == ["usable", "every cell"] and len(frame) == 5
    assert frame.iloc[4]["every cell"].startswith("reproduced (-0.2")
    assert frame.iloc[4]["usable"].startswith("not reproduced (0.1")


def test_verdicts_count_only_usable_comparisons_below_the_runs_unigram_line_by_default():
    cfg = _config((MILD,), (AGG, (3, 4, 5)))
    result = _result(_wins_only_when_broken(), cfg, bar=LIMIT)
    assert result.limit == pytest.approx(LIMIT)
    default, usable, every = (sweep.verdicts(result, limit) for limit in (sweep.UNIGRAM, LIMIT, None))
    assert [(v.verdict, v.criterion) for v in default] == [(v.verdict, v.criterion) for v in usable]
    assert default[4].verdict == "not reproduced" and every[4].verdict == "reproduced"
    assert all("usable side" in v.criterion for v in default) and not any("usable side" in v.criterion for v in every)


def test_a_sweep_result_judges_the_seed_grid_and_controls_on_one_bootstrap():
    seed_grid, controls = _scored(0.6, 0.7, 0.8), _uniform()[:2]
    result = _result(seed_grid, _config((MILD,), (AGG,), n_boot=300), controls=controls)
    assert result.results == seed_grid + controls
    assert result.uniform == [r for r in seed_grid + controls if r.cell.is_uniform] and controls[0] in result.uniform
    assert result.boot is result.boot and result.boot.n_boot == 300 and result.boot.n_windows == W
