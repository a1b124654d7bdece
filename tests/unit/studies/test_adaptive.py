"""The AdaptiveCompress study on constructed measurements whose answers are known: verdicts, seed rows, sizes, figure."""

from __future__ import annotations

import dataclasses
import itertools

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from analysis.studies import adaptive

SPEC, CORR = adaptive.SEED_VARIANT, adaptive.CORRECTED


def _probes(
    gaps: dict[str, float], n_problems: int = 12, noise: float = 0.01, seed: int = 0, swing: float = 0.0
) -> pd.DataFrame:
    """Probe rows where feature set ``f`` scores ``0.7 + gaps[f]`` (plus noise, plus ``±swing`` alternating
    over problems for the first feature set) on every problem and k."""
    rng = np.random.default_rng(seed)
    rows = []
    for p, s, k in itertools.product(range(n_problems), (0, 1, 2), (1, 5, 50)):
        task = ("language_id", "code_language", "domain")[p % 3]
        for i, (f, gap) in enumerate(gaps.items()):
            alt = swing * (-1) ** p if i == 0 else 0.0
            rows.append(
                {
                    "task": task,
                    "class": p,
                    "seed": s,
                    "features": f,
                    "k": k,
                    "accuracy": 0.7 + gap + alt + noise * rng.normal(),
                }
            )
    return pd.DataFrame(rows)


def _metrics(l0_spec, ev_spec, ev_corr=0.5, ev_topk=0.5) -> pd.DataFrame:
    rows = []
    for i, (layer, seed) in enumerate(itertools.product((6, 14, 22), (0, 1, 2))):
        rows.append(
            {
                "layer": layer,
                "seed": seed,
                "sae": SPEC,
                "L0": l0_spec[i % len(l0_spec)],
                "explained variance": ev_spec + 0.01 * (i % 3),
            }
        )
        rows.append({"layer": layer, "seed": seed, "sae": CORR, "L0": 30.0, "explained variance": ev_corr + 0.001 * i})
        rows.append({"layer": layer, "seed": seed, "sae": "topk", "L0": 29.0, "explained variance": ev_topk})
    return pd.DataFrame(rows)


def test_probing_claim_reproduced_refuted_and_inconclusive():
    win = adaptive.probing_verdict(_probes({SPEC: 0.05, "standard": 0.0}), 1, (68.43, 70.0))
    lose = adaptive.probing_verdict(_probes({SPEC: -0.05, "standard": 0.0}), 1, (68.43, 70.0))
    tie = adaptive.probing_verdict(_probes({SPEC: 0.0, "standard": 0.0}, noise=0.0, swing=0.1), 1, (68.43, 70.0))
    assert (win.verdict, lose.verdict, tie.verdict) == ("reproduced", "not reproduced", "inconclusive")
    assert win.ours == pytest.approx(0.05, rel=0.2)


def test_blocking_claim():
    assert adaptive.blocking_verdict(_metrics([0.0], -0.5)).verdict == "reproduced"
    assert adaptive.blocking_verdict(_metrics([3.0], -0.5)).verdict == "not reproduced"
    assert adaptive.blocking_verdict(_metrics([0.0, 2.0], -0.5)).verdict == "partly"


def test_variance_claim():
    assert adaptive.variance_verdict(_metrics([0.0], -0.6)).verdict == "reproduced"
    assert adaptive.variance_verdict(_metrics([0.0], 0.4)).verdict == "not reproduced"
    spread = _metrics([0.0], 0.0)
    spread.loc[spread["sae"] == SPEC, "explained variance"] = np.tile([-0.3, 0.3, 0.01], 3)
    assert adaptive.variance_verdict(spread).verdict == "inconclusive"


def test_specialised_tasks_claim_uses_only_language_and_code():
    high = _probes({SPEC: 0.29}, noise=0.001)
    assert adaptive.specialised_verdict(high, ("language_id", "code_language"), 50).verdict == "reproduced"
    low = _probes({SPEC: 0.0}, noise=0.001)
    assert adaptive.specialised_verdict(low, ("language_id", "code_language"), 50).verdict == "not reproduced"


def test_retention_against_topk():
    better = adaptive.retention_vs_topk(_metrics([0.0], -0.5, 0.6, 0.5), _probes({CORR: 0.05, "topk": 0.0}))
    assert [v.verdict for v in better] == ["reproduced", "reproduced"]
    worse = adaptive.retention_vs_topk(_metrics([0.0], -0.5, 0.4, 0.5), _probes({CORR: -0.05, "topk": 0.0}))
    assert [v.verdict for v in worse] == ["not reproduced", "not reproduced"]
    assert adaptive.l0_gap(_metrics([0.0], -0.5)) == pytest.approx(1 / 30)


