"""The oracle: what compressing one component alone costs, measured, cell by cell.

Every signal of the book claims to say where a model can be compressed. The oracle is what they
are judged against: for each *unit* (a layer's attention ``"blocks.3.attn"`` or MLP
``"blocks.3.mlp"``, or a whole block ``"blocks.3"``) and each *operation* it compresses that unit
alone and measures the eval windows' next-token NLL and, when given, which facts the model still
recalls (top-1 next token = the target's first token, as :func:`analysis.evaluate.fact_recall`)
and which MMLU questions it still answers (:func:`analysis.data.mmlu_scoring.mmlu_correct`). The default
operations (:data:`OPERATIONS`) are unstructured magnitude pruning at 50%
(:class:`~analysis.compress.Prune`), 3-bit round-to-nearest quantization per output channel
(:class:`~analysis.compress.Quantize`) and removal (the unit's output set to zero at every
position, so the residual stream passes through: for a block, the layer is dropped).

A ``(unit, operation)`` pair is an :class:`OracleCell`; each cell is cached on disk under the
model's content hash, the windows' hash, the facts, the MMLU questions and the cell
(:func:`analysis.cache.cached`), so an interrupted run resumes where it stopped, on a progress bar
over the cells.

**Speed.** Compressing a unit of layer ``l`` leaves every earlier layer's output unchanged, so
the dense residual stream entering layer ``l`` (``blocks.{l}.hook_resid_pre``) of the windows, of
the (right-padded) fact prompts and of the MMLU prompts is computed once
(:class:`~analysis.compress.dense_stream.DenseStream`), advanced one block at a time as the cells
go down the layers, and each cell runs only layers ``l..L-1`` and the unembedding
(``start_at_layer``). On a deep model that halves the work of a cell; ``benchmarks/synthesis.py``
measures it against re-running the whole model per cell (:func:`naive_cell_nll`).

The result, :class:`Oracle`, keeps the summed NLL of every window, and every fact's and question's
hit, for every cell, so each cell's Δ log-perplexity, fact-recall drop and MMLU accuracy drop come
with paired intervals (:meth:`Oracle.difference`, :meth:`Oracle.fact_recall_drop`,
:meth:`Oracle.mmlu_drop`, through :func:`analysis.stats.paired`) and become a
:class:`analysis.scores.ComponentScores` per operation and metric (:meth:`Oracle.scores`: high =
compressing it costs much = compress least).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Iterator, Literal, Mapping, Sequence

import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from analysis import hooks, stats
from analysis.cache import DiskCache, cache_key, tensors_hash
from analysis.components import KINDS, component
from analysis.compress.dense_stream import DenseStream, summed_nll
from analysis.compress.plan import CompressionPlan, Operation
from analysis.compress.prune import Prune
from analysis.compress.quantize import Quantize
from analysis.data.mmlu_scoring import answer_hits, letter_ids, letter_scores, prompt_tokens
from analysis.forward import batch_rows, final_logits, first_target_token, prompt_batch
from analysis.hooks import act_name
from analysis.models import model_key
from analysis.progress import progress
from analysis.scores import ComponentScores

CACHE_VERSION = 2
"""Bumped when what a cached oracle cell holds changes (2: fact and MMLU hits beside the NLL)."""

Metric = Literal["ppl", "facts", "mmlu"]
REMOVE = "remove"
OPERATIONS: dict[str, tuple[Operation, ...] | None] = {
    "prune": (Prune(0.5),),
    "quantize": (Quantize(3),),
    REMOVE: None,
}
"""The default operations: name -> compression operations on every weight of the unit, or ``None``
for removal (the unit's output is zero)."""

_UNIT = re.compile(r"^blocks\.(\d+)(?:\.(attn|mlp)(?:\.(\d+))?)?$")


def block(layer: int) -> str:
    """The unit name of a whole block: ``"blocks.{layer}"`` (its attention and its MLP)."""
    return f"blocks.{layer}"


def head(layer: int, index: int) -> str:
    """The unit name of one attention head: ``"blocks.{layer}.attn.{index}"`` (removal only)."""
    return f"blocks.{layer}.attn.{index}"


def units(model: HookedTransformer, kinds: Sequence[str] = KINDS, blocks: bool = False) -> list[str]:
    """Every layer's ``kinds`` components, and each whole block with ``blocks``, layer by layer."""
    per_layer = [[component(l, k) for k in kinds] + ([block(l)] if blocks else []) for l in range(model.cfg.n_layers)]
    return [u for us in per_layer for u in us]


def head_units(model: HookedTransformer, layers: Sequence[int]) -> list[str]:
    """Every attention head of ``layers``, layer by layer."""
    return [head(l, h) for l in layers for h in range(model.cfg.n_heads)]


@dataclass(frozen=True)
class OracleCell:
    """One unit compressed alone by one operation (a key of the run's operations)."""

    unit: str
    operation: str

    def __post_init__(self):
        m = _UNIT.match(self.unit)
        if m is None or (m.group(3) is not None and m.group(2) != "attn"):
            raise ValueError(
                f"Unknown unit {self.unit!r}; use 'blocks.<l>.attn', 'blocks.<l>.mlp', 'blocks.<l>' or a head "
                "'blocks.<l>.attn.<h>'."
            )

    @property
    def head(self) -> int | None:
        """The head index of a head unit, else None."""
        h = _UNIT.match(self.unit).group(3)
        return None if h is None else int(h)

    @property
    def layer(self) -> int:
        return int(_UNIT.match(self.unit).group(1))

    @property
    def components(self) -> list[str]:
        """The components the cell touches: the unit's one, or both of a block."""
        kind = _UNIT.match(self.unit).group(2)
        return [component(self.layer, kind)] if kind else [component(self.layer, k) for k in KINDS]


@contextlib.contextmanager
def applied(model: HookedTransformer, cell: OracleCell, ops: Sequence[Operation] | None) -> Iterator[None]:
    """``model`` with the cell's unit compressed by ``ops`` (reversibly), or removed (``ops=None``:
    hooks set its attention and/or MLP output to zero; a head's ``hook_z`` slice is set to zero)."""
    if cell.head is not None:
        if ops is not None:
            raise ValueError(f"{cell.unit}: a single head can only be removed (ops=None), not compressed.")
        h = cell.head

        def zero_head(z: Tensor, hook) -> Tensor:
            z = z.clone()
            z[:, :, h] = 0
            return z

        with model.hooks(fwd_hooks=[(hooks.z(cell.layer), zero_head)]):
            yield
    elif ops is None:
        names = [act_name(c.rsplit(".", 1)[1], cell.layer) for c in cell.components]
        with model.hooks(fwd_hooks=[(n, lambda act, hook: torch.zeros_like(act)) for n in names]):
            yield
    else:
        with CompressionPlan({c: list(ops) for c in cell.components}).applied(model):
            yield


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
                summed_nll(model(windows[r].to(model.cfg.device)), windows[r])
                for r in batch_rows(len(windows), batch_size)
            ]
        )


