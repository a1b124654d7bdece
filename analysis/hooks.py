"""The hook vocabulary: every TransformerLens hook name the library uses, in one place.

Names are built with :func:`transformer_lens.utilities.get_act_name`, so they are exactly the keys
of ``model.hook_dict`` and ``ActivationCache``::

    resid_pre(3)        -> "blocks.3.hook_resid_pre"      # residual stream entering block 3
    resid_post(3)       -> "blocks.3.hook_resid_post"     # ... leaving block 3
    act_name("mlp", 3)  -> "blocks.3.hook_mlp_out"        # a block's MLP output (what ROME restores)
    act_name("attn", 3) -> "blocks.3.hook_attn_out"       # its attention output
    z(3)                -> "blocks.3.attn.hook_z"         # per-head outputs before W_O [.., head, d_head]
    normalized(3, "ln2")-> "blocks.3.ln2.hook_normalized" # the MLP's input, before the norm's weight
    mlp_post(3)         -> "blocks.3.mlp.hook_post"       # the MLP's hidden activations

Two details that bite: ``ln*.hook_normalized`` fires *before* the norm's own weight and bias
(we load with ``fold_ln=False``), so :func:`norm_output` applies them; and in a pre-LN decoder
``ln1`` runs once each for Q, K and V, so its hook fires three times per forward.
A BERT encoder (TransformerLens ``HookedEncoder``) is post-LN: its Q/K/V read
``hook_resid_pre`` and its MLP reads ``ln1.hook_normalized``.
"""

from __future__ import annotations

import re

from torch import Tensor
from transformer_lens import HookedEncoder, HookedTransformer
from transformer_lens.utilities import get_act_name

from analysis.models import is_encoder

TRACE_HOOKS: tuple[str, ...] = ("hook_resid_pre", "hook_resid_post", "hook_mlp_out", "hook_attn_out")
"""The per-block hook points causal tracing can restore (``blocks.{layer}.<hook>``)."""

KIND_ALIASES: dict[str, str] = {
    "resid": "hook_resid_pre",
    "resid_pre": "hook_resid_pre",
    "resid_post": "hook_resid_post",
    "mlp": "hook_mlp_out",
    "mlp_out": "hook_mlp_out",
    "attn": "hook_attn_out",
    "attn_out": "hook_attn_out",
    **{h: h for h in TRACE_HOOKS},
}
"""Short names accepted for a block's outputs; results are always keyed by the full hook name."""

_WEIGHT = re.compile(r"^blocks\.(\d+)\.(attn|mlp)\.(W_\w+)$")
_LAYER = re.compile(r"^blocks\.(\d+)\.")


def hook_kind(kind: str) -> str:
    """The hook suffix for a kind (``"mlp"`` -> ``"hook_mlp_out"``); ValueError for unknown kinds."""
    try:
        return KIND_ALIASES[kind]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown kind {kind!r}. Use one of {sorted(KIND_ALIASES)} "
            "(results are keyed by the hook names hook_resid_pre, hook_resid_post, "
            "hook_mlp_out and hook_attn_out)."
        ) from None


def act_name(kind: str, layer: int) -> str:
    """The hook point of a block output kind at a layer, e.g. ``act_name("mlp", 3)`` is
    ``blocks.3.hook_mlp_out``."""
    return get_act_name(hook_kind(kind).removeprefix("hook_"), layer)


def resid_pre(layer: int) -> str:
    """``blocks.{layer}.hook_resid_pre``: the residual stream entering block ``layer``."""
    return get_act_name("resid_pre", layer)


def resid_post(layer: int) -> str:
    """``blocks.{layer}.hook_resid_post``: the residual stream leaving block ``layer``."""
    return get_act_name("resid_post", layer)


def z(layer: int) -> str:
    """``blocks.{layer}.attn.hook_z``: per-head attention outputs ``[batch, pos, head, d_head]``."""
    return get_act_name("z", layer)


def k(layer: int) -> str:
    """``blocks.{layer}.attn.hook_k``: keys ``[batch, pos, kv_head, d_head]``."""
    return get_act_name("k", layer)


def v(layer: int) -> str:
    """``blocks.{layer}.attn.hook_v``: values ``[batch, pos, kv_head, d_head]``."""
    return get_act_name("v", layer)


def normalized(layer: int, norm: str) -> str:
    """``blocks.{layer}.{norm}.hook_normalized`` (``norm`` is ``"ln1"`` or ``"ln2"``)."""
    return get_act_name("normalized", layer, norm)


def mlp_post(layer: int) -> str:
    """``blocks.{layer}.mlp.hook_post``: the MLP's hidden activations ``[batch, pos, d_mlp]``."""
    return get_act_name("post", layer)


def layer_of(hook_name: str) -> int:
    """The block index in a hook or weight name (``"blocks.3.attn.hook_z"`` -> 3)."""
    m = _LAYER.match(hook_name)
    if m is None:
        raise ValueError(f"{hook_name!r} names no block; expected 'blocks.<layer>.…'.")
    return int(m.group(1))


def feature_hook(model: HookedTransformer | HookedEncoder, layer: int) -> str:
    """The residual stream a probe reads after block ``layer``: the normalised stream of a
    post-LN encoder, ``hook_resid_post`` of a decoder."""
    return f"blocks.{layer}.hook_normalized_resid_post" if is_encoder(model) else resid_post(layer)


def input_hook(weight: str, model: HookedTransformer | HookedEncoder = None) -> str:
    """The hook whose activations are the input ``x`` of ``x @ W`` for a TransformerLens weight.

    Q/K/V read ``ln1.hook_normalized``, ``W_O`` reads ``attn.hook_z`` (heads concatenated), the
    MLP's input weights read ``ln2.hook_normalized`` and ``W_out`` reads ``mlp.hook_post``. For a
    BERT encoder (``model`` a ``HookedEncoder``) Q/K/V read ``hook_resid_pre`` and the MLP's input
    weights ``ln1.hook_normalized``. Apply :func:`norm_output` to ``hook_normalized`` activations.
    """
    m = _WEIGHT.match(weight)
    if m is None:
        raise ValueError(f"{weight!r} is not a weight name such as 'blocks.0.mlp.W_in'.")
    layer, w = int(m.group(1)), m.group(3)
    if is_encoder(model) and w in ("W_Q", "W_K", "W_V", "W_in", "W_gate"):
        return resid_pre(layer) if w in ("W_Q", "W_K", "W_V") else normalized(layer, "ln1")
    hooks = {
        "W_Q": normalized(layer, "ln1"),
        "W_K": normalized(layer, "ln1"),
        "W_V": normalized(layer, "ln1"),
        "W_O": z(layer),
        "W_in": normalized(layer, "ln2"),
        "W_gate": normalized(layer, "ln2"),
        "W_out": mlp_post(layer),
    }
    if w not in hooks:
        raise ValueError(f"No input hook for {weight!r}; known weights: {', '.join(hooks)}.")
    return hooks[w]


def norm_output(model: HookedTransformer | HookedEncoder, hook_name: str, act: Tensor) -> Tensor:
    """The input ``x`` of a weight from the activations at its :func:`input_hook`.

    ``ln*.hook_normalized`` fires before the norm's weight (and bias); the weight that follows
    reads ``act * ln.w (+ ln.b)``. Other hooks are returned unchanged.
    """
    if not hook_name.endswith("hook_normalized"):
        return act
    norm = model.get_submodule(hook_name.rsplit(".", 1)[0])
    w, b = getattr(norm, "w", None), getattr(norm, "b", None)
    if w is not None:
        act = act * w.detach()
    return act + b.detach() if b is not None else act
