"""The oracle: what compressing one component alone costs, measured, cell by cell.

Every signal of the book claims to say where a model can be compressed. The oracle is what they
are judged against: for each *unit* (a layer's attention ``"blocks.3.attn"`` or MLP
``"blocks.3.mlp"``, or a whole block ``"blocks.3"``) and each *operation* it compresses that unit
alone and measures the eval windows' next-token NLL. The default operations
(:data:`OPERATIONS`) are unstructured magnitude pruning at 50% (:class:`~analysis.compress.Prune`),
3-bit round-to-nearest quantization per output channel (:class:`~analysis.compress.Quantize`) and
removal (the unit's output set to zero at every position, so the residual stream passes through:
for a block, the layer is dropped).

A ``(unit, operation)`` pair is an :class:`OracleCell`; each cell is cached on disk under the
model's content hash, the windows' hash and the cell (:func:`analysis.cache.cached`), so an
interrupted run resumes where it stopped, on a progress bar over the cells.

**Speed.** Compressing a unit of layer ``l`` leaves every earlier layer's output unchanged, so
the dense residual stream entering layer ``l`` (``blocks.{l}.hook_resid_pre``) is computed once
(:class:`DenseStream`), advanced one block at a time as the cells go down the layers, and each cell runs only layers
``l..L-1`` and the unembedding (``start_at_layer``). On a deep model that halves the work of a
cell; ``benchmarks/synthesis.py`` measures it against re-running the whole model per cell
(:func:`naive_cell_nll`). The held stream costs ``windows x context x d_model x 4`` bytes (12 MB
for 5,120 tokens of SmolLM2).

The result, :class:`Oracle`, keeps the summed NLL of every window for every cell, so each cell's
Δ log-perplexity comes with a paired interval over windows (:meth:`Oracle.difference`, through
:func:`analysis.stats.paired`) and becomes a :class:`analysis.scores.ComponentScores` per
operation (:meth:`Oracle.scores`: high = compressing it costs much = compress least).
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from analysis import stats
from analysis.cache import DiskCache, cache_key, tensors_hash
from analysis.components import KINDS, component
from analysis.compress.plan import CompressionPlan, Operation
from analysis.compress.prune import Prune
from analysis.compress.quantize import Quantize
from analysis.forward import batch_rows
from analysis.hooks import act_name
from analysis.models import model_key
from analysis.progress import progress
from analysis.scores import ComponentScores

CACHE_VERSION = 1
"""Bumped when what a cached oracle cell holds changes."""

REMOVE = "remove"
OPERATIONS: dict[str, tuple[Operation, ...] | None] = {
    "prune": (Prune(0.5),),
    "quantize": (Quantize(3),),
    REMOVE: None,
}
"""The default operations: name -> compression operations on every weight of the unit, or ``None``
for removal (the unit's output is zero)."""

_UNIT = re.compile(r"^blocks\.(\d+)(?:\.(attn|mlp))?$")


def block(layer: int) -> str:
    """The unit name of a whole block: ``"blocks.{layer}"`` (its attention and its MLP)."""
    return f"blocks.{layer}"


def units(model: HookedTransformer, kinds: Sequence[str] = KINDS, blocks: bool = False) -> list[str]:
    """Every layer's ``kinds`` components, and each whole block with ``blocks``, layer by layer."""
    per_layer = [[component(l, k) for k in kinds] + ([block(l)] if blocks else []) for l in range(model.cfg.n_layers)]
    return [u for us in per_layer for u in us]


@dataclass(frozen=True)
class OracleCell:
    """One unit compressed alone by one operation (a key of the run's operations)."""

    unit: str
    operation: str

    def __post_init__(self):
        if _UNIT.match(self.unit) is None:
            raise ValueError(f"Unknown unit {self.unit!r}; use 'blocks.<l>.attn', 'blocks.<l>.mlp' or 'blocks.<l>'.")

    @property
    def layer(self) -> int:
        return int(_UNIT.match(self.unit).group(1))

    @property
    def components(self) -> list[str]:
        """The components the cell touches: the unit's one, or both of a block."""
        kind = _UNIT.match(self.unit).group(2)
        return [self.unit] if kind else [component(self.layer, k) for k in KINDS]


@contextlib.contextmanager
def applied(model: HookedTransformer, cell: OracleCell, ops: Sequence[Operation] | None) -> Iterator[None]:
    """``model`` with the cell's unit compressed by ``ops`` (reversibly), or removed (``ops=None``:
    hooks set its attention and/or MLP output to zero)."""
    if ops is None:
        names = [act_name(c.rsplit(".", 1)[1], cell.layer) for c in cell.components]
        with model.hooks(fwd_hooks=[(n, lambda act, hook: torch.zeros_like(act)) for n in names]):
            yield
    else:
        with CompressionPlan({c: list(ops) for c in cell.components}).applied(model):
            yield


def _window_nll(logits: Tensor, x: Tensor) -> Float[Tensor, " batch"]:
    """Summed next-token NLL of each row (float64)."""
    nll = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), x[:, 1:].flatten().to(logits.device), reduction="none")
    return nll.view(len(x), -1).double().sum(-1).cpu()


