"""analysis.studies.tracing: sizes per profile, the ROME comparison, and the verdict functions on
constructed average indirect effects whose answer is known (reproduced, must fail, inconclusive)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from analysis import tracing
from analysis.config import get_profile
from analysis.studies import tracing as study
from analysis.studies.verdicts import false_reproduced_rate

L, T, SPAN = 11, 6, (1, 3)  # depth = layer / 10; roles: subject 1-2, first subsequent 3, further 4, last 5
P_CORRUPT = 0.1
HOOKS = ("hook_resid_post", "hook_mlp_out", "hook_attn_out")


def fact(peaks: dict[str, list[tuple[int, int, float]]], prompt: str, scale: float = 1.0) -> tracing.TraceResult:
    """A trace whose indirect effect is 0 except ``effect * scale`` at each ``(layer, pos, effect)``."""
    restored = {}
    for hook in HOOKS:
        grid = torch.full((L, T), P_CORRUPT)
        for layer, pos, effect in peaks.get(hook, []):
            grid[layer, pos] += effect * scale
        restored[hook] = grid
    return tracing.TraceResult(
        prompt=prompt,
        subject="s",
        target=" t",
        target_id=0,
        tokens=tuple(f"t{i}" for i in range(T)),
        subject_span=SPAN,
        clean_prob=0.9,
        corrupted_prob=P_CORRUPT,
        clean_top=" t",
        clean_top_id=0,
        restored=restored,
        window=1,
        corruption="noise",
        n_samples=2,
        noise=0.3,
    )


def aie(*groups: tuple[dict, int]) -> tracing.AIEResult:
    """Facts made from ``(peaks, count)`` groups, each fact's effects scaled by 0.8..1.2 (seeded)."""
    gen = torch.Generator().manual_seed(0)
    traces = [
        fact(peaks, f"fact {g}.{i}", float(0.8 + 0.4 * torch.rand(1, generator=gen)))
        for g, (peaks, count) in enumerate(groups)
        for i in range(count)
    ]
    return tracing.AIEResult(HOOKS, traces, [], {"window": 1})


ROME_LIKE = {
    "hook_mlp_out": [(3, 2, 0.4)],  # last subject token, depth 0.3
    "hook_attn_out": [(8, 5, 0.3), (8, 2, 0.05)],  # last token, depth 0.8; little at the last subject
    "hook_resid_post": [(2, 2, 0.5), (9, 5, 0.6)],  # last subject early, last token late
}
NOT_ROME = {
    "hook_mlp_out": [(9, 5, 0.4), (9, 2, 0.2)],  # strongest at the last token; last subject late
    "hook_attn_out": [(1, 1, 0.3), (1, 2, 0.6), (1, 5, 0.1)],  # early, and above the MLP at the last subject
    "hook_resid_post": [(8, 2, 0.5), (2, 5, 0.6)],  # last subject late, last token early
}
# half the facts put the MLP peak at the last subject token in layer 3, half at layer 7, where
# the last token is as strong: neither the peak's depth nor its role is settled by 20 facts
SPLIT_A = {"hook_mlp_out": [(3, 2, 0.4)]}
SPLIT_B = {"hook_mlp_out": [(7, 2, 0.4), (7, 5, 0.4)]}


def test_rome_comparison_and_verdicts_reproduced_when_every_finding_matches():
    result = aie((ROME_LIKE, 20))
    comparison = study.rome_comparison(result)
    assert comparison["same pattern"].tolist() == [True, True, True, True]
    assert "layer 3/10" in comparison.iloc[0, 2]
    found = study.verdicts(result, n_boot=200)
    assert [v.verdict for v in found] == ["reproduced"] * 4
    mlp = found[0]
    assert mlp.ours == pytest.approx(0.3) and mlp.ci_low == pytest.approx(0.3) and mlp.ci_high == pytest.approx(0.3)
    assert found[1].ours == pytest.approx(0.4 - 0.05, rel=0.25)  # MLP minus attention at the last subject


def test_rome_verdicts_fail_when_no_finding_matches():
    result = aie((NOT_ROME, 20))
    assert not study.rome_comparison(result)["same pattern"].any()
    found = study.verdicts(result, n_boot=200)
    assert [v.verdict for v in found] == ["not reproduced"] * 4
    assert found[0].ours == pytest.approx(0.9)  # the last subject token's MLP curve peaks late


def test_location_verdict_is_inconclusive_when_the_facts_disagree():
    result = aie((SPLIT_A, 10), (SPLIT_B, 10))
    v = study.location_verdict("MLP", result, "mlp", "last subject", "early-to-middle", "ROME", n_boot=400)
    assert v.verdict == "inconclusive"
    assert v.ci_low == pytest.approx(0.3) and v.ci_high == pytest.approx(0.7)  # the interval spans the edge 0.5
    assert "would settle it" in v.evidence  # how many facts would settle it


