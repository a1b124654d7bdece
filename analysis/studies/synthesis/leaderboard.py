"""The allocation leaderboard: every allocation scored on the same held-out windows and facts.

:func:`evaluate` scores one :class:`~analysis.studies.synthesis.allocate.Allocation` against an
:class:`analysis.evaluate.Reference` (the eval windows and facts the oracle never saw), caching
each compressed model's score under what it depends on (:meth:`Allocation.key`), so two signals
that choose the same model share one evaluation and an interrupted run resumes. :class:`Score`
keeps the per-window NLL sums and per-fact hits, so any two allocations compare window by window.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from transformer_lens import HookedTransformer

from analysis import stats
from analysis.cache import cached
from analysis.compress.plan import Calibration
from analysis.data import mmlu_scoring as mmlu
from analysis.evaluate import Reference
from analysis.models import model_key
from analysis.progress import progress
from analysis.studies.synthesis.allocate import Allocation

CACHE_VERSION = 1


@dataclass(frozen=True)
class Score:
    """One allocation on the reference: per-window NLL sums (``tokens`` scored per window), per-fact
    top-1 hits, and MMLU correctness where it was asked for."""

    allocation: Allocation
    window_nll: tuple[float, ...]
    tokens: int
    fact_hits: tuple[bool, ...]
    mmlu_hits: tuple[bool, ...] = ()
    seconds: float = 0.0

    @property
    def log_ppl(self) -> float:
        return sum(self.window_nll) / (self.tokens * len(self.window_nll))

    @property
    def perplexity(self) -> float:
        return math.exp(self.log_ppl)

    @property
    def per_window(self) -> np.ndarray:
        """Mean NLL per token of each window ``[window]``."""
        return np.asarray(self.window_nll) / self.tokens

    @property
    def fact_recall(self) -> float:
        return float(np.mean(self.fact_hits)) if self.fact_hits else float("nan")

    @property
    def mmlu(self) -> float:
        return float(np.mean(self.mmlu_hits)) if self.mmlu_hits else float("nan")

    def versus(self, other: "Score") -> stats.Difference:
        """This allocation's Δ log-perplexity against ``other``'s, paired over windows (t interval)."""
        return stats.paired(self.per_window, other.per_window, unit="windows")


def evaluate(
    model: HookedTransformer,
    reference: Reference,
    allocation: Allocation,
    reference_key: dict,
    calibration: Calibration | None = None,
    calibration_key: str | None = None,
) -> Score:
    """Score ``allocation`` on ``reference``, from the cache when it ran before."""

    def compute() -> Score:
        t0 = time.perf_counter()
        with allocation.applied(model, calibration):
            c = reference.score(model)
        return Score(allocation, c.window_nll, c.window_tokens[0], c.fact_hits, (), time.perf_counter() - t0)

    key = {
        "reference": reference_key,
        "allocation": allocation.key(),
        "calibration": calibration_key if allocation.wanda else None,
        "version": CACHE_VERSION,
    }
    s = cached("synthesis/allocation", compute, key, model_key(model))
    return dataclasses.replace(s, allocation=allocation)


def with_mmlu(
    model: HookedTransformer,
    score: Score,
    items: Sequence[dict],
    calibration: Calibration | None = None,
    calibration_key: str | None = None,
) -> Score:
    """``score`` with its allocation's MMLU correctness on ``items`` (cached apart: MMLU costs more than the rest)."""
    a = score.allocation

    def compute() -> tuple[bool, ...]:
        with a.applied(model, calibration):
            return tuple(mmlu.mmlu_correct(model, list(items)))

    key = {
        "allocation": a.key(),
        "mmlu": [it["id"] for it in items],
        "calibration": calibration_key if a.wanda else None,
        "version": CACHE_VERSION,
    }
    return dataclasses.replace(score, mmlu_hits=cached("synthesis/mmlu", compute, key, model_key(model)))


def evaluate_all(
    model, reference, allocations: Sequence[Allocation], reference_key: dict, desc: str = "leaderboard", **kw
):
    """:func:`evaluate` for every allocation, on a progress bar."""
    return [evaluate(model, reference, a, reference_key, **kw) for a in progress(list(allocations), desc=desc)]


def frame(scores: Sequence[Score], base: Score, usable: float) -> pd.DataFrame:
    """The leaderboard: a row per allocation with perplexity, Δ log-ppl against the dense model with
    its paired interval, whether it stays below the usability line, fact recall and MMLU."""
    rows = []
    for s in scores:
        d = s.versus(base)
        rows.append(
            {
                "operation": s.allocation.op,
                "budget": s.allocation.budget,
                "allocation": s.allocation.name,
                "perplexity": s.perplexity,
                "Δ log-ppl": d.estimate,
                "low": d.low,
                "high": d.high,
                "usable": s.perplexity < usable,
                "fact recall": s.fact_recall,
                "MMLU": s.mmlu,
            }
        )
    return pd.DataFrame(rows)
