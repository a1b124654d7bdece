"""Seed 003's verdict functions on constructed inputs whose answer is known, the typed results, and
the study's configs."""

from __future__ import annotations

import dataclasses

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from analysis import stats
from analysis.studies import variance
from analysis.studies.variance import plots as figures
from analysis.studies.variance.results import Directions, Exits, LensExit, Quantization
from analysis.studies.variance.verdicts import (
    last_block,
    multi_block,
    paired_gap,
    r2_depth,
    r2_level,
    relative_ppl,
)


def noisy(center, n=40, spread=0.01, seed=0):
    return center + spread * np.random.default_rng(seed).standard_normal(n)


def test_r2_level():
    assert r2_level(noisy(0.97)).verdict == "reproduced"
    assert r2_level(noisy(0.6)).verdict == "not reproduced"
    assert r2_level(noisy(0.9, n=5, spread=0.1)).verdict == "inconclusive"


def test_r2_depth():
    depth = np.arange(30)
    assert r2_depth(depth, depth / 30 + noisy(0, 30)).verdict == "reproduced"
    assert r2_depth(depth, 1 - depth / 30).verdict == "not reproduced"
    flat = np.random.default_rng(1).standard_normal(30)
    assert r2_depth(depth, flat).verdict == "inconclusive"


def rel(est, lo, hi):
    return stats.Difference(est, lo, hi, float("nan"), 10, "windows")


def test_last_and_multi_block():
    assert last_block(rel(0.03, 0.01, 0.05), 34).verdict == "reproduced"
    assert last_block(rel(0.5, 0.4, 0.6), 34).verdict == "not reproduced"
    assert last_block(rel(0.1, 0.05, 0.15), 34).verdict == "inconclusive"
    assert multi_block(rel(1.0, 0.8, 1.2), 8).verdict == "reproduced"
    assert multi_block(rel(0.05, 0.01, 0.1), 8).verdict == "not reproduced"
    assert multi_block(rel(0.25, 0.1, 0.4), 8).verdict == "inconclusive"


def test_relative_ppl():
    base = np.full(20, 100.0)
    tokens = np.full(20, 50.0)
    d = relative_ppl(base, base + 50 * np.log(1.2), tokens)
    assert d.estimate == pytest.approx(0.2, rel=1e-9) and d.n == 20 and d.unit == "windows"
    assert d.low == pytest.approx(0.2, rel=1e-9) and d.high == pytest.approx(0.2, rel=1e-9)
    d = relative_ppl(base, base + noisy(5, 20, spread=5), tokens)
    assert d.low < d.estimate < d.high


def test_configs():
    for name in ("smoke", "cpu", "gpu"):
        cfg = variance.config_for(name)
        assert all(0 <= f <= 1 for f in cfg.ablation_layers)
    assert variance.config_for("cpu").fit_tokens >= 35 * 577  # 35 tokens per unknown of SmolLM2's map
    with pytest.raises(ValueError, match="No variance sizes"):
        variance.config_for("nope")


def test_sizes_grow_with_the_profile():
    """Every field marked a size is no larger under ``smoke`` than ``cpu``, nor under ``cpu`` than ``gpu``
    (a tuple of sizes by its length and its largest entry); the layer choices are not sizes."""
    sizes = [f.name for f in dataclasses.fields(variance.VarianceConfig) if f.metadata.get("size")]
    assert {"fit_tokens", "context", "ks", "multi_blocks"} <= set(sizes)
    assert not {"ablation_layers", "quant_layers", "amp_layers", "models", "seed"} & set(sizes)

    def measure(value):
        return (len(value), max(value)) if isinstance(value, tuple) else (value, value)

    smoke, cpu, gpu = (variance.CONFIGS[p] for p in ("smoke", "cpu", "gpu"))
    for name in sizes:
        small, mid, large = (measure(getattr(c, name)) for c in (smoke, cpu, gpu))
        assert all(a <= b <= c for a, b, c in zip(small, mid, large)), name