def test_mlp_over_attention_is_inconclusive_when_they_tie_on_average():
    equal = {"hook_mlp_out": [(3, 2, 0.4)], "hook_attn_out": [(4, 2, 0.4)]}
    result = aie((equal, 10), ({"hook_mlp_out": [(3, 2, 0.1)], "hook_attn_out": [(4, 2, 0.7)]}, 1), (equal, 9))
    assert study.mlp_over_attention(result, n_boot=400).verdict == "inconclusive"


def test_bands_do_not_overlap():
    assert study.band_of(study.BAND_EDGE - 1e-9) == "early-to-middle"
    assert study.band_of(study.BAND_EDGE) == "late"
    edge = dict(ROME_LIKE, hook_mlp_out=[(5, 2, 0.4)], hook_attn_out=[(5, 5, 0.3)])  # both at depth 0.5
    assert study.rome_comparison(aie((edge, 2)))["same pattern"].tolist()[:3] == [False, False, True]


def test_a_peak_at_layer_0s_mlp_alone_matches_rome_only_over_all_windows():
    # the strongest MLP restoration is layer 0 at the last subject token; beyond layer 0 the
    # MLP peaks at the last token, which is not ROME's claim
    peaks = dict(ROME_LIKE, hook_mlp_out=[(0, 2, 0.8), (6, 5, 0.2)])
    assert study.rome_comparison(aie((peaks, 2)))["same pattern"].tolist() == [True, False, True, True]


def test_verdicts_need_the_three_kinds():
    result = aie((ROME_LIKE, 4))
    partial = tracing.AIEResult(("hook_mlp_out", "hook_attn_out"), result.traces, [], {})
    with pytest.raises(ValueError, match="residual"):
        study.verdicts(partial)


def test_aie_agreement_names_peaks_and_is_perfect_with_itself():
    a = aie((ROME_LIKE, 2))
    table = study.aie_agreement(a, aie((NOT_ROME, 2)), ("rome", "not"))
    assert table.loc["hook_mlp_out", "peak (rome)"] == "last subject, layer 3"
    assert table.loc["hook_mlp_out", "peak (not)"] == "last, layer 9"
    same = study.aie_agreement(a, a)
    assert same["pearson r of AIE maps"].tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_config_for_profiles():
    for name in ("smoke", "cpu", "gpu"):
        cfg = study.config_for(name)
        assert cfg.n_heatmaps <= cfg.convergence_facts  # the heatmaps are drawn from the convergence facts
        assert cfg.convergence_samples > cfg.max_samples  # the convergence check goes past the main run
    cpu = study.config_for(get_profile("cpu"))
    assert cpu.heatmap_samples == cpu.convergence_samples  # on cpu the heatmaps reuse the convergence runs
    assert study.config_for("smoke").n_exact < cpu.n_exact < study.config_for("gpu").n_exact
    with pytest.raises(ValueError, match="profile"):
        study.config_for("laptop")
    custom = get_profile("smoke").replace(extra={"tracing": {"n_exact": 7}})
    assert study.config_for(custom).n_exact == 7
    with pytest.raises(ValueError, match="noise_source"):
        study.config_for(get_profile("smoke").replace(extra={"tracing": {"noise_source": "eval"}}))


# ---------------------------------------------------------------------------------------------
# Layer 0's windows, relations as clusters, nulls at the chapter's n, and which facts judge
# ---------------------------------------------------------------------------------------------


def windowed(result: tracing.AIEResult, window: int) -> tracing.AIEResult:
    return tracing.AIEResult(result.kinds, result.traces, [], {"window": window})


def test_the_mlp_verdict_leaves_out_the_windows_that_reach_layer_0():
    # the strongest MLP restoration is layer 0 at the last subject token (a "reproduced" over all
    # layers); beyond layer 0's windows (window 3: layers 2+) the MLP peaks at the last token, late
    peaks = dict(ROME_LIKE, hook_mlp_out=[(0, 2, 0.8), (8, 2, 0.2), (8, 5, 0.3)])
    result = windowed(aie((peaks, 20)), 3)
    assert study.beyond_layer0(result) == list(range(2, L))
    every = study.location_verdict("MLP", result, "mlp", "last subject", "early-to-middle", "ROME", n_boot=200)
    assert every.verdict == "reproduced" and every.ours == pytest.approx(0.0)  # layer 0 would carry it
    found = study.verdicts(result, n_boot=200)
    assert found[0].verdict == "not reproduced" and found[0].ours == pytest.approx(0.8)
    assert "layers 2-10" in found[0].criterion and "windows without layer 0" in found[0].claim
    assert "layers 2-10" in found[1].evidence  # MLP against attention, on the same layers
    whole = windowed(aie((peaks, 20)), 2 * L)  # every window reaches layer 0: nothing to judge
    assert study.beyond_layer0(whole) == []
    assert [v.verdict for v in study.verdicts(whole, n_boot=50)[:2]] == ["inconclusive", "inconclusive"]


def relations_of(result: tracing.AIEResult, k: int) -> dict[str, str]:
    """Each traced fact's relation: ``k`` relations, dealt round-robin."""
    return {t.prompt: f"relation {i % k}" for i, t in enumerate(result.traces)}


