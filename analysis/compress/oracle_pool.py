"""The oracle's cells in parallel: local worker processes or a Dask cluster fill the cell cache.

An oracle cell (:mod:`analysis.compress.oracle`) is independent of every other, but cells of one
layer share the dense stream that enters it, so the cells are split into ``n`` contiguous runs of
layers, one per task. Each task loads the model by name (every worker must be able to load it: a
registry name, or a folder they all see) and runs :func:`~analysis.compress.oracle.measure` over its
cells, which writes each one to the shared disk cache as it finishes. :func:`measure` then reads
every cell back in this process, so an interrupted parallel run resumes like a serial one.
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor
from transformer_lens import HookedTransformer

from analysis.compress import oracle
from analysis.compress.plan import Operation
from analysis.models import load_model
from analysis.progress import progress


def chunks(unit_names: Sequence[str], n: int) -> list[list[str]]:
    """``unit_names`` split into at most ``n`` runs of contiguous layers with about equal cell counts."""
    by_layer: dict[int, list[str]] = {}
    for u in unit_names:
        by_layer.setdefault(oracle.OracleCell(u, oracle.REMOVE).layer, []).append(u)
    layers = sorted(by_layer)
    n = max(1, min(n, len(layers)))
    size = -(-len(layers) // n)
    return [[u for l in layers[i : i + size] for u in by_layer[l]] for i in range(0, len(layers), size)]


def _task(model_name: str, device: str | None, windows: Tensor, units: list[str], operations, kw: dict) -> int:
    torch.set_num_threads(1)
    model = load_model(model_name, device=device)
    oracle.measure(model, windows, units, operations, desc=f"oracle cells {units[0]}…", **kw)
    return len(units)


def measure(
    model: HookedTransformer,
    model_name: str,
    windows: Tensor,
    unit_names: Sequence[str],
    operations: Mapping[str, Sequence[Operation] | None] = oracle.OPERATIONS,
    n_procs: int = 2,
    client: Any = None,
    **kw,
) -> oracle.Oracle:
    """:func:`analysis.compress.oracle.measure` with its cells computed by ``n_procs`` spawned local
    processes, or by ``client`` (a ``dask.distributed.Client``) through ``client.map``; ``kw`` are
    measure's other arguments (batch size, facts, MMLU). A script that calls it with local processes
    needs the ``if __name__ == "__main__":`` guard (the workers import it again)."""
    if kw.get("cache") is False:
        raise ValueError("A parallel oracle passes its cells through the disk cache; cache=False cannot be used.")
    device = str(model.cfg.device)
    parts = chunks(unit_names, n_procs)
    args = [(model_name, device, windows, part, dict(operations), kw) for part in parts]
    if client is not None:
        futures = client.map(_task, *zip(*args), pure=False)
        client.gather(futures)
    elif len(parts) > 1:
        with ProcessPoolExecutor(len(parts), mp_context=mp.get_context("spawn")) as pool:
            for _ in progress(pool.map(_task, *zip(*args)), total=len(parts), desc="oracle workers"):
                pass
    return oracle.measure(model, windows, unit_names, operations, **kw)
