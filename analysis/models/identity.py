"""Identity: what a loaded model is, read off the model itself.

A cached result is only as good as its key, and a key built from a model's *name* goes stale the
moment a compression edits a weight. So :func:`model_key` hashes the bytes of every parameter and
buffer, at every call: no cheaper counter sees every edit (a write through ``.data`` moves neither
autograd's ``_version`` nor the storage pointer). :func:`weights_version` is that cheaper counter,
for code that only needs to notice replaced or autograd-visible writes within one run.
:func:`describe` and :func:`n_params` give the facts a chapter prints, from the loaded object rather
than from a table that could disagree with it.
"""

from __future__ import annotations

import torch
from transformer_lens import HookedEncoder, HookedTransformer

from analysis.cache import tensors_hash


def n_params(model: torch.nn.Module) -> int:
    """Parameter count, counting a tied unembedding once (as the original checkpoint does)."""
    total = sum(p.numel() for p in model.parameters())
    W_E, W_U = getattr(model, "W_E", None), getattr(model, "W_U", None)
    if W_E is not None and W_U is not None and W_U.shape == W_E.T.shape and torch.equal(W_U, W_E.T):
        total -= W_U.numel()
    return total


def describe(model: HookedTransformer | HookedEncoder) -> dict[str, object]:
    """The facts a model card prints, read off the loaded model itself."""
    cfg = model.cfg
    return {
        "name": cfg.model_name,
        "parameters": n_params(model),
        "layers": cfg.n_layers,
        "d_model": cfg.d_model,
        "heads": cfg.n_heads,
        "kv heads": cfg.n_key_value_heads or cfg.n_heads,
        "d_head": cfg.d_head,
        "d_mlp": cfg.d_mlp,
        "vocabulary": cfg.d_vocab,
        "context": cfg.n_ctx,
        "normalization": cfg.normalization_type,
        "dtype": str(cfg.dtype).replace("torch.", ""),
    }


def is_encoder(model: torch.nn.Module | None) -> bool:
    """Whether ``model`` is a BERT-style post-LN encoder (TransformerLens ``HookedEncoder``)."""
    return isinstance(model, HookedEncoder)


def weights_version(model: torch.nn.Module) -> tuple:
    """Identity and in-place-modification counters of every parameter: changes when a parameter is
    replaced or written in place through autograd's view, but not on a write through ``.data``."""
    return tuple((p.data_ptr(), p._version) for p in model.parameters())


def model_key(model: HookedTransformer | HookedEncoder) -> str:
    """A cache key for a model: its name, shape and a content hash of every parameter's and buffer's bytes.

    Two models with the same name but different weights get different keys. The hash is computed
    at every call (about 0.5 s for SmolLM2's 683 MB), because no counter sees every edit: a write
    through ``.data`` (``W.data.mul_(0)``) leaves ``_version`` and the storage pointer unchanged.
    """
    digest = tensors_hash(p for _, p in sorted(model.state_dict().items()))
    return f"{model.cfg.model_name}-L{model.cfg.n_layers}-d{model.cfg.d_model}-{digest}"