def test_the_verdicts_resample_relations_and_need_eight_of_them():
    result = aie((ROME_LIKE, 24))
    many = study.verdicts(result, n_boot=200, relations=relations_of(result, 8))
    assert [v.verdict for v in many] == ["reproduced"] * 4
    assert "24 facts in 8 relations" in many[0].evidence
    few = study.verdicts(result, n_boot=200, relations=relations_of(result, 7))
    assert [v.verdict for v in few] == ["inconclusive"] * 4  # as clear as before, but 7 relations
    assert all("only 7 relations" in v.evidence for v in few)
    with pytest.raises(ValueError, match="no relation"):
        study.verdicts(result, relations={})


def test_a_relation_that_carries_the_peak_alone_widens_the_interval():
    # 3 of 8 relations put the MLP peak late: by fact the depth's interval clears the edge, by
    # relation (each relation's facts rise and fall together) it does not
    result = aie((ROME_LIKE, 30), (dict(ROME_LIKE, hook_mlp_out=[(8, 2, 0.6)]), 6))
    rel = {t.prompt: f"r{i % 5}" if i < 30 else f"late {i % 3}" for i, t in enumerate(result.traces)}
    by_fact = tracing.peak_depths(result, "mlp", "last subject", 400)
    by_relation = tracing.peak_depths(
        result, "mlp", "last subject", 400, clusters=[rel[t.prompt] for t in result.traces]
    )
    assert by_relation.n == 8 and by_fact.n == 36
    assert by_relation.hi - by_relation.lo >= by_fact.hi - by_fact.lo


def _noisy(rng, curves: dict[int, np.ndarray], prompt: str, sd: float = 0.1) -> tracing.TraceResult:
    """A fact whose MLP effect at each position ``pos`` is ``curves[pos]`` over layers plus noise."""
    grid = torch.full((L, T), P_CORRUPT)
    for pos, curve in curves.items():
        grid[:, pos] += torch.as_tensor(curve + sd * rng.standard_normal(L), dtype=torch.float32)
    restored = {h: grid.clone() for h in HOOKS}
    return dataclasses.replace(fact({}, prompt), restored=restored)


def _null_study(rng, curves, n_facts=26, n_relations=8):
    """The cpu chapter's n: 26 judged facts (30 traced, 4 chose the samples) in 8 relations,
    each relation shifting its facts' curves together."""
    shift = {g: 0.05 * rng.standard_normal((len(curves), L)) for g in range(n_relations)}
    traces = [
        _noisy(rng, {p: c + shift[i % n_relations][j] for j, (p, c) in enumerate(curves.items())}, f"f{i}")
        for i in range(n_facts)
    ]
    result = tracing.AIEResult(HOOKS, traces, [], {"window": 1})
    return result, {t.prompt: f"r{i % n_relations}" for i, t in enumerate(traces)}


def test_the_location_rules_stay_below_5_percent_false_reproduced_at_the_chapters_n():
    bump = 0.3 * np.exp(-0.5 * ((np.arange(L) - 3) / 1.5) ** 2)
    plateau = 0.3 * np.exp(-0.5 * ((np.arange(L) - 4.5) / 1.5) ** 2)
    plateau[4] = plateau[5] = plateau.max()  # depth 0.4 and 0.5: "peak below 0.5" at its boundary

    def margin(rng):  # the last subject and the last token's curves are the same: no margin
        result, rel = _null_study(rng, {2: bump, 5: bump})
        return study.location_verdict("m", result, "mlp", "last subject", "early-to-middle", "", 200, relations=rel)

    def depth(rng):
        result, rel = _null_study(rng, {2: plateau})
        return study.location_verdict(
            "d", result, "mlp", "last subject", "early-to-middle", "", 200, compete=False, relations=rel
        )

    def over(rng):  # the MLP and attention peaks are equal
        result, rel = _null_study(rng, {2: bump})
        return study.mlp_over_attention(result, n_boot=200, relations=rel)

    for judge in (margin, depth, over):
        assert false_reproduced_rate(judge, 200) <= 0.05, judge.__name__


def test_choosing_and_judging_data_are_disjoint():
    """Under the cpu and smoke configs the facts that chose the number of noise samples (the
    convergence facts) never judge ROME's findings, and none of the traced facts is an eval fact,
    which judge compressed models in the sweep (the split itself is asserted in the data tests)."""
    from datasets import Dataset

    for name in ("smoke", "cpu"):
        cfg = study.config_for(name)
        n = cfg.n_screen
        facts = Dataset.from_dict(
            {"id": [f"id{i}" for i in range(n)], "prompt": [f"p{i}" for i in range(n)], "relation": ["r"] * n}
        )
        s = study.Setup(model=None, recipe=cfg.recipe, noise=0.1, noise_options={}, facts=facts, cfg=cfg, screen={})
        chose, judged = set(s.choosing["id"]), set(s.judged["id"])
        assert chose and judged and chose.isdisjoint(judged), name
        assert judged | chose == set(s.exact["id"]), name  # every other exact trace judges
        assert len(judged) == cfg.n_exact - cfg.convergence_facts
