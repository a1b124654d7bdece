"""Compression plans: which operation touches which weight, applied reversibly, sized honestly.

A :class:`CompressionPlan` maps *components* to *operations*. A component is a layer's
attention (``"blocks.3.attn"``), a layer's MLP (``"blocks.3.mlp"``) or one weight matrix
(``"blocks.3.mlp.W_in"``, ``"blocks.3.attn.W_O"``), named as TransformerLens names the
parameters. An operation (:class:`Prune`, :class:`Quantize`, and the factorization and
head operations added by later studies) takes a weight and returns its compressed version
together with the bits needed to store it.

Plans never corrupt the base model: ``with plan.applied(model):`` writes the compressed
weights in place and restores the originals bit for bit on exit, and :meth:`CompressionPlan.apply_copy`
returns a compressed deep copy.

Every operation works on the *linear view* of a weight, ``[d_in, d_out]`` such that the layer
computes ``x @ W``: TransformerLens stores ``W_Q`` as ``[n_heads, d_model, d_head]``, whose
linear view is ``[d_model, n_heads * d_head]``. "Per channel" always means per output column
of this view, and the activations that feed a weight are named by :func:`input_hook`.

Size accounting (:class:`Stored`) counts what a real format must store:

- dense values at their bit width;
- a pruned matrix as a bitmask (1 bit per entry) plus its non-zero values, or dense if
  that is smaller;
- quantization scales as 16-bit floats and zero-points (asymmetric only) at ``bits`` bits,
  one per group (the whole tensor, or each output channel);
- low-rank factors as their own dense values.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import dataclasses
import re
from dataclasses import dataclass, field
from typing import Iterator, Literal, Mapping, Protocol, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

SCALE_BITS = 16
"""Bits stored per quantization scale (an fp16 number)."""

ATTN_WEIGHTS = ("W_Q", "W_K", "W_V", "W_O")
MLP_WEIGHTS = ("W_in", "W_gate", "W_out")
KINDS = ("attn", "mlp")


# --------------------------------------------------------------------------------------
# Components and the linear view of TransformerLens weights
# --------------------------------------------------------------------------------------

_COMPONENT = re.compile(r"^blocks\.(\d+)\.(attn|mlp)(?:\.(W_\w+))?$")


def component(layer: int, kind: str) -> str:
    """The component name of ``kind`` ("attn" or "mlp") in ``layer``: ``"blocks.{layer}.{kind}"``."""
    if kind not in KINDS:
        raise ValueError(f"Unknown component kind {kind!r}; use one of {KINDS}.")
    return f"blocks.{layer}.{kind}"


def components(model, kinds: Sequence[str] = KINDS) -> list[str]:
    """Every ``blocks.{l}.{kind}`` component of ``model``, layer by layer."""
    return [component(l, k) for l in range(model.cfg.n_layers) for k in kinds]


def parameter_name(model, weight: str, params: Mapping[str, Tensor] | None = None) -> str:
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


def weights_of(model, name: str, params: Mapping[str, Tensor] | None = None) -> list[str]:
    """The weight names a component stands for (one, for a weight name), checked against ``model``.

    >>> weights_of(model, "blocks.0.mlp")  # llama: gated MLP
    ['blocks.0.mlp.W_in', 'blocks.0.mlp.W_gate', 'blocks.0.mlp.W_out']
    """
    m = _COMPONENT.match(name)
    if m is None:
        raise ValueError(
            f"Unknown component {name!r}. Name a layer's 'blocks.<l>.attn' or 'blocks.<l>.mlp', "
            f"or one weight such as 'blocks.<l>.mlp.W_in' (see analysis.compress.components(model))."
        )
    layer, kind, weight = int(m.group(1)), m.group(2), m.group(3)
    if layer >= model.cfg.n_layers:
        raise ValueError(f"Component {name!r}: the model has only {model.cfg.n_layers} layers (0..{model.cfg.n_layers - 1}).")
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


def _is_encoder(model) -> bool:
    """BERT-style post-LN blocks (TransformerLens ``HookedEncoder``)."""
    return model is not None and getattr(getattr(model, "cfg", None), "original_architecture", "") in (
        "BertForMaskedLM", "BertForPreTraining", "BertModel")


def input_hook(weight: str, model=None) -> str:
    """The TransformerLens hook whose activations are the input ``x`` of ``x @ W`` for ``weight``.

    Q/K/V read ``ln1.hook_normalized``, ``W_O`` reads ``attn.hook_z`` (heads concatenated),
    the MLP's input weights read ``ln2.hook_normalized`` and ``W_out`` reads ``mlp.hook_post``.
    A BERT encoder (``model`` a ``HookedEncoder``) is post-LN: Q/K/V read ``hook_resid_pre``
    and the MLP's input weights ``ln1.hook_normalized``. Two cautions: ``hook_normalized`` precedes the norm's weight (apply :func:`norm_output`),
    and ``ln1`` runs once each for Q, K and V, so its hook fires three times per forward.
    """
    m = _COMPONENT.match(weight)
    if m is None or m.group(3) is None:
        raise ValueError(f"{weight!r} is not a weight name such as 'blocks.0.mlp.W_in'.")
    l, w = m.group(1), m.group(3).lstrip("_")
    if _is_encoder(model) and w in ("W_Q", "W_K", "W_V", "W_in", "W_gate"):
        return f"blocks.{l}.hook_resid_pre" if w in ("W_Q", "W_K", "W_V") else f"blocks.{l}.ln1.hook_normalized"
    return {
        "W_Q": f"blocks.{l}.ln1.hook_normalized",
        "W_K": f"blocks.{l}.ln1.hook_normalized",
        "W_V": f"blocks.{l}.ln1.hook_normalized",
        "W_O": f"blocks.{l}.attn.hook_z",
        "W_in": f"blocks.{l}.ln2.hook_normalized",
        "W_gate": f"blocks.{l}.ln2.hook_normalized",
        "W_out": f"blocks.{l}.mlp.hook_post",
    }[w]


def norm_output(model, hook_name: str, act: Tensor) -> Tensor:
    """The input ``x`` of a weight from the activations at its :func:`input_hook`.

    TransformerLens's ``ln*.hook_normalized`` fires *before* the norm's own weight (and bias);
    unless the model was loaded with ``fold_ln=True`` (ours are not), the weight that follows
    reads ``act * ln.w (+ ln.b)``. Other hooks are returned unchanged.
    """
    if not hook_name.endswith("hook_normalized"):
        return act
    norm = model.get_submodule(hook_name.rsplit(".", 1)[0])
    w, b = getattr(norm, "w", None), getattr(norm, "b", None)
    if w is not None:
        act = act * w.detach()
    return act + b.detach() if b is not None else act


def to_linear(weight: str, w: Tensor) -> Float[Tensor, "d_in d_out"]:
    """The ``[d_in, d_out]`` view of a TransformerLens weight (a reshape, no copy where possible)."""
    kind = weight.rsplit(".", 1)[-1].lstrip("_")
    if w.ndim == 2:
        return w
    if kind in ("W_Q", "W_K", "W_V"):  # [head, d_model, d_head]
        return w.permute(1, 0, 2).reshape(w.shape[1], -1)
    if kind == "W_O":  # [head, d_head, d_model]
        return w.reshape(-1, w.shape[-1])
    raise ValueError(f"No linear view for {weight!r} of shape {tuple(w.shape)}.")


def from_linear(weight: str, lin: Tensor, like: Tensor) -> Tensor:
    """Inverse of :func:`to_linear`: ``lin`` reshaped to ``like``'s TransformerLens shape."""
    kind = weight.rsplit(".", 1)[-1].lstrip("_")
    if like.ndim == 2:
        return lin.reshape(like.shape)
    if kind in ("W_Q", "W_K", "W_V"):
        h, d, e = like.shape
        return lin.reshape(d, h, e).permute(1, 0, 2).contiguous()
    return lin.reshape(like.shape)


