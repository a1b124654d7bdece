"""analysis.studies.sweep.run_sweep: Ctrl-C on a parallel sweep stops at once and keeps finished cells.

The workers run stub cells: functions of this module, which they import by name (the test puts
this folder on ``sys.path``, which spawned workers inherit).
"""

from __future__ import annotations

import importlib
import multiprocessing
import time
from pathlib import Path

import pytest

SLOW_S = 60.0
"""How long a queued stub cell would take: far longer than the test may wait."""


def stub_init(*args) -> None:
    """A worker needs no model for stub cells."""


def stub_cell(cell):
    """A cheap stub result; a cell whose allocation is ``"slow"`` sleeps first."""
    from analysis.studies.sweep import CellResult

    if cell.allocation == "slow":
        time.sleep(SLOW_S)
    return CellResult(cell, float(sum(cell.bits)), 0.0, 1.0, 0.5, 16.0, 1.0, 0.0, 0.0)


def test_ctrl_c_on_a_parallel_sweep_keeps_finished_cells_and_stops_at_once(tmp_path, monkeypatch):
    import analysis.cache as cache_mod
    from analysis.studies import sweep

    monkeypatch.setattr(cache_mod, "CACHE_DIR", tmp_path)
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    stubs = importlib.import_module(Path(__file__).stem)  # importable by name, as the workers import it
    monkeypatch.setattr(sweep.cells, "_worker_init", stubs.stub_init)
    monkeypatch.setattr(sweep.cells, "_worker_cell", stubs.stub_cell)
    monkeypatch.setattr(sweep.cells, "model_key", lambda model: "stub-model")

    pressed = []

    def interrupted(items, *a, **k):  # Ctrl-C in the parent after two cells came back
        for i, item in enumerate(items):
            yield item
            if i == 1:  # once the second finished cell is handled, before waiting for a third
                pressed.append(time.perf_counter())
                raise KeyboardInterrupt

    monkeypatch.setattr(sweep.cells, "progress", interrupted)
    fast = [sweep.Cell("fast", (0.0,) * 3, (b, b, b)) for b in (2, 3)]
    cells = fast + [sweep.Cell("slow", (0.0,) * 3, (b, b, b)) for b in (4, 5, 6, 7, 8, 9)]
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(None, None, cells, {}, cache_config={"t": 1}, n_procs=2, model_name="stub", reference_args={})
    assert time.perf_counter() - pressed[0] < SLOW_S / 4  # at once, not after the running and queued cells
    assert not multiprocessing.active_children()  # no worker left running
    assert len(list(tmp_path.rglob("*.pt"))) == 2  # the two finished cells, and only them
    monkeypatch.setattr(sweep.cells, "progress", lambda items, *a, **k: items)
    monkeypatch.setattr(sweep.cells, "evaluate_cell", lambda *a: pytest.fail("a finished cell was evaluated again"))
    again = sweep.run_sweep(None, None, fast, {}, cache_config={"t": 1})
    assert [r.perplexity for r in again] == [6.0, 9.0]
