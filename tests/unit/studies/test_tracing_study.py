"""analysis.studies.tracing: sizes per profile, and the ROME comparison and its verdict on
constructed average indirect effects whose answer is known."""

from __future__ import annotations

import pytest
import torch

from analysis import tracing
from analysis.config import get_profile
from analysis.studies import tracing as study

L, T, SPAN = 11, 6, (1, 3)  # depth = layer / 10; roles: subject 1-2, first subsequent 3, further 4, last 5
P_CORRUPT = 0.1


def fact(peaks: dict[str, list[tuple[int, int, float]]], prompt: str) -> tracing.TraceResult:
    """A trace whose indirect effect is 0 except ``effect`` at each ``(layer, pos, effect)`` of a hook."""
    restored = {}
    for hook in ("hook_resid_pre", "hook_mlp_out", "hook_attn_out"):
        grid = torch.full((L, T), P_CORRUPT)
        for layer, pos, effect in peaks.get(hook, []):
            grid[layer, pos] += effect
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


def aie(peaks) -> tracing.AIEResult:
    traces = [fact(peaks, "a"), fact(peaks, "b")]  # two facts, so intervals exist
    return tracing.AIEResult(("hook_resid_pre", "hook_mlp_out", "hook_attn_out"), traces, [], {"window": 1})


ROME_LIKE = {
    "hook_mlp_out": [(3, 2, 0.4)],  # last subject token, depth 0.3
    "hook_attn_out": [(8, 5, 0.3)],  # last token, depth 0.8
    "hook_resid_pre": [(2, 2, 0.5), (9, 5, 0.6)],  # last subject early, last token late
}
NOT_ROME = {
    "hook_mlp_out": [(9, 5, 0.4)],  # last token, late
    "hook_attn_out": [(1, 1, 0.3)],  # first subject token, early
    "hook_resid_pre": [(8, 2, 0.5), (2, 5, 0.6)],  # last subject peaks after the last token
}


def test_rome_pattern_is_reproduced_when_every_finding_matches():
    comparison = study.rome_comparison(aie(ROME_LIKE))
    assert comparison["same pattern"].tolist() == [True, True, True, True]
    assert "layer 3/10" in comparison.iloc[0, 2]
    verdict = study.rome_verdict(comparison)
    assert verdict["verdict"] == "reproduced" and (verdict["n_match"], verdict["n_findings"]) == (4, 4)


def test_rome_pattern_is_not_reproduced_when_no_finding_matches():
    comparison = study.rome_comparison(aie(NOT_ROME))
    assert not comparison["same pattern"].any()
    assert study.rome_verdict(comparison)["verdict"] == "not reproduced"


def test_a_peak_at_layer_0s_mlp_alone_reproduces_rome_only_partly():
    # the strongest MLP restoration is layer 0 at the last subject token; beyond layer 0 the
    # MLP peaks at the last token, which is not ROME's claim
    peaks = dict(ROME_LIKE, hook_mlp_out=[(0, 2, 0.8), (6, 5, 0.2)])
    comparison = study.rome_comparison(aie(peaks))
    assert comparison["same pattern"].tolist() == [True, False, True, True]
    verdict = study.rome_verdict(comparison)
    assert verdict["verdict"] == "partly reproduced" and verdict["n_match"] == 3


def test_depth_thresholds_are_inclusive_where_stated():
    at_limit = dict(ROME_LIKE, hook_mlp_out=[(6, 2, 0.4)], hook_attn_out=[(5, 5, 0.3)])  # depths 0.6, 0.5
    assert study.rome_comparison(aie(at_limit))["same pattern"].all()
    beyond = dict(ROME_LIKE, hook_mlp_out=[(7, 2, 0.4)], hook_attn_out=[(4, 5, 0.3)])  # 0.7, 0.4
    assert study.rome_comparison(aie(beyond))["same pattern"].tolist() == [False, False, False, True]


def test_verdict_needs_findings():
    with pytest.raises(ValueError, match="no findings"):
        study.rome_verdict(study.rome_comparison(aie(ROME_LIKE)).iloc[:0])


def test_aie_agreement_names_peaks_and_is_perfect_with_itself():
    a = aie(ROME_LIKE)
    table = study.aie_agreement(a, aie(NOT_ROME), ("rome", "not"))
    assert table.loc["hook_mlp_out", "peak (rome)"] == "last subject, layer 3"
    assert table.loc["hook_mlp_out", "peak (not)"] == "last, layer 9"
    same = study.aie_agreement(a, a)
    assert same["pearson r of AIE maps"].tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_trace_config_for_profiles():
    cpu = study.trace_config_for(get_profile("cpu"))
    assert cpu.n_exact >= 50 and cpu.n_attribution >= 200
    gpu = study.trace_config_for("gpu")
    assert gpu.n_exact >= 1000 and gpu.n_samples == 10 and gpu.window == 10
    assert study.trace_config_for("smoke").n_exact < cpu.n_exact
    with pytest.raises(ValueError, match="profile"):
        study.trace_config_for("laptop")
    custom = get_profile("smoke").replace(extra={"tracing": {"n_exact": 7}})
    assert study.trace_config_for(custom).n_exact == 7