# --------------------------------------------------------------------------------------
# Stored weights and operations
# --------------------------------------------------------------------------------------


@dataclass
class Stored:
    """A weight as it would be stored: its (dequantized) values and what storing them costs.

    ``weight`` is the linear view ``[d_in, d_out]`` the model computes with. ``mask`` marks
    kept entries after pruning (``None``: dense). ``value_bits`` is the width of each stored
    value, ``n_values`` how many values a dense store holds (``d_in * d_out``, or the factors'
    entries), and ``overhead_bits`` the scales and zero-points.
    """

    weight: Tensor
    value_bits: float
    n_values: int
    mask: Tensor | None = None
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


class Operation(Protocol):
    """One compression step. Later studies add factorization and head operations of this shape."""

    def __call__(self, stored: Stored, *, name: str, context: "Context") -> Stored:
        """The compressed version of ``stored`` (the weight ``name``; ``context`` gives data)."""
        ...


@dataclass
class Context:
    """What data-aware operations may need: the model and named calibration statistics.

    ``stats`` maps a key such as ``"xtx:blocks.0.ln2.hook_normalized"`` to a tensor; operations
    that need a statistic raise a clear error naming it when it is missing.
    """

    model: object = None
    stats: dict[str, Tensor] = field(default_factory=dict)

    def require(self, key: str, what: str) -> Tensor:
        if key not in self.stats:
            raise ValueError(f"{what} needs calibration statistic {key!r}; compute it first "
                             f"(e.g. analysis.compress.calibration_stats) and pass it in the plan's context.")
        return self.stats[key]


def _check_fraction(fraction: float, what: str) -> None:
    if not (0.0 <= float(fraction) < 1.0):
        raise ValueError(f"{what} must lie in [0, 1), got {fraction!r} (0 keeps every weight; 1 would remove all).")


@dataclass(frozen=True)
class Prune:
    """Unstructured magnitude pruning: zero the ``fraction`` of entries with smallest ``|w|``.

    Exactly ``round(fraction * numel)`` entries are zeroed (ties broken by position).
    """

    fraction: float

    def __post_init__(self):
        _check_fraction(self.fraction, "Prune fraction")

    def __call__(self, stored: Stored, *, name: str = "", context: Context | None = None) -> Stored:
        w = stored.weight
        k = int(round(self.fraction * w.numel()))
        if k == 0:
            return stored
        mag = w.detach().abs().flatten()
        keep, t, n_less = _keep_above_kth(mag, k, name)
        if w.numel() - int(torch.count_nonzero(keep)) > k:  # ties at t: zero the first (k - n_less), keep the rest
            ties = (mag == t).nonzero().flatten()
            keep[ties[k - n_less:]] = True
        keep = keep.view_as(w)
        if stored.mask is not None:
            keep &= stored.mask
        return dataclasses.replace(stored, weight=torch.where(keep, w, 0.0), mask=keep)


_KTH: dict[tuple, Tensor] = {}