def _no_hits(n_cells: int = 0) -> Tensor:
    return torch.zeros(n_cells, 0, dtype=torch.bool)


@dataclass(frozen=True)
class Oracle:
    """Summed NLL per eval window, and hits per fact and per MMLU question, of the dense model and of every cell."""

    cells: tuple[OracleCell, ...]
    window_nll: Float[Tensor, "cell window"]
    base_nll: Float[Tensor, " window"]
    tokens_per_window: int
    seconds: Float[Tensor, " cell"]
    """Seconds each cell took to compute (when it was computed, cached or not)."""
    fact_hits: Bool[Tensor, "cell fact"] = field(default_factory=_no_hits)
    """Per cell and fact: is the top-1 next token after the prompt the target's first token."""
    base_fact_hits: Bool[Tensor, " fact"] = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))
    mmlu_hits: Bool[Tensor, "cell item"] = field(default_factory=_no_hits)
    """Per cell and MMLU question: is the top letter the answer's."""
    base_mmlu_hits: Bool[Tensor, " item"] = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))

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

    def _hits(self, metric: Metric) -> tuple[Tensor, Tensor]:
        """``(per-cell hits, dense hits)`` of ``"facts"`` or ``"mmlu"``; a ValueError if none were measured."""
        if metric not in ("facts", "mmlu"):
            raise ValueError(f"metric must be 'ppl', 'facts' or 'mmlu', got {metric!r}.")
        hits, base = (
            (self.fact_hits, self.base_fact_hits) if metric == "facts" else (self.mmlu_hits, self.base_mmlu_hits)
        )
        if base.numel() == 0:
            what = "facts=(prompts, targets)" if metric == "facts" else "mmlu=analysis.data.mmlu_scoring.mmlu_items(n)"
            raise ValueError(f"This oracle measured no {metric}; pass {what} to measure().")
        return hits, base

    def drop(self, unit: str, operation: str, metric: Metric = "ppl") -> Float[Tensor, " sample"]:
        """The cell's cost per sample: Δ log-perplexity per window (``"ppl"``), or the dense hit minus
        the cell's per fact (``"facts"``) or per MMLU question (``"mmlu"``), each 1, 0 or -1."""
        if metric == "ppl":
            return self.delta(unit, operation)
        hits, base = self._hits(metric)
        return base.double() - hits[self.index(unit, operation)].double()

    def _hit_drop(self, unit: str, operation: str, metric: Metric, level: float) -> stats.Difference:
        hits, base = self._hits(metric)
        cell = hits[self.index(unit, operation)]
        return stats.paired(base.numpy(), cell.numpy(), unit="facts" if metric == "facts" else "questions", level=level)

    def fact_recall_drop(self, unit: str, operation: str, level: float = 0.95) -> stats.Difference:
        """Dense fact recall minus the cell's, paired over facts (:func:`analysis.stats.paired`; its
        ``p`` is the exact McNemar test that the dense model recalls more)."""
        return self._hit_drop(unit, operation, "facts", level)

    def mmlu_drop(self, unit: str, operation: str, level: float = 0.95) -> stats.Difference:
        """Dense MMLU accuracy minus the cell's, paired over questions (:func:`analysis.stats.paired`)."""
        return self._hit_drop(unit, operation, "mmlu", level)

    def scores(self, operation: str, blocks: bool = False, metric: Metric = "ppl") -> ComponentScores:
        """The cost of ``operation`` on each layer's attention and MLP as a score (``values`` the mean
        cost, ``samples`` each sample's ``[sample, layer, kind]``, the sample's :meth:`drop`: Δ
        log-perplexity per window, or fact-recall / MMLU-accuracy drop per fact / question); the run
        must have measured every layer's. ``blocks``: the cost on each whole block ``"blocks.{l}"``,
        given to both kinds (the oracle of layer removal, beside a block score such as Block Influence)."""
        L = 1 + max(c.layer for c in self.cells)
        per_layer = (
            (lambda l: torch.stack([self.drop(block(l), operation, metric)] * len(KINDS), -1))
            if blocks
            else (lambda l: torch.stack([self.drop(component(l, k), operation, metric) for k in KINDS], -1))
        )
        samples = torch.stack([per_layer(l) for l in range(L)], 1)
        label = {"ppl": "", "facts": ", fact recall", "mmlu": ", MMLU"}[metric]
        name = f"oracle: {operation}{label}" + (" (block)" if blocks else "")
        return ComponentScores(name, samples.mean(0), samples=samples)

    def head_scores(self, metric: Metric = "ppl") -> Float[Tensor, "layer head"]:
        """The cost of removing each measured head, ``[n_layers, n_heads]`` (NaN for heads not measured)."""
        heads = [c for c in self.cells if c.head is not None and c.operation == REMOVE]
        if not heads:
            raise ValueError("No head was measured: pass head units (head_units) with the removal operation.")
        out = torch.full((1 + max(c.layer for c in self.cells), 1 + max(c.head for c in heads)), float("nan"))
        for c in heads:
            out[c.layer, c.head] = float(self.drop(c.unit, REMOVE, metric).double().mean())
        return out

    def frame(self) -> pd.DataFrame:
        """A row per cell: unit, layer, operation, Δ log-perplexity (``low``, ``high``: its interval),
        fact-recall drop and MMLU-accuracy drop with theirs (NaN where not measured), seconds."""
        nan = stats.Difference(float("nan"), float("nan"), float("nan"), float("nan"), 0)
        rows = []
        for i, c in enumerate(self.cells):
            d = self.difference(c.unit, c.operation)
            row = {"unit": c.unit, "layer": c.layer, "operation": c.operation}
            row |= {"Δ log-ppl": d.estimate, "low": d.low, "high": d.high}
            for name, metric, base in (
                ("fact drop", "facts", self.base_fact_hits),
                ("mmlu drop", "mmlu", self.base_mmlu_hits),
            ):
                h = self._hit_drop(c.unit, c.operation, metric, 0.95) if len(base) else nan
                row |= {name: h.estimate, f"{name} low": h.low, f"{name} high": h.high}
            rows.append({**row, "seconds": float(self.seconds[i])})
        return pd.DataFrame(rows)


