"""The cells of the sweep: one compressed model each, evaluated and cached.

A :class:`Cell` names one compressed model: how components are sorted into low / medium /
high density (an *allocation*: a score's z-score levels, the seed's "constant" baselines,
uniform compression, or a random shuffle of a score's levels as a control) and what each
level gets (a prune fraction and a bit width per level). :func:`run_sweep` evaluates cells
against a :class:`analysis.evaluate.Reference`, caching each on disk so an interrupted sweep
resumes; a constant allocation is the uniform cell of its level's setting, computed once.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import multiprocessing as mp
import random
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import distributed
import pandas as pd
import torch
from transformer_lens import HookedTransformer

from analysis import compress
from analysis.cache import DiskCache, cache_key, cached
from analysis.evaluate import Comparison, Reference
from analysis.models import load_model, model_key, n_params
from analysis.progress import progress
from analysis.scores import LEVELS, ComponentScores
from analysis.studies.sweep.config import CONSTANT, TERCILES, UNIFORM, SweepConfig

CACHE_VERSION = 2
"""Bumped when what a cached cell holds changes (2: per-window NLL and per-fact hits)."""


def seed_grid(cfg: SweepConfig, allocations: Sequence[str]) -> list["Cell"]:
    """The seed's design: every allocation (plus the constant baselines) x prune x bits."""
    return grid(list(allocations) + list(CONSTANT), cfg.prunes, cfg.bits)


def control_grid(cfg: SweepConfig, allocations: Sequence[str]) -> list["Cell"]:
    """``cfg.n_shuffles`` random controls of each allocation at each of ``cfg.controls``."""
    names = [f"random:{a}:{s}" for a in allocations for s in range(cfg.n_shuffles)]
    return [Cell(a, tuple(p), tuple(b)) for p, b in cfg.controls for a in names]


def tercile_grid(cfg: SweepConfig) -> list["Cell"]:
    """Each of ``cfg.tercile_scores`` bucketed by equal-count terciles at each of ``cfg.terciles``,
    with ``cfg.n_shuffles`` random controls of that allocation."""
    names = [f"{score}{TERCILES}" for score in cfg.tercile_scores]
    names += [f"random:{n}:{s}" for n in list(names) for s in range(cfg.n_shuffles)]
    return [Cell(a, tuple(p), tuple(b)) for p, b in cfg.terciles for a in names]


def uniform_grid(cfg: SweepConfig) -> list["Cell"]:
    """Uniform compression at ``cfg.uniform`` (the constant baselines add more uniform cells)."""
    return [Cell(UNIFORM, (p, p, p), (b, b, b)) for p, b in cfg.uniform]


@dataclass(frozen=True)
class Cell:
    """One compressed model of the sweep.

    ``allocation`` is a score name (its levels), ``"constant low"``/``"constant high"``, or
    ``"random:<score>:<seed>"`` (that score's levels shuffled over the layers of each kind: same
    bucket sizes per kind, hence exactly the same model size, with the information removed). ``prune`` and ``bits`` give
    (low, medium, high); a bit width of 16 or more leaves the weights unquantized.
    """

    allocation: str
    prune: tuple[float, float, float] = (0.0, 0.0, 0.0)
    bits: tuple[int, int, int] = (16, 16, 16)

    def __post_init__(self):
        for name, v in (("prune", self.prune), ("bits", self.bits)):
            if len(v) != 3:
                raise ValueError(f"Cell.{name} needs one value per level (low, medium, high), got {v!r}.")
        for f in self.prune:
            compress.Prune(f)  # validates [0, 1)
        for b in self.bits:
            if not isinstance(b, int) or not 1 <= b <= 32:
                raise ValueError(f"Cell.bits must be integers in [1, 32], got {self.bits!r}.")

    @property
    def label(self) -> str:
        """``"<allocation> | prune [..] | bits [..]"``, for progress lines and plots."""
        return f"{self.allocation} | prune {list(self.prune)} | bits {list(self.bits)}"

    @property
    def setting(self) -> tuple[tuple[float, float, float], tuple[int, int, int]]:
        """``(prune, bits)``."""
        return self.prune, self.bits

    def canonical(self) -> "Cell":
        """The same compressed model under one name: a constant allocation, or uniform with equal
        settings per level, is the uniform cell of its level's setting."""
        if self.allocation in CONSTANT or self.allocation == UNIFORM:
            i = LEVELS.index("medium" if self.allocation == UNIFORM else self.allocation.split()[1])
            return Cell(UNIFORM, (self.prune[i],) * 3, (self.bits[i],) * 3)
        return self

    @property
    def is_uniform(self) -> bool:
        """True when every component gets the same prune fraction and bit width."""
        return self.canonical().allocation == UNIFORM


