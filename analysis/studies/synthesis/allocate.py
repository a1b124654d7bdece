"""One allocator that every signal drives, at matched total size.

An :class:`Allocation` says what each component gets under one operation and budget:

- **prune** (mean fraction ``b``): within each kind, the ``n // 3`` layers a signal ranks lowest are
  pruned at ``b + spread``, as many at the top at ``b - spread``, the rest at ``b``. Layers of one
  kind have equal sizes and a pruned matrix's stored bits are linear in its fraction, so every
  allocation has exactly the uniform allocation's size.
- **quantize** (mean bit width ``b``): the thirds get ``b - 1``, ``b`` and ``b + 1`` bits.
- **remove** (``k`` layers): the ``k`` blocks of lowest block value (:meth:`Signal.block_values`)
  are dropped whole.

A signal that covers attention only leaves every MLP at the budget's middle setting. The
baselines are built the same way: uniform (every component at ``b``), random allocations (a seeded
shuffle of the thirds within each kind, or ``k`` random layers), the oracle's own allocation (the
oracle's cost of the same operation as the signal), and the published procedures: ShortGPT's
lowest-BI layers (:func:`analysis.geometry.removal.shortgpt_layers`), Gromov et al.'s block of
``k`` consecutive layers at the smallest angular distance (:func:`analysis.geometry.removal.gromov_block`),
and Wanda's own pruning at 50% (:class:`analysis.compress.WandaPrune`).
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from typing import Iterator, Sequence

from transformer_lens import HookedTransformer

from analysis import compress
from analysis.components import KINDS, component
from analysis.compress import oracle
from analysis.compress.plan import Calibration
from analysis.studies.synthesis.signals import Signal

UNIFORM = "uniform"
RANDOM = "random"
ORACLE = "oracle"
SHORTGPT = "ShortGPT (lowest BI)"
GROMOV = "Gromov (block at min angular distance)"
WANDA50 = "Wanda 50% (as published)"


@dataclass(frozen=True)
class Allocation:
    """One compressed model: ``settings`` maps a component to its prune fraction or bit width
    (``op`` "prune"/"quantize"), or ``removed`` lists the layers dropped (``op`` "remove")."""

    name: str
    op: str
    budget: float
    settings: tuple[tuple[str, float], ...] = ()
    removed: tuple[int, ...] = ()
    wanda: bool = False
    """Prune by Wanda's ``|w| ‖x‖`` per output instead of magnitude (needs a calibration)."""

    def key(self) -> dict:
        """What the compressed model depends on (not the name): equal keys are one model."""
        return {"op": self.op, "settings": list(self.settings), "removed": list(self.removed), "wanda": self.wanda}

    @contextlib.contextmanager
    def applied(self, model: HookedTransformer, calibration: Calibration | None = None) -> Iterator[None]:
        """``model`` compressed as allocated, for the ``with`` block (restored after)."""
        if self.op == "remove":
            with contextlib.ExitStack() as stack:
                for layer in self.removed:
                    stack.enter_context(oracle.applied(model, oracle.OracleCell(oracle.block(layer), "remove"), None))
                yield
            return
        make = (
            (lambda v: compress.WandaPrune(v) if self.wanda else compress.Prune(v))
            if self.op == "prune"
            else (lambda v: compress.Quantize(int(v)))
        )
        ops = {c: [make(v)] for c, v in self.settings if not (self.op == "prune" and v == 0)}
        plan = compress.CompressionPlan(ops, calibration=calibration or Calibration())
        with plan.applied(model):
            yield


def check_budget(op: str, budget: float, n_layers: int) -> None:
    if op == "remove" and not (isinstance(budget, int) and 0 <= budget < n_layers):
        raise ValueError(f"A removal budget is a layer count in [0, {n_layers}), got {budget!r}.")
    if op not in ("remove", "prune", "quantize"):
        raise ValueError(f"Unknown operation {op!r}; use 'remove', 'prune' or 'quantize'.")


def level_settings(op: str, budget: float, spread: float) -> dict[str, float]:
    """``{level: setting}``: the thirds' prune fractions or bit widths around ``budget``. The "low"
    third (least information) is compressed hardest: pruned more, or given fewer bits."""
    if op == "prune":
        return {"low": budget + spread, "medium": budget, "high": budget - spread}
    return {"low": budget - 1, "medium": budget, "high": budget + 1}


def _third(rank: int, n: int) -> str:
    """The level of the ``rank``-th lowest of ``n`` layers: the lowest ``n // 3`` "low", as many at the
    top "high", the rest "medium", so the low and high thirds balance and the mean setting is the budget."""
    return "low" if rank < n // 3 else "high" if rank >= n - n // 3 else "medium"


def _tiered(name: str, op: str, budget: float, levels: dict[str, str], spread: float) -> Allocation:
    by_level = level_settings(op, budget, spread)
    return Allocation(name, op, budget, tuple((c, float(by_level[lv])) for c, lv in levels.items()))


def _all_levels(n_layers: int, kinds: Sequence[str] = KINDS, level: str = "medium") -> dict[str, str]:
    return {component(l, k): level for l in range(n_layers) for k in kinds}


def by_signal(signal: Signal, op: str, budget: float, spread: float = 0.2, name: str | None = None) -> Allocation:
    """The allocation ``signal`` drives (see the module docstring)."""
    s = signal.scores
    n = s.values.shape[0]
    check_budget(op, budget, n)
    name = name or signal.name
    if op == "remove":
        values = signal.block_values()
        order = sorted(range(n), key=lambda l: (values[l], l))
        return Allocation(name, op, budget, removed=tuple(sorted(order[: int(budget)])))
    levels = _all_levels(n)
    ranks = s.rank()
    for k, kind in enumerate(s.kinds):
        levels.update({component(l, kind): _third(int(ranks[l, k]), n) for l in range(n)})
    return _tiered(name, op, budget, levels, spread)


def uniform(n_layers: int, op: str, budget: float) -> Allocation:
    """Every component at ``budget``."""
    check_budget(op, budget, n_layers)
    if op == "remove":
        raise ValueError("Removal has no uniform allocation: a layer is dropped or kept.")
    return _tiered(UNIFORM, op, budget, _all_levels(n_layers), 0.0)


def randomized(n_layers: int, op: str, budget: float, seed: int, spread: float = 0.2) -> Allocation:
    """A seeded random allocation of the same size: the thirds shuffled within each kind, or ``k``
    random layers."""
    check_budget(op, budget, n_layers)
    rng = random.Random(seed)
    name = f"{RANDOM} {seed}"
    if op == "remove":
        return Allocation(name, op, budget, removed=tuple(sorted(rng.sample(range(n_layers), int(budget)))))
    levels = {}
    for k in KINDS:
        thirds = [_third(r, n_layers) for r in range(n_layers)]
        rng.shuffle(thirds)
        levels.update({component(l, k): lv for l, lv in enumerate(thirds)})
    return _tiered(name, op, budget, levels, spread)


def removal(name: str, layers: Sequence[int]) -> Allocation:
    """A published removal procedure's choice of layers."""
    return Allocation(name, "remove", len(layers), removed=tuple(sorted(layers)))


def wanda50(n_layers: int) -> Allocation:
    """Wanda's own unstructured pruning at 50% of every attention and MLP weight."""
    levels = _all_levels(n_layers)
    return Allocation(WANDA50, "prune", 0.5, tuple((c, 0.5) for c in levels), wanda=True)