def _describe(ops: Sequence[Operation] | None) -> str:
    return REMOVE if ops is None else repr(tuple(ops))


def _digest(obj) -> str | None:
    """A short content hash of JSON-able ``obj`` (None stays None): what the cache key holds of long inputs."""
    return None if obj is None else hashlib.sha256(json.dumps(obj).encode()).hexdigest()[:24]


class _Probes:
    """The held dense streams of the windows, fact prompts and MMLU prompts, and one cell's scores on them."""

    def __init__(self, model, windows, facts, mmlu, batch_size):
        self.model, self.items = model, mmlu or []
        self.windows = DenseStream(model, windows, batch_size)
        self.facts = self.questions = None
        if facts:
            toks, last = prompt_batch(model, facts[0])  # as analysis.evaluate.fact_recall tokenizes them
            self.facts = DenseStream(model, [t[: n + 1] for t, n in zip(toks.cpu(), last.tolist())], batch_size)
            self.targets = torch.tensor([first_target_token(model, t) for t in facts[1]], dtype=torch.long)
        if self.items:
            self.questions = DenseStream(model, prompt_tokens(model, self.items), batch_size)
            self.letters = letter_ids(model)

    def advance(self, layer: int) -> None:
        for s in (self.windows, self.facts, self.questions):
            if s is not None:
                s.at(layer)

    def score(self, layer: int) -> dict[str, Tensor]:
        """The model (as it is now) run from ``layer`` on: window NLL, fact hits, MMLU hits."""
        out = {"nll": self.windows.nll(layer), "facts": torch.zeros(0, dtype=torch.bool)}
        out["mmlu"] = out["facts"]
        with torch.inference_mode():
            if self.facts is not None:
                top = final_logits(self.model, self.facts.last(layer)).float().log_softmax(-1).argmax(-1).cpu()
                out["facts"] = top == self.targets
            if self.questions is not None:
                out["mmlu"] = answer_hits(
                    letter_scores(self.model, self.questions.last(layer), self.letters), self.items
                )
        return out


