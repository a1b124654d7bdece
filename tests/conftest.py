"""Shared fixtures: the embedded model loads once per test session."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads; see the Makefile

import pytest  # noqa: E402
import torch  # noqa: E402

os.environ.setdefault("ANALYSIS_PROFILE", "smoke")
os.environ.setdefault("ANALYSIS_QUIET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct as a HookedTransformer (float32, CPU)."""
    from analysis.models import load_model

    return load_model("smollm2-135m", device="cpu")


@pytest.fixture(scope="session")
def smollm2_hf():
    """The same checkpoint as a plain transformers model: the independent reference."""
    from analysis.models import load_smollm2_hf

    return load_smollm2_hf()


@pytest.fixture(scope="session")
def eval_tokens(smollm2):
    """A few hundred tokens of the packaged held-out evaluation text."""
    from analysis.data import lm_tokens

    return lm_tokens(smollm2.tokenizer, "eval", n_tokens=600)


@pytest.fixture()
def tiny_model():
    """A 2-layer random HookedTransformer with no tokenizer, for fast unit tests."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=32,
        d_head=8,
        n_heads=4,
        d_mlp=64,
        n_ctx=64,
        d_vocab=50,
        act_fn="gelu",
        normalization_type="LN",
        seed=0,
    )
    return HookedTransformer(cfg).eval()


@pytest.fixture()
def gqa_model():
    """A 2-layer random llama-like HookedTransformer: grouped-query attention (4 query heads share
    2 K/V heads), RMSNorm, rotary positions, a gated MLP."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=32,
        d_head=8,
        n_heads=4,
        n_key_value_heads=2,
        d_mlp=64,
        n_ctx=64,
        d_vocab=50,
        act_fn="silu",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=8,
        gated_mlp=True,
        seed=0,
    )
    return HookedTransformer(cfg).eval()


def _save_tiny(tmp_path, kind: str):
    """A tiny random HF checkpoint (llama or gpt2) in a temp folder; returns (folder, hf model)."""
    import transformers as tr

    torch.manual_seed(0)
    if kind == "llama":
        cfg = tr.LlamaConfig(
            vocab_size=128,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
        )
        model = tr.LlamaForCausalLM(cfg)
    else:
        # the hub's gpt2 config.json carries n_ctx, which TransformerLens reads
        cfg = tr.GPT2Config(vocab_size=128, n_embd=64, n_layer=2, n_head=4, n_positions=64, n_ctx=64)
        model = tr.GPT2LMHeadModel(cfg)
    folder = tmp_path / f"tiny-{kind.replace('llama', 'lm')}"  # a path naming "llama" changes TL's branch
    model.eval().save_pretrained(folder)
    return folder, model


@pytest.fixture()
def save_tiny():
    """``save_tiny(folder, kind)``: a tiny random HF checkpoint ("llama" or "gpt2") saved in
    ``folder``; returns ``(checkpoint folder, the transformers model)``."""
    return _save_tiny


@pytest.fixture()
def one_thread():
    """Run a test on one thread (small linear algebra is faster so on a shared 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