def level_assignment(allocation: str, scores: Mapping[str, ComponentScores], threshold: float = 0.5) -> dict[str, str]:
    """``{component: level}`` for an allocation name (see :class:`Cell`)."""
    any_scores = next(iter(scores.values()), None)
    if allocation in CONSTANT or allocation == UNIFORM:
        if any_scores is None:
            raise ValueError("Constant allocations still need one score to list the components.")
        level = "medium" if allocation == UNIFORM else allocation.split()[1]
        return {c: level for c in any_scores.components}
    if allocation.startswith("random:"):
        _, name, seed = allocation.split(":")
        base = level_assignment(name, scores, threshold)
        rng = random.Random(int(seed))
        out = {}
        for kind in ("attn", "mlp"):  # shuffle within a kind: layers of one kind have equal sizes
            comps = [c for c in base if c.endswith(kind)]
            lv = [base[c] for c in comps]
            rng.shuffle(lv)
            out.update(zip(comps, lv))
        return {c: out[c] for c in base}
    if allocation.endswith(TERCILES) and allocation[: -len(TERCILES)] in scores:
        return scores[allocation[: -len(TERCILES)]].tercile_levels()
    if allocation not in scores:
        raise ValueError(
            f"Unknown allocation {allocation!r}; use one of {list(scores) + list(CONSTANT) + [UNIFORM]} "
            "or 'random:<score>:<seed>'."
        )
    return scores[allocation].levels(threshold)


def plan_for(cell: Cell, levels: Mapping[str, str], dense_bits: int = 16) -> compress.CompressionPlan:
    """The compression plan of a cell: each component gets its level's prune fraction and bits."""
    ops = {}
    for comp, level in levels.items():
        i = LEVELS.index(level)
        o = []
        if cell.prune[i] > 0:
            o.append(compress.Prune(cell.prune[i]))
        if cell.bits[i] < dense_bits:
            o.append(compress.Quantize(cell.bits[i]))
        if o:
            ops[comp] = o
    return compress.CompressionPlan(ops, dense_bits=dense_bits)


def grid(allocations: Sequence[str], prunes: Sequence[Sequence[float]], bits: Sequence[Sequence[int]]) -> list[Cell]:
    """Every (allocation, prune, bits) combination as cells."""
    # setting-major: consecutive cells share most (weight, operations) pairs, which the
    # compression memo then serves without recomputing
    cells = [Cell(a, tuple(p), tuple(b)) for p, b, a in itertools.product(prunes, bits, allocations)]
    if not cells:
        raise ValueError("Empty sweep grid: give at least one allocation, one prune setting and one bits setting.")
    return cells


