"""Seed 003's verdict functions on constructed inputs whose answer is known, and the study's configs."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.studies import variance
from analysis.studies.variance import verdicts


def noisy(center, n=40, spread=0.01, seed=0):
    return center + spread * np.random.default_rng(seed).standard_normal(n)


def test_uncorrelated():
    assert verdicts.uncorrelated(noisy(0.9), noisy(0.5)).verdict == "reproduced"
    assert verdicts.uncorrelated(noisy(0.1), noisy(-0.5)).verdict == "not reproduced"
    assert verdicts.uncorrelated(noisy(0.9), noisy(-0.5)).verdict == "partly"
    assert verdicts.uncorrelated(noisy(0.5, n=6, spread=0.3), noisy(0.0, spread=1)).verdict == "inconclusive"


def test_r2_level():
    assert verdicts.r2_level(noisy(0.97)).verdict == "reproduced"
    assert verdicts.r2_level(noisy(0.6)).verdict == "not reproduced"
    assert verdicts.r2_level(noisy(0.9, n=5, spread=0.1)).verdict == "inconclusive"


def test_r2_depth():
    depth = np.arange(30)
    assert verdicts.r2_depth(depth, depth / 30 + noisy(0, 30)).verdict == "reproduced"
    assert verdicts.r2_depth(depth, 1 - depth / 30).verdict == "not reproduced"
    flat = np.random.default_rng(1).standard_normal(30)
    assert verdicts.r2_depth(depth, flat).verdict == "inconclusive"


def test_direct_beats_factor():
    assert verdicts.direct_beats_factor(noisy(0.3), noisy(2.0)).verdict == "reproduced"
    assert verdicts.direct_beats_factor(noisy(-0.3), noisy(0.5)).verdict == "not reproduced"
    assert verdicts.direct_beats_factor(noisy(0.0, spread=1), noisy(0.5)).verdict == "not reproduced"
    assert verdicts.direct_beats_factor(noisy(0.0, spread=1), noisy(1.0, spread=1)).verdict == "inconclusive"


def test_easy_tokens():
    assert verdicts.easy_tokens(0.3, 0.27, 0.33, 1000, 0.9).verdict == "reproduced"
    assert verdicts.easy_tokens(0.05, 0.03, 0.07, 1000, 0.9).verdict == "not reproduced"
    assert verdicts.easy_tokens(0.2, 0.1, 0.3, 50, 0.9).verdict == "inconclusive"


def test_last_and_multi_block():
    assert verdicts.last_block(0.03, 0.01, 0.05, 10, 34).verdict == "reproduced"
    assert verdicts.last_block(0.5, 0.4, 0.6, 10, 34).verdict == "not reproduced"
    assert verdicts.last_block(0.1, 0.05, 0.15, 10, 34).verdict == "inconclusive"
    assert verdicts.multi_block(1.0, 0.8, 1.2, 10, 8).verdict == "reproduced"
    assert verdicts.multi_block(0.05, 0.01, 0.1, 10, 8).verdict == "not reproduced"
    assert verdicts.multi_block(0.25, 0.1, 0.4, 10, 8).verdict == "inconclusive"


def test_ratio_ci():
    base = np.full(20, 100.0)
    tokens = np.full(20, 50.0)
    est, lo, hi = verdicts.ratio_ci(base, base + 50 * np.log(1.2), tokens)
    assert est == pytest.approx(0.2, rel=1e-9)
    assert lo == pytest.approx(0.2, rel=1e-9) and hi == pytest.approx(0.2, rel=1e-9)
    est, lo, hi = verdicts.ratio_ci(base, base + noisy(5, 20, spread=5), tokens)
    assert lo < est < hi


def test_configs():
    for name in ("smoke", "cpu", "gpu"):
        cfg = variance.variance_config_for(name)
        assert all(0 <= f <= 1 for f in cfg.ablation_layers)
    assert variance.variance_config_for("cpu").fit_tokens >= 35 * 577  # 35 tokens per unknown of SmolLM2's map
    with pytest.raises(ValueError, match="No variance sizes"):
        variance.variance_config_for("nope")
    assert set(variance.SEED_RESULTS) == {
        "uncorrelated",
        "r2_gpt2",
        "r2_depth",
        "direct_beats_factor",
        "easy_tokens",
        "last_block",
        "multi_block",
    }