def _results(metrics: pd.DataFrame, probes: pd.DataFrame) -> adaptive.AdaptiveResults:
    layers = sorted(metrics["layer"].unique().tolist())
    return adaptive.AdaptiveResults(layers, layers[1], metrics, pd.DataFrame(), probes, {}, {})


def test_verdicts_are_the_seed_five_then_our_question_and_summaries_have_intervals():
    probes = _probes({SPEC: 0.0, "standard": 0.0, "residual": 0.2, CORR: 0.05, "topk": 0.0})
    claims = adaptive.verdicts(_results(_metrics([0.0], -0.5, 0.6, 0.5), probes))
    assert len(claims) == 7
    assert [v.claim.startswith(adaptive.QUESTION) for v in claims] == [False] * 5 + [True] * 2
    assert claims[1].seed == "77.46 -> 82.00; 90.03 -> 93.00"  # from SEED_RESULTS
    assert (claims[3].verdict, claims[4].verdict) == ("reproduced", "reproduced")  # L0 = 0, EV < 0
    assert [v.verdict for v in claims[5:]] == ["reproduced", "reproduced"]
    summary = adaptive.metric_summary(_metrics([0.0], -0.5), ("L0", "explained variance"))
    assert summary.loc[SPEC, "L0"] == 0 and summary.loc[SPEC, "L0 95%"] == "[0, 0]"
    assert set(adaptive.probe_means(probes).columns) == {1, 5, 50}


def test_seed_rows_come_from_the_seed_table():
    row = adaptive.core_row()
    assert row.to_dict() == {"L0": 0.0, "MSE": 47.25, "explained variance": -0.785, "kl_div_with_sae": 15.375}
    topk = adaptive.probing_rows()
    assert list(topk.columns) == [1, 5, 50] and list(topk.index) == ["seed baseline", "seed AdaptiveCompress"]
    assert topk.loc["seed AdaptiveCompress", 5] == pytest.approx(0.82)
    assert topk.loc["seed baseline", 50] == pytest.approx(adaptive.SEED_RESULTS["top-50 (baseline -> ours)"][0] / 100)


def test_size_fields_are_marked_and_choices_are_not():
    fields = {f.name: f.metadata.get("size", False) for f in dataclasses.fields(adaptive.AdaptiveConfig)}
    assert fields["train_tokens"] and fields["steps"] and fields["seeds"] and fields["ks"]
    assert not any(fields[name] for name in ("lr", "tasks", "variants", "seed_layers", "extra"))
    smoke, gpu = adaptive.config_for("smoke"), adaptive.config_for("gpu")
    sized = {name for name, size in fields.items() if size and getattr(smoke, name) != getattr(gpu, name)}
    assert sized >= {"train_tokens", "steps", "n_probe", "seeds"}


def test_training_curves_draw_one_panel_per_layer():
    curves = pd.DataFrame(
        [
            {"layer": layer, "sae": sae, "seed": seed, "step": step, "mse_loss": 1.0 / (step + 1) + seed}
            for layer, sae, seed, step in itertools.product((6, 14), (SPEC, "topk"), (0, 1), range(3))
        ]
    )
    fig = adaptive.training_curves(curves)
    assert [ax.get_title() for ax in fig.axes] == ["layer 6", "layer 14"]
    assert fig.axes[0].get_yscale() == "symlog"
    plt.close(fig)


def test_plan_trains_the_corrected_variant_before_the_matched_baselines():
    cfg = adaptive.config_for("smoke")
    order = adaptive.training_runs([6, 14, 22], cfg)
    for layer in (6, 14, 22):
        names = [s for l, s in order if l == layer]
        assert names.index(CORR) < names.index("topk") < len(names)
        assert set(adaptive.MAIN) <= set(names)
    assert {s for l, s in order if l != 14} == set(adaptive.MAIN)  # ablations at the middle layer only
    assert len(order) == 3 * len(adaptive.MAIN) + len(adaptive.VARIANTS) - 2


def test_every_profile_has_sizes_and_unknown_profiles_are_refused():
    for name in ("smoke", "cpu", "gpu"):
        assert adaptive.config_for(name).steps > 0
    with pytest.raises(ValueError, match="No adaptive sizes"):
        adaptive.config_for("tpu")