@torch.inference_mode()
def naive_cell_nll(
    model: HookedTransformer,
    windows: Int[Tensor, "window context"],
    cell: OracleCell | None,
    ops: Sequence[Operation] | None = None,
    batch_size: int = 8,
) -> Float[Tensor, " window"]:
    """A cell the plain way, for reference and for the benchmark: apply the compression, run the
    whole model over every window, restore. ``cell=None`` scores the dense model."""
    with applied(model, cell, ops) if cell is not None else contextlib.nullcontext():
        return torch.cat(
            [
                _window_nll(model(windows[r].to(model.cfg.device)), windows[r])
                for r in batch_rows(len(windows), batch_size)
            ]
        )


class DenseStream:
    """The dense residual stream entering one layer for every window, advanced block by block
    (:meth:`at`), and the windows' NLL of the model run from that layer on (:meth:`nll`)."""

    def __init__(self, model: HookedTransformer, windows: Tensor, batch_size: int):
        self.model, self.windows, self.batch_size = model, windows, batch_size
        self.layer, self.resid = None, None

    @torch.inference_mode()
    def at(self, layer: int) -> Tensor:
        """``blocks.{layer}.hook_resid_pre`` of the dense model, ``[window, context, d_model]``."""
        m, rows = self.model, list(batch_rows(len(self.windows), self.batch_size))
        if self.layer is None or self.layer > layer:
            dev = m.cfg.device
            self.resid = torch.cat([m(self.windows[r].to(dev), stop_at_layer=0) for r in rows])
            self.layer = 0
        while self.layer < layer:
            self.resid = torch.cat(
                [m(self.resid[r], start_at_layer=self.layer, stop_at_layer=self.layer + 1) for r in rows]
            )
            self.layer += 1
        return self.resid

    @torch.inference_mode()
    def nll(self, layer: int) -> Float[Tensor, " window"]:
        """Summed NLL per window of the (possibly compressed) model, run from ``layer`` on."""
        resid = self.at(layer)
        return torch.cat(
            [
                _window_nll(self.model(resid[r], start_at_layer=layer), self.windows[r])
                for r in batch_rows(len(self.windows), self.batch_size)
            ]
        )