def test_paired_gap():
    a = pd.Series({"window nll": (30.0, 12.0), "window tokens": (10, 4)})
    b = pd.Series({"window nll": (20.0, 16.0), "window tokens": (10, 4)})
    assert paired_gap(a, b) == pytest.approx([1.0, -1.0])


def lens(share, lo, hi, n=1000, windows=16):
    return {
        "kl": np.ones(3),
        "exit layers": np.zeros(n, int),
        "easy layers": np.ones(n, int),
        "easy": (share, lo, hi),
        "n": n,
        "windows": windows,
    }


def test_exits_from_the_cached_dict():
    ex = Exits.from_dict({"logit lens": lens(0.3, 0.2, 0.4), "tuned lens": lens(0.5, 0.45, 0.55), "curve": None})
    assert (ex.logit.easy_share, ex.logit.easy_low, ex.logit.easy_high, ex.logit.n) == (0.3, 0.2, 0.4, 1000)
    assert ex.tuned.easy_share == 0.5 and (ex.tuned.easy_layers == 1).all()
    assert list(ex.lenses) == ["logit lens", "tuned lens"] and ex.lenses["tuned lens"] is ex.tuned


def study_results(seed: int = 0):
    """Runner results built so that every one of the seven claims is reproduced, with decoys (other
    k, other bits, full maps) that would flip a verdict if :func:`verdicts` read the wrong rows."""
    rng = np.random.default_rng(seed)
    n, t = 40, 100.0
    base = 300 + rng.standard_normal(n)
    tokens = np.full(n, t)

    def nll(per_token):  # window NLLs ``per_token`` nats per token above the base
        return tuple(base + t * per_token + 0.01 * rng.standard_normal(n))

    def row(nlls, **cols):
        return {**cols, "window nll": nlls, "window tokens": tuple(tokens)}

    abl = pd.DataFrame(  # the chapter's grid: not what the verdict reads (a decoy that says the opposite)
        [row(tuple(base), layer=-1, kind="none", k=0)]
        + [row(nll(-0.5), layer=5, kind="gradient", k=8), row(nll(0.0), layer=5, kind="variance", k=8)]
    )
    removal = pd.DataFrame(
        [row(tuple(base), layer=-1, kind="none", k=0)]
        + [row(nll(0.5), layer=l, kind="gradient", k=8) for l in (3, 14, 26)]
        + [row(nll(0.0), layer=l, kind="variance", k=8) for l in (3, 14, 26)]
    )
    units = pd.DataFrame(
        [
            {"layer": l, "window": w, "CCA gradient": 0.3 + 0.01 * rng.standard_normal(), "CCA random": 0.5}
            for l in range(30)
            for w in range(16)
        ]
    )
    depth = np.arange(30)
    lin = pd.DataFrame(
        {"R² output, clean": noisy(0.97, 30, seed=seed), "R² update, clean": depth / 30 + noisy(0, 30, seed=seed)},
        index=pd.Index(depth, name="block"),
    )
    dirs = Directions(
        pd.DataFrame({"CCA uncorrelated share": noisy(0.1, 30, seed=seed)}), {}, torch.zeros(4, 2), units, removal
    )
    ppl = pd.DataFrame(
        [row(tuple(base), scheme="none", bits=32)]
        + [row(nll(0.0), scheme="direct", bits=b) for b in (4, 8)]
        + [row(nll(0.2 if b == 4 else 0.3), scheme="factor", bits=b) for b in (4, 8)]
        + [row(nll(-0.5), scheme="rotated", bits=b) for b in (4, 8)]  # a decoy: not the factored scheme
    )
    amp = pd.DataFrame(
        [
            {
                "weight": f"blocks.{l}.mlp.{w}",
                "bits": b,
                "direct": 0.1 + 0.01 * rng.random(),
                "product": 0.2 + 0.01 * rng.random(),
                "product vs W": 0.3 + 0.01 * rng.random(),
                "amplification": 0.5,  # a decoy: the ratio is never judged
            }
            for l in range(30)
            for w in ("W_in", "W_out")
            for b in (4, 8)
        ]
    )
    ex = Exits(LensExit.from_dict(lens(0.3, 0.27, 0.33)), LensExit.from_dict(lens(0.9, 0.88, 0.92)), pd.DataFrame())
    rep = pd.DataFrame(
        [row(tuple(base), blocks=0, map="none", compression=1.0)]
        + [row(nll(np.log(1.02)), blocks=1, map="rank 12", compression=34.0)]
        + [row(nll(np.log(2.0)), blocks=2, map="rank 12", compression=34.0)]
        + [row(nll(np.log(2.0)), blocks=1, map="full d×d", compression=0.9)]
        + [row(nll(0.0), blocks=2, map="full d×d", compression=0.9)]
    )
    cfg = variance.VarianceConfig(k_overlap=8, multi_blocks=(1, 2), exit_threshold=0.9)
    return cfg, lin, dirs, abl, rep, Quantization(ppl, amp), ex


