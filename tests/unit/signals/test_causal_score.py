"""The causal-tracing score the sweep reads is the causal tracing chapter's, from its cached traces."""

from __future__ import annotations

import json

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import PreTrainedTokenizerFast

import analysis.cache
from analysis import scores
from analysis.config import OVERRIDES_ENV, PROFILE_ENV
from analysis.studies import tracing as study

TOY = {"n_screen": 30, "n_exact": 3, "convergence_facts": 2, "convergence_samples": 2, "noise_tokens": 64}


@pytest.fixture()
def byte_model(monkeypatch, tmp_path, one_thread):
    """A 2-layer random model over a byte-level tokenizer (any fact's text is spelled exactly),
    under a ``smoke`` profile that keeps every screened fact and traces few, and an empty cache."""
    vocab = {w: i for i, w in enumerate(["<bos>", "<eos>"] + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", add_bos_token=True)
    tok.init_kwargs["name_or_path"] = "byte-level-test"  # TransformerLens reads it
    cfg = HookedTransformerConfig(
        n_layers=2, d_model=16, n_ctx=160, d_head=4, n_heads=4, d_mlp=32, d_vocab=len(vocab), act_fn="gelu", seed=0
    )
    overrides = tmp_path / "overrides.json"
    overrides.write_text(json.dumps({"smoke": {"fact_screen": "all", "n_facts": 30, "extra": {"tracing": TOY}}}))
    monkeypatch.setenv(OVERRIDES_ENV, str(overrides))
    monkeypatch.setenv(PROFILE_ENV, "smoke")
    monkeypatch.setattr(analysis.cache, "CACHE_DIR", tmp_path / "cache")
    return HookedTransformer(cfg, tokenizer=tok).eval()


def test_causal_tracing_is_the_chapters_score_read_from_its_cached_traces(byte_model):
    chapter = scores.ComponentScores.from_aie(study.single_state_aie(study.setup(byte_model, "smoke")))
    before = len(analysis.cache.RUNS)
    score = scores.causal_tracing(byte_model, "smoke")
    assert len(analysis.cache.RUNS) > before and all(run.hit for run in analysis.cache.RUNS[before:])  # all cached
    assert torch.equal(score.values, chapter.values) and torch.equal(score.samples, chapter.samples)
    assert score.samples.shape == (TOY["n_exact"], 2, 2) and score.name == "causal tracing"