@dataclass(frozen=True)
class Oracle:
    """Summed NLL per eval window of the dense model and of every cell."""

    cells: tuple[OracleCell, ...]
    window_nll: Float[Tensor, "cell window"]
    base_nll: Float[Tensor, " window"]
    tokens_per_window: int
    seconds: Float[Tensor, " cell"]
    """Seconds each cell took to compute (when it was computed, cached or not)."""

    def index(self, unit: str, operation: str) -> int:
        try:
            return self.cells.index(OracleCell(unit, operation))
        except ValueError:
            raise KeyError(f"No oracle cell ({unit!r}, {operation!r}); the run measured {len(self.cells)}.") from None

    def delta(self, unit: str, operation: str) -> Float[Tensor, " window"]:
        """Δ log-perplexity (nats per token) of each window: the cell's mean NLL minus the dense one."""
        return (self.window_nll[self.index(unit, operation)] - self.base_nll) / self.tokens_per_window

    def difference(self, unit: str, operation: str, level: float = 0.95) -> stats.Difference:
        """The cell's Δ log-perplexity with a paired t interval over windows (:func:`analysis.stats.paired`)."""
        i = self.index(unit, operation)
        t = self.tokens_per_window
        return stats.paired((self.window_nll[i] / t).numpy(), (self.base_nll / t).numpy(), unit="windows", level=level)

    def scores(self, operation: str, blocks: bool = False) -> ComponentScores:
        """The cost of ``operation`` on each layer's attention and MLP as a score (``values`` the mean
        Δ log-perplexity, ``samples`` each window's ``[window, layer, kind]``); the run must have
        measured every layer's. ``blocks``: the cost on each whole block ``"blocks.{l}"``, given to
        both kinds (the oracle of layer removal, beside a block score such as Block Influence)."""
        L = 1 + max(c.layer for c in self.cells)
        per_layer = (
            (lambda l: torch.stack([self.delta(block(l), operation)] * len(KINDS), -1))
            if blocks
            else (lambda l: torch.stack([self.delta(component(l, k), operation) for k in KINDS], -1))
        )
        samples = torch.stack([per_layer(l) for l in range(L)], 1)
        name = f"oracle: {operation}" + (" (block)" if blocks else "")
        return ComponentScores(name, samples.mean(0), samples=samples)

    def frame(self) -> pd.DataFrame:
        """A row per cell: unit, layer, operation, Δ log-perplexity with its interval, seconds."""
        rows = []
        for i, c in enumerate(self.cells):
            d = self.difference(c.unit, c.operation)
            rows.append(
                {
                    "unit": c.unit,
                    "layer": c.layer,
                    "operation": c.operation,
                    "Δ log-ppl": d.estimate,
                    "low": d.low,
                    "high": d.high,
                    "seconds": float(self.seconds[i]),
                }
            )
        return pd.DataFrame(rows)


def _describe(ops: Sequence[Operation] | None) -> str:
    return REMOVE if ops is None else repr(tuple(ops))


def measure(
    model: HookedTransformer,
    windows: Int[Tensor, "window context"],
    unit_names: Sequence[str] | None = None,
    operations: Mapping[str, Sequence[Operation] | None] = OPERATIONS,
    batch_size: int = 8,
    cache: bool = True,
    store: DiskCache | None = None,
    desc: str = "oracle",
) -> Oracle:
    """Every ``(unit, operation)`` cell's summed NLL on each of ``windows`` (``[n, context]`` token
    windows, every token after a window's first scored), and the dense model's.

    ``unit_names`` default to every layer's attention and MLP (:func:`units`). With ``cache``, each
    cell (and the dense score) is read from or written to the disk cache as it finishes, keyed by the
    model's content hash, the windows and the cell's operations, so an interrupted run resumes."""
    windows = torch.as_tensor(windows)
    if windows.ndim != 2 or windows.shape[1] < 2 or len(windows) == 0:
        raise ValueError(f"windows must be [n_windows, context >= 2] tokens, got shape {tuple(windows.shape)}.")
    unit_names = units(model) if unit_names is None else list(unit_names)
    cells = sorted(
        (OracleCell(u, op) for u in unit_names for op in operations), key=lambda c: c.layer
    )  # stable: layer by layer, so the dense stream only moves forward
    for c in cells:
        if c.layer >= model.cfg.n_layers:
            raise ValueError(f"Unit {c.unit!r}: the model has {model.cfg.n_layers} layers.")
    store = store or DiskCache()
    mkey = model_key(model) if cache else None
    base_config = {"windows": tensors_hash([windows]), "version": CACHE_VERSION}
    prefix = DenseStream(model, windows, batch_size)

    def get(config: dict, compute) -> tuple[Tensor, float]:
        key = cache_key("oracle/cell", {**base_config, **config}, mkey) if cache else None
        if cache:
            hit, value = store.load("oracle/cell", key)
            if hit:
                return value["nll"], value["seconds"]
        t0 = time.perf_counter()
        nll = compute()
        value = {"nll": nll, "seconds": time.perf_counter() - t0}
        if cache:
            store.save("oracle/cell", key, value)
        return value["nll"], value["seconds"]

    base, _ = get({"cell": "dense"}, lambda: prefix.nll(0))
    out, seconds = [], []
    for c in progress(cells, desc=desc):
        ops = operations[c.operation]

        def compute(c=c, ops=ops):
            prefix.at(c.layer)  # advance the dense stream before compressing anything
            with applied(model, c, ops):
                return prefix.nll(c.layer)

        nll, s = get({"cell": [c.unit, c.operation, _describe(ops)]}, compute)
        out.append(nll)
        seconds.append(s)
    return Oracle(tuple(cells), torch.stack(out), base, windows.shape[1] - 1, torch.tensor(seconds))