def test_verdicts_are_the_seven_claims_in_the_seeds_order():
    found = variance.verdicts(*study_results())
    assert [v.claim for v in found] == [c["claim"] for c in variance.SEED_RESULTS.values()]
    assert [v.verdict for v in found] == ["reproduced"] * 7
    assert found[0].ours == pytest.approx(0.2, abs=0.01)  # random minus gradient mean canonical correlation
    assert found[3].ours == pytest.approx(0.2, abs=1e-3)  # factor minus direct NLL at the least favourable bits
    assert found[4].ours == 0.3  # the logit lens's easy share
    assert found[5].ours == pytest.approx(0.02, abs=1e-3)  # the rank map's relative ΔPPL, one block


def test_verdicts_follow_the_measurements():
    cfg, lin, dirs, abl, rep, quant, ex = study_results()
    worse = Exits(LensExit.from_dict(lens(0.05, 0.03, 0.07)), ex.tuned, ex.curve)
    found = variance.verdicts(cfg, lin, dirs, abl, rep, quant, worse)
    assert [v.verdict for v in found] == ["reproduced"] * 4 + ["not reproduced"] + ["reproduced"] * 2
    few = Exits(LensExit.from_dict(lens(0.3, 0.27, 0.33, windows=4)), ex.tuned, ex.curve)
    assert variance.verdicts(cfg, lin, dirs, abl, rep, quant, few)[4].verdict == "inconclusive"
    chance = dirs.windows.assign(**{"CCA gradient": dirs.windows["CCA gradient"] + 0.4})  # above the baseline
    found = variance.verdicts(cfg, lin, dataclasses.replace(dirs, windows=chance), abl, rep, quant, ex)
    assert found[0].verdict == "partly"  # (a) not reproduced, (b) reproduced
    amp = quant.amplification.assign(direct=1.5 * quant.amplification["product vs W"] + 0.1)
    found = variance.verdicts(cfg, lin, dirs, abl, rep, Quantization(quant.ppl, amp), ex)
    assert found[3].verdict == "partly"  # direct's error above the product's: (b), (c) not reproduced


def test_verdicts_before_the_new_measurements_are_inconclusive():
    """Results cached before the per-window units existed judge nothing."""
    cfg, lin, dirs, abl, rep, quant, ex = study_results()
    old = Directions(dirs.frame, dirs.gradient, dirs.readout)
    assert variance.verdicts(cfg, lin, old, abl, rep, quant, ex)[0].verdict == "inconclusive"


def test_exit_panels_draw_each_lens():
    curve = pd.DataFrame(
        [
            {"lens": name, "threshold": t, "easy share": 0.1, "compute saved": 0.2}
            for name in ("logit lens", "tuned lens")
            for t in (0.5, 0.9)
        ]
    )
    ex = Exits(LensExit.from_dict(lens(0.3, 0.2, 0.4)), LensExit.from_dict(lens(0.5, 0.4, 0.6)), curve)
    fig = figures.exit_panels(ex, 0.9)
    hist, shares, kl = fig.axes
    assert len(hist.containers) == 2 and len(shares.lines) == 4
    assert [line.get_label() for line in kl.lines] == ["logit lens", "tuned lens"]
    plt.close(fig)
