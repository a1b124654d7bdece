"""Plans: which operations touch which weights, applied reversibly and sized honestly.

A :class:`CompressionPlan` maps components (``"blocks.3.mlp"``, or one weight such as
``"blocks.3.attn.W_Q"``; see :mod:`analysis.components`) to a list of operations. Each weight
is taken in its linear view (:func:`analysis.compress.linear.to_linear`) as a :class:`Stored`
at the plan's dense bit width, passed through the operations in order, and written back.
``with plan.applied(model):`` restores the originals bit for bit on exit, even after an error;
:meth:`CompressionPlan.apply_copy` compresses a deep copy instead; :meth:`CompressionPlan.size`
only counts. Every path returns a :class:`SizeReport`.

A sweep applies the same few (weight, operations) pairs over and over, so the results of
data-free operations (those with ``data_free = True``: pruning and quantization, which read
nothing but the weight) are remembered up to :data:`MEMO_BYTES`, keyed by the weight's content
hash (:func:`weight_hash`), computed at every application: a hit costs one hashing pass and
one copy instead of the operations.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Iterator, Mapping, Protocol, Sequence

import torch
from jaxtyping import Bool, Float
from torch import Tensor
from transformer_lens import HookedEncoder, HookedTransformer

from analysis.cache import tensors_hash
from analysis.components import KINDS, components, parameter_name, weights_of
from analysis.compress.linear import from_linear, to_linear
from analysis.models import n_params

SCALE_BITS = 16
"""Bits stored per quantization scale (an fp16 number)."""

MEMO_BYTES = 2 * 2**30
"""Memory the compressed-weight memo may hold (set ``analysis.compress.plan.MEMO_BYTES = 0`` to turn it off)."""


def check_fraction(fraction: float, what: str) -> None:
    """Raise ValueError unless ``fraction`` lies in ``[0, 1)`` (NaN included)."""
    if not (0.0 <= float(fraction) < 1.0):
        raise ValueError(f"{what} must lie in [0, 1), got {fraction!r} (0 keeps every weight; 1 would remove all).")


@dataclass
class Stored:
    """A weight as it would be stored: its (dequantized) values and what storing them costs.

    ``weight`` is the linear view ``[d_in, d_out]`` the model computes with. ``mask`` marks
    kept entries after pruning (``None``: dense). ``value_bits`` is the width of each stored
    value, ``n_values`` how many values a dense store holds (``d_in * d_out``, or the factors'
    entries), and ``overhead_bits`` the scales and zero-points.
    """

    weight: Float[Tensor, "d_in d_out"]
    value_bits: float
    n_values: int
    mask: Bool[Tensor, "d_in d_out"] | None = None
    overhead_bits: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def bits(self) -> int:
        """Total bits: the cheaper of a dense store and a bitmask + non-zeros store, plus overhead."""
        dense = self.n_values * self.value_bits
        if self.mask is not None:
            sparse = self.mask.numel() + int(torch.count_nonzero(self.mask)) * self.value_bits
            dense = min(dense, sparse)
        return int(round(dense)) + self.overhead_bits


@dataclass
class Calibration:
    """What data-aware operations may need: the model and named calibration statistics.

    ``stats`` maps a key such as ``"xtx:blocks.0.ln2.hook_normalized"`` to a tensor (shapes in
    :data:`analysis.compress.calibration.STAT_KINDS`); operations that need a statistic raise a
    clear error naming it when it is missing.
    """

    model: object = None
    stats: dict[str, Float[Tensor, "..."]] = field(default_factory=dict)

    def require(self, key: str, what: str) -> Float[Tensor, "..."]:
        """The statistic ``key``, or a ValueError saying that ``what`` needs it."""
        if key not in self.stats:
            raise ValueError(
                f"{what} needs calibration statistic {key!r}; compute it first "
                f"(e.g. analysis.compress.calibration_stats) and pass it in the plan's calibration."
            )
        return self.stats[key]


class Operation(Protocol):
    """One compression step: a frozen (hashable) dataclass called on a :class:`Stored`.

    ``data_free`` is True for operations whose result depends on nothing but the weight's
    values (their results may be remembered); operations without the attribute count as False.
    """

    def __call__(self, stored: Stored, *, name: str, calibration: Calibration) -> Stored:
        """The compressed version of ``stored`` (the weight ``name``; ``calibration`` gives data)."""
        ...


@dataclass
class SizeReport:
    """Bits of the compressed weights, per weight and in total, against the same weights dense."""

    per_weight: dict[str, int]
    base_bits: int
    """The same weights stored densely at the base bit width."""
    n_weights: int
    """Entries in the targeted weights."""
    model_params: int
    """All parameters of the model (embeddings included; a tied unembedding once)."""
    dense_bits: int

    @property
    def bits(self) -> int:
        """Stored bits of the targeted weights."""
        return sum(self.per_weight.values())

    @property
    def bits_per_weight(self) -> float:
        """Average stored bits per original entry of the targeted weights."""
        return self.bits / max(1, self.n_weights)

    @property
    def ratio(self) -> float:
        """Compressed bits / dense bits of the targeted weights."""
        return self.bits / max(1, self.base_bits)

    @property
    def model_bits(self) -> int:
        """The whole model: compressed weights plus every other parameter at ``dense_bits``."""
        return self.bits + (self.model_params - self.n_weights) * self.dense_bits


@dataclass
class CompressionPlan:
    """``{component: [operation, ...]}``, applied in order to every weight of the component.

    >>> plan = CompressionPlan({"blocks.0.mlp": [Prune(0.2), Quantize(4)]})
    >>> with plan.applied(model):
    ...     loss = model(tokens, return_type="loss")
    """

    ops: Mapping[str, Sequence[Operation]]
    dense_bits: int = 16
    """Bit width of an uncompressed weight (the reference for sizes): fp16, as models ship."""
    calibration: Calibration = field(default_factory=Calibration)

    def __post_init__(self):
        self.ops = {name: list(ops) if isinstance(ops, (list, tuple)) else [ops] for name, ops in self.ops.items()}
        for name, ops in self.ops.items():
            for op in ops:
                if isinstance(op, type):
                    raise TypeError(
                        f"The plan for {name!r} names the class {op.__name__}, not an operation: create one "
                        f"with its settings, e.g. {op.__name__}(4) for Quantize or {op.__name__}(0.5) for Prune."
                    )
                if not callable(op):
                    raise TypeError(f"The plan for {name!r} holds {op!r}, which is no operation (e.g. Quantize(4)).")

    def targets(
        self, model: HookedTransformer | HookedEncoder, params: Mapping[str, Tensor] | None = None
    ) -> dict[str, list[Operation]]:
        """``{weight name: operations}``, components expanded; a weight named twice is an error."""
        params = dict(model.named_parameters()) if params is None else params
        out: dict[str, list[Operation]] = {}
        for name, ops in self.ops.items():
            for w in weights_of(model, name, params):
                if w in out:
                    raise ValueError(f"Weight {w!r} is covered twice in the plan (by {name!r} and another entry).")
                out[w] = list(ops)
        return out

    def compress_weight(self, model: HookedTransformer | HookedEncoder, weight: str) -> Stored:
        """The stored form of one targeted weight after its operations (no memo, no model change)."""
        params = dict(model.named_parameters())
        return self._run(model, params, weight, self.targets(model, params)[weight])

    def _run(self, model, params: Mapping[str, Tensor], weight: str, ops: Sequence[Operation]) -> Stored:
        param = params[parameter_name(model, weight, params)]
        lin = to_linear(weight, param.detach())  # operations never modify their input in place
        stored = Stored(lin, float(self.dense_bits), lin.numel())
        ctx = (
            self.calibration
            if self.calibration.model is not None
            else dataclasses.replace(self.calibration, model=model)
        )
        for op in ops:
            stored = op(stored, name=weight, calibration=ctx)
        return stored

    def size(self, model: HookedTransformer | HookedEncoder) -> SizeReport:
        """The true stored size of the targeted weights (no model change)."""
        return self._apply(model, dict(model.named_parameters()), None)

    @contextlib.contextmanager
    def applied(self, model: HookedTransformer | HookedEncoder) -> Iterator[SizeReport]:
        """Compress ``model`` in place for the ``with`` block; originals come back bit for bit after.

        Each weight's storage is swapped (``param.data``): a tensor of compressed values (a copy,
        never the memo's own) is put in, the original tensor, untouched, is put back on exit, even
        after an error. A weight written inside the block writes into that copy only.
        """
        params = dict(model.named_parameters())
        saved: dict[str, Tensor] = {}  # parameter: original tensor
        try:
            yield self._apply(model, params, saved)
        finally:
            for pname, original in saved.items():
                params[pname].data = original

    def apply_copy(self, model: HookedTransformer | HookedEncoder) -> tuple[object, SizeReport]:
        """A compressed deep copy of ``model`` and its size; ``model`` is untouched."""
        clone = copy.deepcopy(model)
        return clone, self._apply(clone, dict(clone.named_parameters()), None, write=True)

    def _apply(self, model, params: Mapping[str, Tensor], saved: dict | None, write: bool = False) -> SizeReport:
        """Compress every target and size it. With ``saved``, swap each compressed tensor in (the
        originals go into ``saved``); with ``write``, copy it in; else only count."""
        per, n = {}, 0
        with _one_thread():
            for w, ops in self.targets(model, params).items():
                pname = parameter_name(model, w, params)
                p = params[pname]
                key = _memo_key(p, w, ops, self.dense_bits)
                hit = _MEMO.get(key) if key else None
                if hit is None:
                    stored = self._run(model, params, w, ops)
                    tensor = from_linear(w, stored.weight, p).to(dtype=p.dtype, device=p.device)
                    if (
                        not tensor.is_contiguous()
                        or tensor.untyped_storage().data_ptr() == p.untyped_storage().data_ptr()
                    ):
                        tensor = tensor.clone(memory_format=torch.contiguous_format)  # never alias the original
                    hit = _Compressed(tensor, stored.bits)
                    if key:
                        _memo_put(key, hit)
                else:
                    _MEMO.move_to_end(key)
                if saved is not None:
                    saved[pname] = p.data
                    p.data = hit.tensor.clone() if key else hit.tensor  # the memo's values stay its own
                elif write:
                    with torch.no_grad():
                        p.copy_(hit.tensor)
                per[w] = hit.bits
                n += p.numel()
        return SizeReport(per, n * self.dense_bits, n, n_params(model), self.dense_bits)


@dataclass(frozen=True)
class _Compressed:
    """A weight's compressed values in its TransformerLens shape, and its stored bits."""

    tensor: Float[Tensor, "..."]
    bits: int