def _keep_above_kth(mag: Tensor, k: int, name: str = "") -> tuple[Tensor, Tensor, int]:
    """``(mag > t, t, #(mag < t))`` for ``t`` the k-th smallest value of ``mag``.

    A sweep prunes the same weights at the same few fractions over and over, so ``t`` is
    remembered per (weight name, size, k, a strided checksum) as a hint, used only after
    checking ``#(mag < t) < k <= #(mag <= t)``, which holds exactly for the k-th value; the
    selection itself (O(n)) runs only when the hint is missing or wrong.
    """
    key = (name, mag.numel(), k, float(mag[::97].sum()))
    t = _KTH.get(key)
    if t is not None:
        keep = mag > t
        n_less = int(torch.count_nonzero(mag < t))
        if n_less < k <= mag.numel() - int(torch.count_nonzero(keep)):
            return keep, t, n_less
    t = mag.kthvalue(k).values
    if len(_KTH) > 100_000:
        _KTH.clear()
    _KTH[key] = t
    return mag > t, t, int(torch.count_nonzero(mag < t))


@dataclass(frozen=True)
class Quantize:
    """Uniform round-to-nearest post-training quantization to ``bits`` bits.

    ``granularity``: one scale for the tensor, or one per output channel (column of the
    linear view). ``symmetric``: levels ``s * q`` with ``q`` in ``[-2^(b-1), 2^(b-1) - 1]`` and
    ``s = max|w| / (2^(b-1) - 1)``; asymmetric: levels ``s * (q - z)`` with ``q`` in
    ``[0, 2^b - 1]`` spanning ``[min w, max w]``. Either way there are at most ``2^bits``
    distinct values per group. Pruned entries stay exactly zero.
    """

    bits: int
    granularity: Literal["tensor", "channel"] = "channel"
    symmetric: bool = True

    def __post_init__(self):
        if not isinstance(self.bits, int) or not 1 <= self.bits <= 32:
            raise ValueError(f"Quantize bits must be an integer in [1, 32], got {self.bits!r}.")
        if self.symmetric and self.bits < 2:
            raise ValueError("Symmetric 1-bit quantization has no levels besides zero; use symmetric=False for 1 bit.")
        if self.granularity not in ("tensor", "channel"):
            raise ValueError(f"granularity must be 'tensor' or 'channel', got {self.granularity!r}.")

    def __call__(self, stored: Stored, *, name: str = "", context: Context | None = None) -> Stored:
        # float32 represents every level of up to 16 bits exactly enough; wider grids need float64
        w = stored.weight.detach().to(torch.float64 if self.bits > 16 else torch.float32)
        channel = self.granularity == "channel"
        groups = w.shape[1] if channel else 1
        lo, hi = torch.aminmax(w, dim=0, keepdim=True) if channel else w.aminmax()  # per group
        if self.symmetric:
            qmax = 2 ** (self.bits - 1) - 1
            scale = (torch.maximum(-lo, hi) / qmax).clamp(min=1e-30)  # max |w| without an |w| copy
            out = (w / scale).round_().clamp_(-qmax - 1, qmax).mul_(scale)  # in place: one buffer
            overhead = groups * SCALE_BITS
        else:
            qmax = 2**self.bits - 1
            scale = ((hi - lo) / qmax).clamp(min=1e-30)
            zero = (-lo / scale).round()
            out = (w / scale).round_().add_(zero).clamp_(0, qmax).sub_(zero).mul_(scale)
            overhead = groups * (SCALE_BITS + self.bits)
        if stored.mask is not None and not self.symmetric:  # symmetric grids map 0 to exactly 0
            out.masked_fill_(~stored.mask, 0.0)
        return dataclasses.replace(stored, weight=out.to(stored.weight.dtype), value_bits=self.bits,
                                   overhead_bits=stored.overhead_bits + overhead)


# --------------------------------------------------------------------------------------
# Plans
# --------------------------------------------------------------------------------------


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
    context: Context = field(default_factory=Context)

    def __post_init__(self):
        self.ops = {name: list(ops) if isinstance(ops, (list, tuple)) else [ops] for name, ops in self.ops.items()}

    def targets(self, model, params: Mapping[str, Tensor] | None = None) -> dict[str, list[Operation]]:
        """``{weight name: operations}``, components expanded; a weight named twice is an error."""
        params = dict(model.named_parameters()) if params is None else params
        out: dict[str, list[Operation]] = {}
        for name, ops in self.ops.items():
            for w in weights_of(model, name, params):
                if w in out:
                    raise ValueError(f"Weight {w!r} is covered twice in the plan (by {name!r} and another entry).")
                out[w] = list(ops)
        return out

    def compress_weight(self, model, weight: str) -> Stored:
        """The stored form of one targeted weight after its operations."""
        params = dict(model.named_parameters())
        return self._run(model, params, weight, self.targets(model, params)[weight])

    def _run(self, model, params: Mapping[str, Tensor], weight: str, ops: Sequence[Operation]) -> Stored:
        param = params[parameter_name(model, weight, params)]
        lin = to_linear(weight, param.detach())  # operations never modify their input in place
        stored = Stored(lin, float(self.dense_bits), lin.numel())
        ctx = self.context if self.context.model is not None else dataclasses.replace(self.context, model=model)
        for op in ops:
            stored = op(stored, name=weight, context=ctx)
        return stored

    def size(self, model) -> SizeReport:
        """The true stored size of the targeted weights (no model change)."""
        return self._apply(model, dict(model.named_parameters()), None)

    @contextlib.contextmanager
    def applied(self, model) -> Iterator[SizeReport]:
        """Compress ``model`` in place for the ``with`` block; originals come back bit for bit after."""
        params = dict(model.named_parameters())
        saved: dict[str, Tensor] = {}
        try:
            report = self._apply(model, params, saved)
            yield report
        finally:
            with torch.no_grad(), _one_thread():
                for pname, (original, fingerprint) in saved.items():
                    p = params[pname]
                    p.copy_(original)
                    if fingerprint is not None:  # the same values again, under a new version
                        _FINGERPRINTS[_version(p)] = fingerprint

    def apply_copy(self, model) -> tuple[object, SizeReport]:
        """A compressed deep copy of ``model`` and its size; ``model`` is untouched."""
        clone = copy.deepcopy(model)
        report = self._apply(clone, dict(clone.named_parameters()), {})
        return clone, report

    def _apply(self, model, params: Mapping[str, Tensor], saved: dict | None) -> SizeReport:
        """Compress every target (writing into the model unless ``saved`` is None) and size it."""
        with _one_thread():
            return self._apply_all(model, params, saved)

    def _apply_all(self, model, params: Mapping[str, Tensor], saved: dict | None) -> SizeReport:
        per, n = {}, 0
        for w, ops in self.targets(model, params).items():
            pname = parameter_name(model, w, params)
            p = params[pname]
            memo_key = _memo_key(p, w, ops, self.dense_bits)
            stored = _MEMO.get(memo_key) if memo_key else None
            if stored is None:
                stored = self._run(model, params, w, ops)
                if memo_key:
                    _memo_put(memo_key, stored)
            else:
                _MEMO.move_to_end(memo_key)
            if saved is not None:
                saved.setdefault(pname, (p.detach().clone(), memo_key[1] if memo_key else None))
                with torch.no_grad():
                    p.copy_(from_linear(w, stored.weight, p))
            per[w] = stored.bits
            n += p.numel()
        from analysis.models import n_params  # a tied unembedding counts once, as stored

        return SizeReport(per, n * self.dense_bits, n, n_params(model), self.dense_bits)

    def describe(self) -> str:
        """One line per component: its operations."""
        return "\n".join(f"{name}: {', '.join(map(repr, ops))}" for name, ops in self.ops.items())


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


