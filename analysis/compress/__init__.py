"""Compression plans: which operation touches which weight, applied reversibly, sized honestly.

A :class:`CompressionPlan` maps *components* to *operations*. A component is a layer's
attention (``"blocks.3.attn"``), a layer's MLP (``"blocks.3.mlp"``) or one weight matrix
(``"blocks.3.mlp.W_in"``, ``"blocks.3.attn.W_O"``), named as TransformerLens names the
parameters (:mod:`analysis.components`). An operation takes a weight and returns its compressed
version together with the bits needed to store it::

    from analysis import compress

    plan = compress.CompressionPlan({"blocks.0.mlp": [compress.Prune(0.2), compress.Quantize(4)]})
    with plan.applied(model) as size:       # weights compressed in place ...
        loss = model(tokens, return_type="loss")
    print(size.bits_per_weight)              # ... and restored bit for bit here

Plans never corrupt the base model: ``with plan.applied(model):`` writes the compressed
weights in place and restores the originals bit for bit on exit, and
:meth:`CompressionPlan.apply_copy` returns a compressed deep copy.

Every operation works on the *linear view* of a weight, ``[d_in, d_out]`` such that the layer
computes ``x @ W`` (:func:`to_linear`): TransformerLens stores ``W_Q`` as
``[n_heads, d_model, d_head]``, whose linear view is ``[d_model, n_heads * d_head]``. "Per
channel" always means per output column of this view, and the activations that feed a weight
are named by :func:`analysis.hooks.input_hook`.

Size accounting (:class:`Stored`) counts what a real format must store:

- dense values at their bit width;
- a pruned matrix as a bitmask (1 bit per entry) plus its non-zero values, or dense if
  that is smaller;
- quantization scales as 16-bit floats and zero-points (asymmetric only) at ``bits`` bits,
  one per group (the whole tensor, or each output channel);
- low-rank factors as their own dense values.

One module per operation family:

- :mod:`~analysis.compress.plan`: :class:`CompressionPlan`, :class:`Stored`, :class:`Calibration`,
  :class:`SizeReport` and the memo of compressed weights;
- :mod:`~analysis.compress.linear`: the linear view and the head slices inside it;
- :mod:`~analysis.compress.prune`: :class:`Prune` (unstructured magnitude pruning), :class:`WandaPrune`
  (Wanda's ``|w| ‖x‖`` per output);
- :mod:`~analysis.compress.quantize`: :class:`Quantize` (uniform round-to-nearest);
- :mod:`~analysis.compress.heads`: :class:`PruneHeads`, :class:`HeadSparsity`;
- :mod:`~analysis.compress.lowrank`: :class:`SVD`, :class:`FWSVD`, :class:`ASVD`,
  :class:`SVDLLM` and :func:`factorization_plan`;
- :mod:`~analysis.compress.calibration`: :func:`calibration_stats`, the data those read;
- :mod:`~analysis.compress.rotation`: QuaRot-style norm folding, randomized Hadamard rotation
  and RTN, and the error amplification of factor-then-quantize;
- :mod:`~analysis.compress.linear_block`: a whole block replaced by a least-squares map, with
  its true size;
- :mod:`~analysis.compress.oracle`: the measured cost (Δ log-perplexity per eval window) of
  pruning, quantizing or removing each attention, MLP or block alone, cell by cell and cached.
"""

from analysis.components import (
    ATTN_WEIGHTS,
    KINDS,
    MLP_WEIGHTS,
    component,
    components,
    parameter_name,
    weights_of,
)
from analysis.compress import linear_block, oracle, rotation
from analysis.compress.calibration import STAT_KINDS, calibration_stats, wanda_calibration
from analysis.compress.heads import HeadSparsity, PruneHeads
from analysis.compress.linear import from_linear, to_linear
from analysis.compress.lowrank import (
    ASVD,
    FACTOR_EPS,
    FACTOR_METHODS,
    FACTORIZATIONS,
    FWSVD,
    STATS_NEEDED,
    SVD,
    SVDLLM,
    WHITEN_DAMPING,
    factor_params,
    factorization,
    factorization_plan,
    mlp_weights,
    rank_for_ratio,
    whitening_factor,
)
from analysis.compress.plan import (
    SCALE_BITS,
    Calibration,
    CompressionPlan,
    Operation,
    SizeReport,
    Stored,
    uniform_plan,
    weight_hash,
)
from analysis.compress.prune import Prune, WandaPrune
from analysis.compress.quantize import Quantize

__all__ = [
    "ASVD",
    "ATTN_WEIGHTS",
    "FACTORIZATIONS",
    "FACTOR_EPS",
    "FACTOR_METHODS",
    "FWSVD",
    "KINDS",
    "MLP_WEIGHTS",
    "SCALE_BITS",
    "STATS_NEEDED",
    "STAT_KINDS",
    "SVD",
    "SVDLLM",
    "WHITEN_DAMPING",
    "CompressionPlan",
    "Calibration",
    "HeadSparsity",
    "Operation",
    "Prune",
    "WandaPrune",
    "PruneHeads",
    "Quantize",
    "SizeReport",
    "Stored",
    "calibration_stats",
    "wanda_calibration",
    "component",
    "components",
    "factor_params",
    "factorization",
    "factorization_plan",
    "from_linear",
    "mlp_weights",
    "parameter_name",
    "rank_for_ratio",
    "to_linear",
    "uniform_plan",
    "weight_hash",
    "weights_of",
    "whitening_factor",
    "linear_block",
    "oracle",
    "rotation",
]
