"""Seed 003's machinery on the embedded SmolLM2: the linearity score against the paper's package on
real hidden states, a rotation that leaves the logits unchanged, and held-out block maps."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from analysis import geometry, hooks
from analysis.compress import linear_block, rotation


def microscope():
    spec = importlib.util.find_spec("llm_microscope")
    if spec is None:
        pytest.skip("llm-microscope is not installed (pip install --no-deps llm-microscope==0.0.7)")
    path = Path(spec.submodule_search_locations[0]) / "functions.py"  # its __init__ is broken in 0.0.7
    fspec = importlib.util.spec_from_file_location("llm_microscope_functions", path)
    module = importlib.util.module_from_spec(fspec)
    fspec.loader.exec_module(module)
    return module


def test_linearity_score_on_smollm2_equals_the_paper_package(smollm2, eval_tokens):
    mic = microscope()
    x = geometry.collect(smollm2, eval_tokens, [hooks.resid_pre(20), hooks.resid_post(20)], context=300)
    a, b = (v.double() for v in x.values())  # 600 tokens, 576 dimensions: well determined
    assert geometry.linearity_score(a, b) == pytest.approx(mic.procrustes_similarity(a, b), rel=1e-6)
    assert geometry.linearity_score(a, b, False) == pytest.approx(mic.procrustes_similarity(a, b - a), rel=1e-6)


def test_fold_and_rotate_leave_smollm2_logits_unchanged(smollm2, eval_tokens):
    tokens = eval_tokens[:64][None]
    base = smollm2(tokens)
    rotated = rotation.rotated_copy(smollm2, seed=0)
    assert (rotated(tokens) - base).abs().max() <= 1e-4 * base.abs().max()
    assert torch.equal(smollm2(tokens), base)


def test_last_block_map_beats_dropping_the_block(smollm2, eval_tokens):
    """A fitted map of the last block predicts its output better than skipping the block (y = x)."""
    from analysis.data import lm_tokens

    calib = lm_tokens(smollm2.tokenizer, "train", n_tokens=1024)
    L = smollm2.cfg.n_layers
    stats = geometry.block_stats(smollm2, calib, context=256)["block"][L - 1]
    m = linear_block.fit_block(stats, L - 1, rank=linear_block.rank_for_ratio(smollm2, L - 1, 34.0))
    assert linear_block.compression(smollm2, m) >= 34.0
    r2 = geometry.heldout_r2(smollm2, eval_tokens, {L - 1: m}, context=300, update=True)[L - 1]
    assert r2 > 0.0  # 0 is what y = x (the block dropped) scores on the update