def uniform_plan(
    model: HookedTransformer | HookedEncoder, ops: Sequence[Operation], kinds: Sequence[str] = KINDS, **kw
) -> CompressionPlan:
    """The same operations on every ``attn``/``mlp`` component of every layer."""
    return CompressionPlan({c: list(ops) for c in components(model, kinds)}, **kw)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run the weight operations on one thread. They are many memory-bound passes over
    matrices of a few MB, where waking a second OpenMP thread costs more than it saves, and
    on a busy machine far more (measured: a 3.5 MB ``abs`` takes 0.2 ms on one thread and 8 ms
    on two when the cores are contended)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


# ---- The compressed-weight memo ----
#
# Keys are (weight name, content hash, operations, dense bits). The content hash
# (analysis.cache.tensors_hash: BLAKE2b of the bytes, so a permutation of the same entries is
# a different key) is computed every time: a write through ``.data`` moves neither the
# tensor's ``_version`` nor its storage, so no cheaper test tells that the values changed.

_MEMO: "collections.OrderedDict[tuple, _Compressed]" = collections.OrderedDict()
_MEMO_SIZE = 0


def weight_hash(p: Float[Tensor, "..."]) -> str:
    """The content hash (:func:`analysis.cache.tensors_hash`) of ``p``'s current values."""
    return tensors_hash([p])


def _memo_key(p: Tensor, weight: str, ops: Sequence[Operation], dense_bits: int) -> tuple | None:
    if MEMO_BYTES <= 0 or not ops or not all(getattr(op, "data_free", False) for op in ops):
        return None
    return (weight, weight_hash(p), tuple(ops), dense_bits)


def _nbytes(c: _Compressed) -> int:
    return c.tensor.numel() * c.tensor.element_size()


def _memo_put(key: tuple, compressed: _Compressed) -> None:
    global _MEMO_SIZE
    _MEMO[key] = compressed
    _MEMO_SIZE += _nbytes(compressed)
    while _MEMO and _MEMO_SIZE > MEMO_BYTES:
        _, old = _MEMO.popitem(last=False)
        _MEMO_SIZE -= _nbytes(old)
