"""Component and weight names: the units that scores rank and compression plans address.

A *component* is one layer's attention or MLP, ``"blocks.{layer}.attn"`` / ``"blocks.{layer}.mlp"``;
a *weight* is one TransformerLens weight inside it, ``"blocks.{layer}.attn.W_Q"``. Grouped-query
models keep K and V in private parameters (``attn._W_K``); :func:`parameter_name` resolves that.
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

from torch import Tensor
from transformer_lens import HookedEncoder, HookedTransformer

ATTN_WEIGHTS = ("W_Q", "W_K", "W_V", "W_O")
MLP_WEIGHTS = ("W_in", "W_gate", "W_out")
KINDS = ("attn", "mlp")


_COMPONENT = re.compile(r"^blocks\.(\d+)\.(attn|mlp)(?:\.(W_\w+))?$")


def component(layer: int, kind: str) -> str:
    """The component name of ``kind`` ("attn" or "mlp") in ``layer``: ``"blocks.{layer}.{kind}"``."""
    if kind not in KINDS:
        raise ValueError(f"Unknown component kind {kind!r}; use one of {KINDS}.")
    return f"blocks.{layer}.{kind}"


def components(model: HookedTransformer | HookedEncoder, kinds: Sequence[str] = KINDS) -> list[str]:
    """Every ``blocks.{l}.{kind}`` component of ``model``, layer by layer."""
    return [component(l, k) for l in range(model.cfg.n_layers) for k in kinds]


def parameter_name(
    model: HookedTransformer | HookedEncoder, weight: str, params: Mapping[str, Tensor] | None = None
) -> str:
    """The parameter behind a weight name: grouped-query K/V live in ``attn._W_K``/``_W_V``.

    ``params`` (``dict(model.named_parameters())``) saves walking the modules again per call.
    """
    params = dict(model.named_parameters()) if params is None else params
    if weight in params:
        return weight
    head, _, last = weight.rpartition(".")
    private = f"{head}._{last}"
    if private in params:
        return private
    raise KeyError(weight)


def weights_of(
    model: HookedTransformer | HookedEncoder, name: str, params: Mapping[str, Tensor] | None = None
) -> list[str]:
    """The weight names a component stands for (one, for a weight name), checked against ``model``.

    >>> weights_of(model, "blocks.0.mlp")  # llama: gated MLP
    ['blocks.0.mlp.W_in', 'blocks.0.mlp.W_gate', 'blocks.0.mlp.W_out']
    """
    m = _COMPONENT.match(name)
    if m is None:
        raise ValueError(
            f"Unknown component {name!r}. Name a layer's 'blocks.<l>.attn' or 'blocks.<l>.mlp', "
            f"or one weight such as 'blocks.<l>.mlp.W_in' (see analysis.components.components(model))."
        )
    layer, kind, weight = int(m.group(1)), m.group(2), m.group(3)
    if layer >= model.cfg.n_layers:
        raise ValueError(
            f"Component {name!r}: the model has only {model.cfg.n_layers} layers (0..{model.cfg.n_layers - 1})."
        )
    names = [weight] if weight else (ATTN_WEIGHTS if kind == "attn" else MLP_WEIGHTS)
    params = dict(model.named_parameters()) if params is None else params
    out = []
    for w in names:
        full = f"blocks.{layer}.{kind}.{w}"
        try:
            parameter_name(model, full, params)
        except KeyError:
            if weight:
                raise ValueError(f"Component {name!r}: this model has no weight {full!r}.") from None
            continue  # e.g. no W_gate in GPT-2's MLP
        out.append(full)
    return out