# A sweep applies the same few (weight, operations) pairs to the same weights over and over.
# Data-free operations (pruning, quantization) depend on nothing but the weight, so their
# result is remembered, keyed by the weight's content, up to MEMO_BYTES; a hit costs one copy.
# The content key is a fingerprint computed once per parameter version; restoring a parameter
# to its original values (CompressionPlan.applied) registers the new version with the original
# fingerprint.

MEMO_BYTES = 2 * 2**30
"""Memory the compressed-weight memo may hold (set to 0 to turn it off)."""
_MEMO: "collections.OrderedDict[tuple, Stored]" = collections.OrderedDict()
_MEMO_SIZE = 0
_FINGERPRINTS: dict[tuple, tuple] = {}


def _version(p: Tensor) -> tuple:
    return (id(p), p.data_ptr(), p._version)


def _fingerprint(p: Tensor) -> tuple:
    """A content key for a parameter: shape, dtype, its sum and an order-sensitive strided sum."""
    key = _version(p)
    if key not in _FINGERPRINTS:
        if len(_FINGERPRINTS) > 1_000_000:
            _FINGERPRINTS.clear()
        flat = p.detach().flatten()
        _FINGERPRINTS[key] = (tuple(p.shape), str(p.dtype), float(flat.sum()), float(flat[::61].sum()),
                              float(flat[-1]))
    return _FINGERPRINTS[key]


def _memo_key(p: Tensor, weight: str, ops: Sequence[Operation], dense_bits: int) -> tuple | None:
    if MEMO_BYTES <= 0 or not ops or not all(type(op) in (Prune, Quantize) for op in ops):
        return None
    return (weight, _fingerprint(p), tuple(ops), dense_bits)


def _memo_put(key: tuple, stored: Stored) -> None:
    global _MEMO_SIZE
    size = lambda s: s.weight.numel() * s.weight.element_size() + (s.mask.numel() if s.mask is not None else 0)  # noqa: E731
    _MEMO[key] = stored
    _MEMO_SIZE += size(stored)
    while _MEMO and _MEMO_SIZE > MEMO_BYTES:
        _, old = _MEMO.popitem(last=False)
        _MEMO_SIZE -= size(old)


def uniform_plan(model, ops: Sequence[Operation], kinds: Sequence[str] = KINDS, **kw) -> CompressionPlan:
    """The same operations on every ``attn``/``mlp`` component of every layer."""
    return CompressionPlan({c: list(ops) for c in components(model, kinds)}, **kw)


# ---- Heads ----
#
# An attention layer is a sum of heads, so a head is the natural unit of structured pruning
# (Michel et al. 2019). In the linear view, head h owns columns h*d_head:(h+1)*d_head of W_Q,
# W_K and W_V and rows h*d_head:(h+1)*d_head of W_O. Under grouped-query attention (SmolLM2:
# 9 query heads, 3 key-value heads) g = n_heads / n_kv consecutive query heads share one K/V
# slice. We therefore prune a query head by zeroing its W_Q columns and W_O rows (its output
# is then exactly zero), and remove a K/V slice only when every query head of its group goes;
# per-head sparsity gives a shared K/V slice the mean of its query heads' sparsities.


def _head_layout(stored: Stored, name: str, context: Context | None) -> tuple[str, int, int, int]:
    """``(kind, units, d_head, group)`` of an attention weight: heads along columns (Q/K/V) or rows (O)."""
    kind = name.rsplit(".", 1)[-1].lstrip("_")
    if kind not in ATTN_WEIGHTS:
        raise ValueError(f"Head operations apply to attention weights {ATTN_WEIGHTS}, not {name!r}.")
    cfg = getattr(getattr(context, "model", None), "cfg", None)
    if cfg is None:
        raise ValueError(f"Head operations on {name!r} need the model (its n_heads and d_head) in the context.")
    n_kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    width = stored.weight.shape[0] if kind == "W_O" else stored.weight.shape[1]
    return kind, width // cfg.d_head, cfg.d_head, cfg.n_heads // n_kv


