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


TINY = dict(
    n_layers=2, d_model=32, d_head=8, n_heads=4, d_mlp=64, n_ctx=64, d_vocab=50, act_fn="gelu",
    normalization_type="LN", seed=0,
)  # fmt: skip
"""The sizes of every tiny random model in the unit tests, unless a test overrides them."""


def tiny_cfg(**overrides):
    """A :class:`~transformer_lens.HookedTransformerConfig` of :data:`TINY` sizes (2 layers, width 32,
    4 heads of 8, MLP 64, 64 positions, 50 tokens, GELU, LayerNorm, seed 0); ``overrides`` replace
    any field (``seed=None`` draws weights from the global generator)."""
    from transformer_lens import HookedTransformerConfig

    return HookedTransformerConfig(**{**TINY, **overrides})


@pytest.fixture(name="tiny_cfg", scope="session")
def tiny_cfg_fixture():
    """:func:`tiny_cfg`: ``tiny_cfg(**overrides)`` builds a tiny HookedTransformerConfig."""
    return tiny_cfg


@pytest.fixture()
def tiny_model():
    """A 2-layer random HookedTransformer with no tokenizer, for fast unit tests."""
    from transformer_lens import HookedTransformer

    return HookedTransformer(tiny_cfg()).eval()


@pytest.fixture()
def gqa_model():
    """A 2-layer random llama-like HookedTransformer: grouped-query attention (4 query heads share
    2 K/V heads), RMSNorm, rotary positions, a gated MLP."""
    from transformer_lens import HookedTransformer

    cfg = tiny_cfg(
        n_key_value_heads=2,
        act_fn="silu",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=8,
        gated_mlp=True,
    )
    return HookedTransformer(cfg).eval()


def tiny_checkpoint(folder, name: str, vocab_size: int = 128, layers: int = 2, tokenizer=None):
    """A tiny random Hugging Face checkpoint with the architecture of hub model ``name`` (its
    config class and its switches: GQA, sliding windows, soft caps, tied embeddings …, at widths
    of 64), saved in ``folder``; returns ``(folder, the transformers model)``. ``tokenizer``, when
    given, is saved beside it (its vocabulary sets ``vocab_size``)."""
    import transformers as tr

    if tokenizer is not None:
        vocab_size = len(tokenizer)
    torch.manual_seed(0)
    llama_like = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=512,
    )
    if name.startswith("gpt2"):
        # the hub's gpt2 config.json carries n_ctx, which TransformerLens reads
        cfg = tr.GPT2Config(vocab_size=vocab_size, n_embd=64, n_layer=layers, n_head=4, n_positions=512, n_ctx=512)
        model = tr.GPT2LMHeadModel(cfg)
    elif name == "gemma-2-2b":
        cfg = tr.Gemma2Config(
            **llama_like, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16, sliding_window=32
        )
        model = tr.Gemma2ForCausalLM(cfg)
    elif name == "mistral-7b":
        model = tr.MistralForCausalLM(tr.MistralConfig(**llama_like, num_key_value_heads=2, sliding_window=4096))
    elif name == "llama-2-7b":
        model = tr.LlamaForCausalLM(tr.LlamaConfig(**llama_like, num_key_value_heads=4))
    elif name == "bert-base-uncased":
        cfg = tr.BertConfig(
            vocab_size=vocab_size,
            hidden_size=64,
            num_hidden_layers=layers,
            num_attention_heads=4,
            intermediate_size=128,
            max_position_embeddings=512,
        )
        model = tr.BertForMaskedLM(cfg)
    else:
        raise ValueError(
            f"no tiny architecture for {name!r} (gpt2*, gemma-2-2b, mistral-7b, llama-2-7b, bert-base-uncased)"
        )
    model.eval().save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder, model


def _save_tiny(tmp_path, kind: str):
    """A tiny random HF checkpoint (llama or gpt2) in a temp folder; returns (folder, hf model)."""
    # a path naming "llama" is read from its config.json all the same (analysis.models.hooked_config)
    return tiny_checkpoint(tmp_path / f"tiny-{kind}", "llama-2-7b" if kind == "llama" else "gpt2")


@pytest.fixture(name="tiny_checkpoint", scope="session")
def tiny_checkpoint_fixture():
    """:func:`tiny_checkpoint`: ``tiny_checkpoint(folder, hub_name, ...)`` builds a tiny random checkpoint."""
    return tiny_checkpoint


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
