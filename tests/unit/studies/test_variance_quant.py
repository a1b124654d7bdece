"""Seed 003's direction, quantization and early-exit verdicts: each rule on inputs whose answer is
known (holds, fails, inconclusive), null simulations at the n the ``cpu`` profile uses, and the
separation of the text that fits from the text that scores."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from analysis import geometry, stats
from analysis.studies import variance
from analysis.studies.variance import run
from analysis.studies.variance.verdicts import direct_beats_factor, easy_tokens, every_setting, uncorrelated
from analysis.studies.verdicts import MIN_UNITS, false_reproduced_rate

CPU = variance.config_for("cpu")
QUANT_WINDOWS = CPU.quant_tokens // CPU.context
GAP_WINDOWS = CPU.gap_tokens // CPU.context
CCA_WINDOWS = CPU.cca_tokens // CPU.context
EXIT_WINDOWS = CPU.exit_tokens // CPU.context
N_LAYERS = 30  # SmolLM2-135M, the cpu profile's model
WEIGHTS_PER_BLOCK = 7  # Q, K, V, O, in, gate, out
N_DEPTHS = len(CPU.ablation_layers)
N_BITS = len(CPU.quant_bits)


def diff(center, n=20, spread=0.05, rng=None, cluster=None):
    rng = rng if rng is not None else np.random.default_rng(0)
    x = center + spread * rng.standard_normal(n)
    return stats.paired(x, unit="units", cluster=cluster)


def per_setting(centers, n=20, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    return {k: diff(c, n, spread, rng) for k, c in enumerate(centers)}


def test_cpu_sizes_give_every_rule_enough_units():
    assert min(QUANT_WINDOWS, GAP_WINDOWS, CCA_WINDOWS, EXIT_WINDOWS) >= MIN_UNITS
    assert CPU.amp_layers is None  # every block: the weight comparison is clustered by block


def test_every_setting():
    assert every_setting("c", per_setting([0.3, 0.2, 0.5]), "gap").verdict == "reproduced"
    one_reversed = every_setting("c", per_setting([0.3, -0.3, 0.5]), "gap")
    assert one_reversed.verdict == "not reproduced"
    assert one_reversed.ours == pytest.approx(-0.3, abs=0.05)  # the least favourable setting is reported
    assert every_setting("c", per_setting([0.3, 0.0, 0.5], spread=1.0), "gap").verdict == "inconclusive"
    few = every_setting("c", per_setting([0.3, 0.3], n=MIN_UNITS - 1), "gap")
    assert few.verdict == "inconclusive" and "fewer than" in few.evidence


def removal(centers, n=GAP_WINDOWS, spread=0.05, seed=0):
    return {layer: d for layer, d in zip((3, 14, 26), per_setting(centers, n, spread, seed).values())}


def cca_gap(center, spread=0.02, seed=0, windows=CCA_WINDOWS, layers=N_LAYERS):
    """(layer, window) units clustered by window, each window with its own offset."""
    rng = np.random.default_rng(seed)
    w = np.repeat(np.arange(windows), layers)
    x = center + spread * rng.standard_normal(windows)[w] + spread * rng.standard_normal(len(w))
    return stats.paired(x, unit="windows", cluster=w)


def test_uncorrelated():
    assert uncorrelated(cca_gap(0.1), removal([0.5, 0.5, 0.5])).verdict == "reproduced"
    assert uncorrelated(cca_gap(-0.1), removal([-0.5, -0.5, -0.5])).verdict == "not reproduced"
    assert uncorrelated(cca_gap(-0.1), removal([0.5, 0.5, 0.5])).verdict == "partly"
    assert uncorrelated(cca_gap(0.0, spread=0.2), removal([0.5, 0.5, 0.5])).verdict == "inconclusive"
    few = uncorrelated(cca_gap(0.1, windows=MIN_UNITS - 1), removal([0.5, 0.5, 0.5]))
    assert few.verdict == "inconclusive"  # clusters, not (layer, window) units, count
    v = uncorrelated(cca_gap(0.1), removal([0.5, 0.5, 0.5]))
    assert v.ours == pytest.approx(0.1, abs=0.02) and v.seed == variance.SEED_RESULTS["uncorrelated"]["seed"]


def weight_gap(center, spread=0.02, seed=0):
    rng = np.random.default_rng(seed)
    block = np.repeat(np.arange(N_LAYERS), WEIGHTS_PER_BLOCK)
    x = center + spread * rng.standard_normal(N_LAYERS)[block] + spread * rng.standard_normal(len(block))
    return stats.paired(x, unit="blocks", cluster=block)


def per_bits(make, centers, seed=0):
    return {b: make(c, seed=seed + i) for i, (b, c) in enumerate(zip(CPU.quant_bits, centers))}


def windows_gap(center, spread=0.3, seed=0):
    return diff(center, QUANT_WINDOWS, spread, np.random.default_rng(seed))


def test_direct_beats_factor():
    good = [0.5] * N_BITS

    def judge(a, b, c):
        return direct_beats_factor(per_bits(windows_gap, a), per_bits(weight_gap, b), per_bits(weight_gap, c))

    assert judge(good, good, good).verdict == "reproduced"
    bad = [-0.5] * N_BITS
    assert judge(bad, bad, bad).verdict == "not reproduced"
    # direct loses at one bit width only: the claim, judged at every width, is not reproduced there
    assert judge([0.5, 0.5, -0.5, 0.5], good, good).verdict == "partly"
    assert judge([0.5, 0.0, 0.5, 0.5], good, good).verdict == "inconclusive"  # a width the data cannot settle
    # the truncation alone cannot carry it: (c) compares quantization errors without it
    assert judge(good, good, bad).verdict == "partly"
    v = judge(good, good, good)
    assert v.ours == pytest.approx(0.5, abs=0.3) and "(c)" in v.evidence


def test_easy_tokens():
    assert easy_tokens(0.3, 0.27, 0.33, 4000, 0.9, 16).verdict == "reproduced"
    assert easy_tokens(0.05, 0.03, 0.07, 4000, 0.9, 16).verdict == "not reproduced"
    assert easy_tokens(0.2, 0.1, 0.3, 4000, 0.9, 16).verdict == "inconclusive"
    few = easy_tokens(0.3, 0.27, 0.33, 4000, 0.9, MIN_UNITS - 1)
    assert few.verdict == "inconclusive" and "fewer than" in few.evidence


# Null simulations: the claim false at its boundary, at the cpu profile's n; at most 5% "reproduced".


def test_every_setting_null_at_the_least_favourable_setting():
    def judge(rng):
        d = {0: diff(0.0, QUANT_WINDOWS, 1.0, rng)} | {k: diff(5.0, QUANT_WINDOWS, 1.0, rng) for k in (1, 2, 3)}
        return every_setting("c", d, "gap")

    assert false_reproduced_rate(judge, 400) <= 0.05


def test_uncorrelated_null_in_each_part():
    """One part at its boundary, drawn afresh each time; the other part clearly true (drawn once)."""
    a_true, b_true = cca_gap(0.1), removal([1.0] * N_DEPTHS)

    def null_a(rng):
        return uncorrelated(cca_gap(0.0, seed=int(rng.integers(1 << 30))), b_true)

    def null_b(rng):
        return uncorrelated(a_true, removal([0.0] + [1.0] * (N_DEPTHS - 1), seed=int(rng.integers(1 << 30))))

    assert false_reproduced_rate(null_a, 300) <= 0.05
    assert false_reproduced_rate(null_b, 300) <= 0.05


@pytest.mark.parametrize("part", [0, 1, 2])
def test_direct_beats_factor_null_in_each_part(part):
    """One part at its boundary (no difference at one bit width), drawn afresh each time; the
    other parts clearly true (drawn once)."""
    makers = (windows_gap, weight_gap, weight_gap)
    parts = [per_bits(m, [0.5] * N_BITS) for m in makers]
    centers = [0.0] + [0.5] * (N_BITS - 1)

    def judge(rng):
        parts[part] = per_bits(makers[part], centers, int(rng.integers(1 << 30)))
        return direct_beats_factor(*parts)

    assert false_reproduced_rate(judge, 300) <= 0.05


def test_easy_tokens_null_at_the_band_edge():
    per = CPU.context - 1

    def judge(rng, p=0.2):
        q = rng.beta(10 * p, 10 * (1 - p), EXIT_WINDOWS)  # windows differ; their mean share is p, the band's edge
        flags = rng.random((EXIT_WINDOWS, per)) < q[:, None]
        share, lo, hi, g = geometry.window_share(flags.ravel(), per)
        return easy_tokens(share, lo, hi, flags.size, 0.9, g)

    assert false_reproduced_rate(judge, 400) <= 0.05
    assert false_reproduced_rate(lambda rng: judge(rng, 0.4), 400) <= 0.05


def test_window_share_resamples_windows_not_tokens():
    rng = np.random.default_rng(0)
    flags = np.repeat(rng.random(16) < 0.5, 255)  # every token of a window agrees: 16 units, not 4080
    share, lo, hi, g = geometry.window_share(flags, 255)
    assert g == 16 and hi - lo > 0.3
    p = flags.mean()
    tok_lo, tok_hi = stats.proportion_ci(int(flags.sum()), len(flags))
    assert tok_hi - tok_lo < 0.05 and lo < p < hi


def fake_lm_tokens(tokenizer, split, n_tokens):
    """Tokens tagged by split: train ids below 10**6, eval ids from 10**6."""
    return torch.arange(n_tokens) + (0 if split == "train" else 10**6)


@pytest.mark.parametrize("profile", ["cpu", "smoke"])
def test_choosing_and_judging_data_are_disjoint(monkeypatch, profile):
    """The tokens that fit the block maps, the tuned lens, the PCA and the gradient directions never
    score the directions, quantization and exit verdicts (held-out split; the splits are disjoint by
    document, ``tests/unit/data/test_text.py``)."""
    monkeypatch.setattr(run, "lm_tokens", fake_lm_tokens)
    cfg = variance.config_for(profile)
    model = SimpleNamespace(tokenizer=None)
    tok = run.tokens(model, cfg)
    chosen = set(torch.cat([tok[role] for role in run.CHOOSING]).tolist())
    judged = [tok["eval"]] + [
        run.held_out(model, n) for n in (cfg.quant_tokens, cfg.exit_tokens, cfg.cca_tokens, cfg.gap_tokens)
    ]
    for t in judged:
        assert not chosen & set(t.tolist())
    assert set(tok) - set(run.CHOOSING) == {"eval"}