def _unit_view(w: Tensor, kind: str, d_head: int) -> Tensor:
    """``[units, d_in * d_head]``-shaped view of a weight's head slices (a copy for Q/K/V)."""
    if kind == "W_O":
        return w.reshape(-1, d_head * w.shape[1])
    return w.reshape(w.shape[0], -1, d_head).permute(1, 0, 2).reshape(-1, w.shape[0] * d_head)


def _from_unit_view(u: Tensor, kind: str, d_head: int, like: Tensor) -> Tensor:
    if kind == "W_O":
        return u.reshape(like.shape)
    return u.reshape(-1, like.shape[0], d_head).permute(1, 0, 2).reshape(like.shape)


@dataclass(frozen=True)
class PruneHeads:
    """Structured pruning of whole query heads (indices within the layer).

    Zeroes each head's W_Q columns and W_O rows; a K/V slice goes only when all the query heads
    sharing it go. Removed slices are not stored at all (the rest is a smaller dense matrix).
    """

    heads: tuple[int, ...]

    def __call__(self, stored: Stored, *, name: str = "", context: Context | None = None) -> Stored:
        kind, units, d_head, group = _head_layout(stored, name, context)
        gone = set(int(h) for h in self.heads)
        if kind in ("W_K", "W_V"):
            gone = {u for u in range(units) if all(u * group + i in gone for i in range(group))}
        bad = [h for h in gone if not 0 <= h < units]
        if bad:
            raise ValueError(f"{name}: head indices {bad} are outside 0..{units - 1}.")
        keep_units = torch.ones(units, dtype=torch.bool)
        keep_units[list(gone)] = False
        keep = _from_unit_view(keep_units[:, None].expand(units, stored.weight.numel() // units), kind, d_head,
                               stored.weight)
        n_values = int(round(stored.n_values * int(keep_units.sum()) / units))
        mask = None if stored.mask is None else stored.mask & keep
        return dataclasses.replace(stored, weight=stored.weight * keep, n_values=n_values, mask=mask)


@dataclass(frozen=True)
class HeadSparsity:
    """Per-head unstructured pruning: within head h's slice, zero ``fractions[h]`` of the entries
    with the smallest score (``|w|``, or Wanda's ``|w| · ‖x_i‖₂`` with ``criterion="wanda"``,
    which needs the context statistic ``"xnorm:<input hook>"``). A grouped K/V slice takes the
    mean fraction of its query heads.
    """

    fractions: tuple[float, ...]
    criterion: Literal["magnitude", "wanda"] = "magnitude"

    def __post_init__(self):
        for f in self.fractions:
            _check_fraction(f, "HeadSparsity fraction")
        if self.criterion not in ("magnitude", "wanda"):
            raise ValueError(f"criterion must be 'magnitude' or 'wanda', got {self.criterion!r}.")

    def __call__(self, stored: Stored, *, name: str = "", context: Context | None = None) -> Stored:
        kind, units, d_head, group = _head_layout(stored, name, context)
        n_heads = units * (group if kind in ("W_K", "W_V") else 1)
        if len(self.fractions) != n_heads:
            raise ValueError(f"{name}: {len(self.fractions)} fractions given for {n_heads} heads.")
        fr = torch.tensor(self.fractions, dtype=torch.float64)
        if kind in ("W_K", "W_V"):
            fr = fr.view(units, group).mean(1)
        w = stored.weight.detach()
        score = w.abs()
        if self.criterion == "wanda":
            norm = context.require(f"xnorm:{input_hook(name, getattr(context, 'model', None))}", "HeadSparsity(criterion='wanda')")
            score = score * norm.to(score)[:, None]
        su = _unit_view(score, kind, d_head)
        keep_u = torch.ones_like(su, dtype=torch.bool)
        for u in range(units):
            k = int(round(float(fr[u]) * su.shape[1]))
            if k:
                keep_u[u, su[u].argsort(stable=True)[:k]] = False
        keep = _from_unit_view(keep_u, kind, d_head, w)
        if stored.mask is not None:
            keep &= stored.mask
        return dataclasses.replace(stored, weight=stored.weight * keep, mask=keep)


# ---- Factorization ----
#
# Low-rank factorization replaces a weight ``W`` ([d_in, d_out] in the linear view) by two
# factors ``A`` [d_in, r] and ``B`` [r, d_out], so that the layer computes ``(x @ A) @ B`` and
# stores ``r * (d_in + d_out)`` values instead of ``d_in * d_out``. A *compression ratio* is the
# fraction of the weight's parameters removed; the rank it allows is the largest ``r`` with
# ``r * (d_in + d_out) <= (1 - ratio) * d_in * d_out`` (:func:`rank_for_ratio`). Because the
# factors of a full-rank matrix cost more than the matrix, even 5 % fewer parameters means a
# rank far below full: for SmolLM2's 576 x 1536 MLP matrices, ratio 0.05 keeps rank 398 of 576.
# Ratio 0 leaves the weight dense and untouched.
#
# Four ways to choose the factors, all "truncate an SVD of a rescaled W, then undo the scaling":
#
# - **SVD**: truncate ``W = U S V^T`` to its top ``r`` singular triplets; by Eckart-Young this
#   minimises ``||W - A B||_F`` (the error is the root of the sum of the discarded ``s_i^2``).
# - **FWSVD** (Hsu et al. 2022): weight each *output* channel (a row of PyTorch's [out, in]
#   weight, a column of our linear view) by the root of its summed Fisher information,
#   ``d_j = sqrt(sum_i E[(dL/dW_ij)^2])`` from squared gradients on calibration text, truncate
#   the SVD of ``W diag(d)`` and divide ``d`` back out; this minimises ``||(W - A B) diag(d)||_F``.
# - **ASVD** (Yuan et al. 2023): scale each *input* channel by its mean absolute activation to
#   the power ``alpha = 0.5``, ``s_i = mean|x_i|^alpha``, truncate the SVD of ``diag(s) W`` and
#   undo the scaling on the left factor, so channels with large activations (outliers) are
#   approximated more faithfully.
# - **SVD-LLM** (Wang et al. 2024): truncation-aware whitening. With ``X^T X = L L^T``
#   (Cholesky), ``||X (W - W')||_F = ||L^T (W - W')||_F``, so truncating the SVD of ``L^T W`` and
#   mapping back with ``L^{-T}`` gives the rank-``r`` matrix with the *least output error on the
#   calibration activations*; each discarded singular value is exactly the loss it causes.
#
# Calibration statistics come from :func:`calibration_stats` in one forward pass with
# TransformerLens hooks (plus one backward per example for FWSVD's gradients). Whitening runs
# in float64 (``X^T X`` squares the condition number of ``X``); the other SVDs run in float32,
# which reproduces float64 factors to about 1e-6 relative here.


FACTOR_METHODS = ("svd", "fwsvd", "asvd", "svdllm")
"""Factorization methods by name (see :func:`factorization`)."""

FACTOR_EPS = 1e-6
"""Floor, relative to the largest, for FWSVD and ASVD channel scales: a channel with zero
Fisher information or zero activation is weighted ``FACTOR_EPS * max`` instead of 0, so the
scaling stays invertible and the factors finite."""

WHITEN_DAMPING = (0.0, 1e-8, 1e-6, 1e-4, 1e-2, 1e-1, 1.0)
"""SVD-LLM's regularization ladder: when ``X^T X`` is not positive definite, ``lam * mean(diag)
* I`` is added with the first ``lam`` of this ladder for which the Cholesky factorization
succeeds (recorded in the stored weight's ``notes``). An all-zero ``X^T X`` (a weight that no
calibration token reached) thereby becomes the identity, i.e. plain SVD."""


def rank_for_ratio(d_in: int, d_out: int, ratio: float) -> int:
    """Largest rank ``r`` whose factors, ``r * (d_in + d_out)`` values, keep ``(1 - ratio)`` of ``d_in * d_out``."""
    _check_fraction(ratio, "Factorization ratio")
    return int(((1.0 - float(ratio)) * d_in * d_out + 1e-6) // (d_in + d_out))  # 1e-6: float slack


def factor_params(d_in: int, d_out: int, rank: int) -> int:
    """Values stored by rank-``rank`` factors of a ``[d_in, d_out]`` matrix."""
    return rank * (d_in + d_out)


STAT_KINDS = ("xtx", "absmean", "grad2")
"""Calibration statistics: ``xtx:{hook}`` mean ``x x^T`` [d_in, d_in] (SVD-LLM), ``absmean:{hook}``
mean ``|x|`` [d_in] (ASVD), ``grad2:{weight}`` per-example squared gradient summed over the
input dimension, per output channel [d_out] (FWSVD's row-summed Fisher)."""


def _default_lm_loss(model, tokens: Tensor, mask: Tensor | None, row: int = 0) -> Tensor:
    return model(tokens, return_type="loss")


def calibration_stats(
    model,
    tokens: Tensor,
    weights: Sequence[str],
    kinds: Sequence[str] = STAT_KINDS,
    context: int = 256,
    batch_size: int = 8,
    attention_mask: Tensor | None = None,
    loss_fn=None,
    max_grad_examples: int | None = None,
) -> Context:
    """Calibration statistics for ``weights`` in one forward pass (and one backward per example).

    ``tokens``: a 1-D token stream (cut into windows of ``context``) or a ``[n, pos]`` batch
    (with ``attention_mask`` for padding, as an encoder needs). Padding positions are left out
    of every statistic. ``loss_fn(model, tokens, mask, row) -> scalar`` defines the loss whose
    gradients FWSVD weights by, for the example in row ``row`` (default: the decoder's
    next-token loss; an encoder has no meaningful default and must be given one, e.g. a task
    head's cross-entropy). Returns a :class:`Context` for a plan.
    """
    unknown = set(kinds) - set(STAT_KINDS)
    if unknown:
        raise ValueError(f"Unknown calibration statistics {sorted(unknown)}; choose from {STAT_KINDS}.")
    tokens = torch.as_tensor(tokens)
    if tokens.numel() == 0:
        raise ValueError("calibration_stats: no calibration tokens given (missing calibration data).")
    if tokens.ndim == 1:
        n = tokens.numel() // context
        if n == 0:
            raise ValueError(f"calibration_stats: {tokens.numel()} tokens is less than one window of {context}.")
        tokens = tokens[: n * context].view(n, context)
    if attention_mask is None:
        attention_mask = torch.ones_like(tokens)
    weights = list(weights)
    hooks = sorted({input_hook(w, model) for w in weights})
    device = next(model.parameters()).device
    sums: dict[str, Tensor] = {}
    count = 0
    encoder = _is_encoder(model)

    seen: set[str] = set()

    def collect(act: Tensor, hook) -> None:
        if hook.name in seen:  # ln1 runs once each for Q, K and V: count its input once
            return
        seen.add(hook.name)
        act = norm_output(model, hook.name, act.detach())
        x = act.reshape(-1, act.shape[-1]) if act.ndim == 3 else act.reshape(act.shape[0] * act.shape[1], -1)
        x = x[keep].float()
        if "xtx" in kinds:
            key = f"xtx:{hook.name}"
            sums[key] = sums.get(key, 0) + (x.T @ x).double()
        if "absmean" in kinds:
            key = f"absmean:{hook.name}"
            sums[key] = sums.get(key, 0) + x.abs().sum(0).double()

    if {"xtx", "absmean"} & set(kinds):
        with torch.inference_mode():
            for i in range(0, len(tokens), batch_size):
                t, m = tokens[i : i + batch_size].to(device), attention_mask[i : i + batch_size].to(device)
                keep = m.reshape(-1).bool()
                seen.clear()
                fwd = [(h, collect) for h in hooks]
                if encoder:  # encoder_output: the blocks only, not the (random) MLM head
                    with model.hooks(fwd_hooks=fwd):
                        model.encoder_output(t, None, m)
                else:
                    model.run_with_hooks(t, return_type=None, fwd_hooks=fwd)
                count += int(keep.sum())
    stats = {k: (v / count).float() for k, v in sums.items()}
    if "grad2" in kinds:
        stats.update(_fisher_rows(model, tokens, attention_mask, weights, loss_fn, max_grad_examples))
    for k, v in stats.items():
        if not torch.isfinite(v).all():
            raise FloatingPointError(f"Calibration statistic {k!r} is not finite; the model produced NaN/inf on the calibration data.")
    return Context(model=model, stats=stats)


def _fisher_rows(model, tokens, mask, weights, loss_fn, max_examples) -> dict[str, Tensor]:
    """``grad2:{weight}``: squared per-example gradients, summed over the input dimension, averaged."""
    if loss_fn is None:
        if _is_encoder(model):
            raise ValueError("FWSVD on an encoder needs loss_fn (its MLM head is random, so there is no default "
                             "loss); pass e.g. a task head's cross-entropy.")
        loss_fn = _default_lm_loss
    params = dict(model.named_parameters())
    names = {w: parameter_name(model, w) for w in weights}
    flags = {n: p.requires_grad for n, p in params.items()}
    acc = {w: 0 for w in weights}
    n = len(tokens) if max_examples is None else min(len(tokens), max_examples)
    device = next(model.parameters()).device
    try:
        for p_name, p in params.items():
            p.requires_grad_(p_name in names.values())
        for i in range(n):
            for p in params.values():
                p.grad = None
            loss = loss_fn(model, tokens[i : i + 1].to(device), mask[i : i + 1].to(device), i)
            loss.backward()
            for w, p_name in names.items():
                g = to_linear(w, params[p_name].grad.detach()).float()
                acc[w] = acc[w] + g.pow(2).sum(0).double()
    finally:
        for p_name, p in params.items():
            p.grad = None
            p.requires_grad_(flags[p_name])
    return {f"grad2:{w}": (v / n).float() for w, v in acc.items()}


@dataclass(frozen=True)
class SVD:
    """Truncated SVD to the rank that removes ``ratio`` of the weight's parameters (or to ``rank``).

    The ``cache`` dict (optional, shared between operations of one sweep) keeps each weight's
    full decomposition, so a sweep over ratios decomposes every matrix once per method.
    """

    ratio: float = 0.0
    rank: int | None = None
    cache: dict | None = field(default=None, compare=False, repr=False)
    method = "svd"

    def __post_init__(self):
        _check_fraction(self.ratio, "Factorization ratio")
        if self.rank is not None and (not isinstance(self.rank, int) or self.rank < 1):
            raise ValueError(f"rank must be a positive integer, got {self.rank!r}.")

    def target_rank(self, d_in: int, d_out: int) -> int | None:
        """The rank to keep, or ``None`` to leave the weight dense (ratio 0 and no rank)."""
        if self.rank is not None:
            if self.rank > min(d_in, d_out):
                raise ValueError(f"rank {self.rank} is larger than a [{d_in}, {d_out}] matrix allows "
                                 f"(at most {min(d_in, d_out)}).")
            return self.rank
        if self.ratio == 0:
            return None
        r = rank_for_ratio(d_in, d_out, self.ratio)
        if r < 1:
            raise ValueError(f"ratio {self.ratio} leaves no rank for a [{d_in}, {d_out}] matrix.")
        return min(r, min(d_in, d_out))

    def _key(self) -> tuple:
        return (self.method,)

    def decompose(self, w: Tensor, name: str, context: Context | None) -> tuple[Tensor, Tensor, Tensor]:
        """``(left [d_in, k], s [k], right [k, d_out])`` with ``W ~ left[:, :r] diag(s[:r]) right[:r]``."""
        U, S, Vh = torch.linalg.svd(w.float(), full_matrices=False)
        return U, S, Vh

    def factors(self, w: Tensor, rank: int, name: str = "", context: Context | None = None) -> tuple[Tensor, Tensor]:
        """``(A [d_in, r], B [r, d_out])`` for ``W``, the singular values split evenly (sqrt) between them."""
        key = (*self._key(), name, tuple(w.shape), float(w.double().sum()), float(w.double().pow(2).sum()),
               tuple(sorted((k, id(v)) for k, v in (context.stats.items() if context else ()))))
        dec = self.cache.get(key) if self.cache is not None else None
        if dec is None:
            dec = self.decompose(w.detach(), name, context)
            if self.cache is not None:
                self.cache[key] = dec
        left, s, right = dec
        root = s[:rank].clamp(min=0).sqrt()
        return left[:, :rank] * root, root[:, None] * right[:rank]

    def __call__(self, stored: Stored, *, name: str = "", context: Context | None = None) -> Stored:
        w = stored.weight
        d_in, d_out = w.shape
        r = self.target_rank(d_in, d_out)
        if r is None:
            return stored
        A, B = self.factors(w, r, name, context)
        out = (A @ B).to(w.dtype)
        if not torch.isfinite(out).all():
            raise FloatingPointError(f"{type(self).__name__} of {name!r} produced non-finite values.")
        return dataclasses.replace(stored, weight=out, n_values=factor_params(d_in, d_out, r), mask=None,
                                   notes=[*stored.notes, f"{self.method} rank {r}"])


def _channel_scale(v: Tensor, what: str) -> Tensor:
    v = v.detach().double()
    if not torch.isfinite(v).all() or float(v.max()) <= 0:
        raise ValueError(f"{what} is zero or not finite everywhere; the calibration data gave no signal.")
    return v.clamp(min=FACTOR_EPS * float(v.max()))


@dataclass(frozen=True)
class FWSVD(SVD):
    """Fisher-weighted SVD (Hsu et al. 2022): output channels weighted by root summed Fisher (``grad2:{name}``)."""

    method = "fwsvd"

    def decompose(self, w, name, context):
        ctx = context or Context()
        d = _channel_scale(ctx.require(f"grad2:{name}", "FWSVD"), f"FWSVD Fisher for {name!r}").sqrt().float()
        U, S, Vh = torch.linalg.svd(w.float() * d, full_matrices=False)
        return U, S, Vh / d


@dataclass(frozen=True)
class ASVD(SVD):
    """Activation-aware SVD (Yuan et al. 2023): input channels scaled by ``mean|x|^alpha`` (``absmean:{hook}``)."""

    alpha: float = 0.5
    method = "asvd"

    def _key(self):
        return (self.method, self.alpha)

    def decompose(self, w, name, context):
        ctx = context or Context()
        hook = input_hook(name, ctx.model)
        s = _channel_scale(ctx.require(f"absmean:{hook}", "ASVD"), f"ASVD activations at {hook!r}")
        s = s.pow(self.alpha).float()
        U, S, Vh = torch.linalg.svd(s[:, None] * w.float(), full_matrices=False)
        return U / s[:, None], S, Vh


def whitening_factor(xtx: Tensor) -> tuple[Tensor, float]:
    """Lower Cholesky factor ``L`` of ``X^T X`` (float64), regularized per :data:`WHITEN_DAMPING`; and the ``lam`` used."""
    xtx = xtx.detach().double()
    if not torch.isfinite(xtx).all():
        raise ValueError("X^T X is not finite; cannot whiten.")
    xtx = (xtx + xtx.T) / 2
    scale = float(xtx.diagonal().mean())
    scale = scale if scale > 0 else 1.0
    eye = torch.eye(len(xtx), dtype=xtx.dtype, device=xtx.device)
    for lam in WHITEN_DAMPING:
        L, info = torch.linalg.cholesky_ex(xtx + lam * scale * eye)
        if int(info) == 0 and torch.isfinite(L).all() and float(L.diagonal().min()) > 0:
            return L, lam
    raise ValueError("X^T X could not be made positive definite even with damping 1.0 x mean(diag).")


@dataclass(frozen=True)
class SVDLLM(SVD):
    """SVD-LLM (Wang et al. 2024): truncate the SVD of ``L^T W`` where ``L L^T = X^T X`` (``xtx:{hook}``)."""

    method = "svdllm"

    def decompose(self, w, name, context):
        ctx = context or Context()
        hook = input_hook(name, ctx.model)
        L, lam = whitening_factor(ctx.require(f"xtx:{hook}", "SVD-LLM"))
        U, S, Vh = torch.linalg.svd(L.T @ w.double(), full_matrices=False)
        left = torch.linalg.solve_triangular(L.T, U, upper=True)  # L^{-T} U
        return left.float(), S.float(), Vh.float()


FACTORIZATIONS: dict[str, type[SVD]] = {"svd": SVD, "fwsvd": FWSVD, "asvd": ASVD, "svdllm": SVDLLM}
"""Factorization operations by method name."""

STATS_NEEDED: dict[str, tuple[str, ...]] = {"svd": (), "fwsvd": ("grad2",), "asvd": ("absmean",), "svdllm": ("xtx",)}
"""The calibration statistics each method reads."""


def factorization(method: str, ratio: float = 0.0, **kw) -> SVD:
    """The factorization operation called ``method`` (one of :data:`FACTOR_METHODS`) at ``ratio``."""
    if method not in FACTORIZATIONS:
        raise ValueError(f"Unknown factorization method {method!r}; choose one of {FACTOR_METHODS}.")
    return FACTORIZATIONS[method](ratio=ratio, **kw)


def mlp_weights(model, layers: Sequence[int] | None = None) -> list[str]:
    """Every MLP weight (``W_in``, ``W_gate``, ``W_out``; BERT: intermediate and output) of ``layers``."""
    layers = range(model.cfg.n_layers) if layers is None else layers
    return [w for l in layers for w in weights_of(model, component(l, "mlp"))]


def factorization_plan(
    model,
    method: str,
    ratio: float | Mapping[int, float],
    context: Context | None = None,
    cache: dict | None = None,
    **kw,
) -> CompressionPlan:
    """Factorize every MLP at one ``ratio``, or per layer from ``{layer: ratio}`` (layers left out stay dense)."""
    per_layer = dict(ratio) if isinstance(ratio, Mapping) else {l: ratio for l in range(model.cfg.n_layers)}
    ops = {component(l, "mlp"): [factorization(method, r, cache=cache, **kw)] for l, r in sorted(per_layer.items())}
    return CompressionPlan(ops, context=context or Context(model=model))