@dataclass(frozen=True)
class CellResult:
    """A cell's evaluation. ``bits_per_weight`` is over the compressed (attention and MLP) weights.

    The per-window NLL sums and per-fact hits are kept, so that intervals (:meth:`perplexity_interval`,
    :meth:`fact_recall_interval`) and paired comparisons between cells can be computed later."""

    cell: Cell
    perplexity: float
    kl: float
    fact_recall: float
    accuracy: float
    bits_per_weight: float
    model_mb: float
    """Whole model in MB (10^6 bytes): compressed weights plus every other parameter at 16 bits."""
    apply_s: float
    eval_s: float
    counts: dict = field(default_factory=dict)
    """How many components fell in each level."""
    window_nll: tuple[float, ...] = ()
    """Summed NLL of each evaluation window (:attr:`analysis.evaluate.Comparison.window_nll`)."""
    window_tokens: tuple[int, ...] = ()
    fact_hits: tuple[bool, ...] = ()

    def comparison(self):
        """The evaluation as an :class:`analysis.evaluate.Comparison` (for its intervals)."""
        n = sum(self.window_tokens)
        return Comparison(
            math.log(self.perplexity),
            self.accuracy,
            self.kl,
            self.fact_recall,
            n,
            len(self.fact_hits),
            self.window_nll,
            self.window_tokens,
            self.fact_hits,
        )

    def perplexity_interval(self, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
        """95% bootstrap interval of the perplexity over evaluation windows."""
        return self.comparison().perplexity_interval(n_boot, seed)

    def fact_recall_interval(self) -> tuple[float, float]:
        """95% Wilson interval of the fact recall."""
        return self.comparison().fact_recall_interval()

    def row(self) -> dict:
        """The result as one row of :func:`frame` (prune and bits as strings, e.g. ``"[0.3, 0.2, 0.1]"``)."""
        c = self.cell
        return {
            "allocation": c.allocation,
            "prune": str(list(c.prune)),
            "bits": str(list(c.bits)),
            "perplexity": self.perplexity,
            "KL": self.kl,
            "fact recall": self.fact_recall,
            "accuracy": self.accuracy,
            "bits/weight": self.bits_per_weight,
            "model MB": self.model_mb,
            "apply s": self.apply_s,
            "eval s": self.eval_s,
        }


def evaluate_cell(
    model: HookedTransformer, reference, cell: Cell, scores: Mapping[str, ComponentScores], threshold: float = 0.5
) -> CellResult:
    """Compress ``model`` as ``cell`` says (reversibly), score it against ``reference``, restore it."""
    levels = level_assignment(cell.allocation, scores, threshold)
    plan = plan_for(cell, levels)
    t0 = time.perf_counter()
    with plan.applied(model) as size:
        t1 = time.perf_counter()
        r = reference.score(model)
        t2 = time.perf_counter()
    counts = {lv: sum(v == lv for v in levels.values()) for lv in LEVELS}
    return CellResult(
        cell,
        r.perplexity,
        r.kl,
        r.fact_recall,
        r.accuracy,
        size.bits_per_weight if size.n_weights else 16.0,
        _model_mb(model, size),
        t1 - t0,
        t2 - t1,
        counts,
        r.window_nll,
        r.window_tokens,
        r.fact_hits,
    )


def _model_mb(model, size) -> float:
    if size.n_weights:
        return size.model_bits / 8e6
    return n_params(model) * size.dense_bits / 8e6


# worker state for run_sweep(n_procs > 1)
_WORKER: dict = {}


def _worker_init(model_name: str, reference_args: dict, scores: dict, threshold: float) -> None:
    torch.set_num_threads(1)
    model = load_model(model_name)
    _WORKER.update(model=model, reference=Reference(model, **reference_args), scores=scores, threshold=threshold)


def _worker_cell(cell: Cell) -> CellResult:
    w = _WORKER
    return evaluate_cell(w["model"], w["reference"], cell, w["scores"], w["threshold"])


def _dask_cell(cell: Cell, model_name: str, reference_args: dict, scores: dict, threshold: float) -> CellResult:
    """One cell on a Dask worker: the worker loads the model once and keeps it for later cells."""
    if _WORKER.get("model_name") != model_name:
        _worker_init(model_name, reference_args, scores, threshold)
        _WORKER["model_name"] = model_name
    return _worker_cell(cell)


def _run_in_pool(missing: list[Cell], n_procs: int, initargs: tuple, save, desc: str) -> None:
    """Evaluate ``missing`` in ``n_procs`` spawned worker processes, calling ``save(cell, result)`` in
    this process as each cell finishes. An interrupt (Ctrl-C) or error saves every finished cell,
    cancels the queued ones, terminates the workers at once and is raised again."""
    pool = ProcessPoolExecutor(n_procs, mp_context=mp.get_context("spawn"), initializer=_worker_init, initargs=initargs)
    futures = {pool.submit(_worker_cell, c): c for c in missing}
    saved = set()
    try:
        for future in progress(as_completed(futures), total=len(missing), desc=desc):
            save(futures[future], future.result())
            saved.add(future)
    except BaseException:
        for future, c in futures.items():
            if future not in saved and future.done() and not future.cancelled() and future.exception() is None:
                save(c, future.result())
            future.cancel()
        # no public way to stop busy workers before Python 3.14: terminate them, then let the pool's
        # manager thread (which reaps them once it sees them gone) finish before joining them here
        workers, manager = list((pool._processes or {}).values()), pool._executor_manager_thread
        for w in workers:
            w.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        if manager is not None:
            manager.join(timeout=10)
        for w in workers:
            w.join(timeout=10)
        raise
    pool.shutdown(wait=True)


def run_sweep(
    model: HookedTransformer,
    reference,
    cells: Iterable[Cell],
    scores: Mapping[str, ComponentScores],
    *,
    threshold: float = 0.5,
    cache_config: dict | None = None,
    n_procs: int = 1,
    model_name: str | None = None,
    reference_args: dict | None = None,
    desc: str = "sweep",
    client=None,
) -> list[CellResult]:
    """Evaluate every cell; each is cached under ``cache_config`` (the reference's settings) plus
    the cell and the scores it depends on, so a rerun or an interrupted sweep resumes.

    ``n_procs > 1`` evaluates missing cells in local worker processes; ``client`` (a
    ``dask.distributed.Client``, e.g. ``Client("tcp://scheduler:8786")``) sends them to a Dask
    cluster instead, through ``client.map``. Either way each worker loads ``model_name`` once
    (a name every worker can load, or a folder they all see) and rebuilds the reference from
    ``reference_args``; results are written to this process's cache as they arrive, so an
    interrupted distributed sweep resumes too. Ctrl-C stops at once: finished cells are kept,
    queued ones dropped, local workers terminated. Worker processes are spawned, so they import the
    calling script again: a script that calls ``run_sweep(n_procs > 1)`` needs the
    ``if __name__ == "__main__":`` guard.
    """
    cells = list(cells)
    if not cells:
        raise ValueError("Empty sweep grid: give at least one cell.")
    if cache_config is None:
        raise ValueError("run_sweep needs cache_config (the reference's tokens, context and facts) to key its cache.")
    score_key = {k: v.values.tolist() for k, v in scores.items()}

    def key_of(c: Cell) -> dict:
        c = c.canonical()  # a constant allocation is computed once, as its uniform cell
        return {
            "sweep": cache_config,
            "cell": dataclasses.asdict(c),
            "scores": score_key if not c.is_uniform else None,
            "threshold": threshold,
            "version": CACHE_VERSION,
        }

    mkey = model_key(model)
    if n_procs > 1 or client is not None:
        store = DiskCache()

        def save(c: Cell, result: CellResult) -> None:
            store.save("sweep/cell", cache_key("sweep/cell", key_of(c), mkey), result)

        missing = list(
            {
                c.canonical(): None
                for c in cells
                if not store.load("sweep/cell", cache_key("sweep/cell", key_of(c), mkey))[0]
            }
        )
        if missing and (model_name is None or reference_args is None):
            raise ValueError("Workers need model_name and reference_args to rebuild the model and the reference.")
        if missing and client is not None:
            futures = client.map(
                _dask_cell,
                missing,
                model_name=model_name,
                reference_args=reference_args,
                scores=dict(scores),
                threshold=threshold,
                pure=False,
            )
            cell_of = {f.key: c for f, c in zip(futures, missing)}
            try:
                for future in progress(distributed.as_completed(futures), total=len(missing), desc=desc):
                    save(cell_of[future.key], future.result())
            except BaseException:  # Ctrl-C: keep what finished, drop the rest of the queue
                for f in futures:
                    if f.status == "finished":
                        save(cell_of[f.key], f.result())
                client.cancel(futures)
                raise
        elif missing:
            _run_in_pool(missing, n_procs, (model_name, reference_args, dict(scores), threshold), save, desc)
    out = []
    for c in progress(cells, desc=desc):
        r = cached(
            "sweep/cell", lambda c=c: evaluate_cell(model, reference, c.canonical(), scores, threshold), key_of(c), mkey
        )
        out.append(dataclasses.replace(r, cell=c))
    return out


def frame(results: Sequence[CellResult]):
    """All results as a pandas table, one row per cell."""
    return pd.DataFrame([r.row() for r in results])
