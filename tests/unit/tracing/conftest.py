"""Tiny random decoders for the tracing unit tests (seconds on one thread)."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import HookedTransformer


@pytest.fixture(autouse=True)
def _tiny_models_run_on_one_thread(one_thread):
    """Tiny models gain nothing from threads, and on a shared machine spinning threads cost a lot."""
    yield


@pytest.fixture(scope="session")
def tiny(tiny_cfg):
    """``tiny(**overrides)``: a random HookedTransformer of 4 layers, 32 positions and larger initial
    weights (``initializer_range=0.4``), so that corrupting a token moves the prediction."""

    def make(**kw) -> HookedTransformer:
        return HookedTransformer(tiny_cfg(n_layers=4, n_ctx=32, initializer_range=0.4, **kw)).eval()

    return make


@pytest.fixture(scope="module")
def gpt2_like(tiny) -> HookedTransformer:
    """4 layers, LayerNorm, learned positions, plain GELU MLP."""
    return tiny()


@pytest.fixture(scope="module")
def llama_like(tiny) -> HookedTransformer:
    """4 layers, RMSNorm, rotary, grouped-query attention, gated SiLU MLP (SmolLM2's shape)."""
    return tiny(
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=8,
        n_key_value_heads=2,
        gated_mlp=True,
        act_fn="silu",
        original_architecture="LlamaForCausalLM",
    )


@pytest.fixture(scope="session")
def random_tokens():
    """``random_tokens(seed, n)``: ``n`` seeded random token ids of the tiny vocabulary."""

    def make(seed: int = 1, n: int = 10) -> torch.Tensor:
        return torch.randint(0, 50, (n,), generator=torch.Generator().manual_seed(seed))

    return make