def measure(
    model: HookedTransformer,
    windows: Int[Tensor, "window context"],
    unit_names: Sequence[str] | None = None,
    operations: Mapping[str, Sequence[Operation] | None] = OPERATIONS,
    batch_size: int = 8,
    cache: bool = True,
    store: DiskCache | None = None,
    desc: str = "oracle",
    facts: tuple[Sequence[str], Sequence[str]] | None = None,
    mmlu: Sequence[dict] | None = None,
) -> Oracle:
    """Every ``(unit, operation)`` cell's summed NLL on each of ``windows`` (``[n, context]`` token
    windows, every token after a window's first scored), and the dense model's.

    ``facts``: ``(prompts, targets)`` as :func:`analysis.evaluate.fact_recall` takes them; each cell
    then also records which facts it recalls. ``mmlu``: questions as
    :func:`analysis.data.mmlu_scoring.mmlu_items` gives them; each cell records which it answers.

    ``unit_names`` default to every layer's attention and MLP (:func:`units`). With ``cache``, each
    cell (and the dense score) is read from or written to the disk cache as it finishes, keyed by the
    model's content hash, the windows, the facts, the MMLU questions and the cell's operations, so an
    interrupted run resumes."""
    windows = torch.as_tensor(windows)
    if windows.ndim != 2 or windows.shape[1] < 2 or len(windows) == 0:
        raise ValueError(f"windows must be [n_windows, context >= 2] tokens, got shape {tuple(windows.shape)}.")
    if facts is not None:
        facts = (list(facts[0]), list(facts[1]))
        if len(facts[0]) != len(facts[1]):
            raise ValueError(f"facts: {len(facts[0])} prompts but {len(facts[1])} targets; they must pair up.")
        if any(not isinstance(p, str) or not p.strip() for p in facts[0]):
            raise ValueError("facts: a prompt is empty or not text; drop that fact or fill in its prompt.")
        facts = facts if facts[0] else None
    mmlu = list(mmlu or [])
    unit_names = units(model) if unit_names is None else list(unit_names)
    cells = sorted(
        (OracleCell(u, op) for u in unit_names for op in operations), key=lambda c: c.layer
    )  # stable: layer by layer, so the dense streams only move forward
    for c in cells:
        if c.layer >= model.cfg.n_layers:
            raise ValueError(f"Unit {c.unit!r}: the model has {model.cfg.n_layers} layers.")
    store = store or DiskCache()
    mkey = model_key(model) if cache else None
    base_config = {
        "windows": tensors_hash([windows]),
        "facts": _digest(facts),
        "mmlu": _digest([[it.get("id"), it["prompt"], int(it["answer"])] for it in mmlu]) if mmlu else None,
        "version": CACHE_VERSION,
    }
    probes = _Probes(model, windows, facts, mmlu, batch_size)

    def get(config: dict, compute) -> dict:
        key = cache_key("oracle/cell", {**base_config, **config}, mkey) if cache else None
        if cache:
            hit, value = store.load("oracle/cell", key)
            if hit:
                return value
        t0 = time.perf_counter()
        value = {**compute(), "seconds": time.perf_counter() - t0}
        if cache:
            store.save("oracle/cell", key, value)
        return value

    base = get({"cell": "dense"}, lambda: probes.score(0))
    out = []
    for c in progress(cells, desc=desc):
        ops = operations[c.operation]

        def compute(c=c, ops=ops):
            probes.advance(c.layer)  # advance the dense streams before compressing anything
            with applied(model, c, ops):
                return probes.score(c.layer)

        out.append(get({"cell": [c.unit, c.operation, _describe(ops)]}, compute))
    stack = lambda k, n: torch.stack([v[k] for v in out]) if out else torch.zeros(0, n, dtype=base[k].dtype)
    return Oracle(
        tuple(cells),
        stack("nll", len(windows)),
        base["nll"],
        windows.shape[1] - 1,
        torch.tensor([v["seconds"] for v in out]),
        stack("facts", len(base["facts"])),
        base["facts"],
        stack("mmlu", len(base["mmlu"])),
        base["mmlu"],
    )
