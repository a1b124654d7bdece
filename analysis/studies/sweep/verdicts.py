"""The study's verdicts: the seed's four claims and the open question, judged on one run.

:func:`verdicts` assembles the claims of :mod:`~analysis.studies.sweep.claims` on every cell of a
:class:`~analysis.studies.sweep.results.SweepResult` (seed grid, random controls and uniform cells,
all scored on one reference), counting by default only the comparisons with a usable side: a
model below the unigram model's perplexity. :func:`verdicts_by_limit` shows how far each verdict
rests on where that line is drawn.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import pandas as pd

from analysis.studies.sweep.claims import (
    CLAIMS,
    aggressive_settings,
    claim_aggressive,
    claim_comparable,
    claim_perform_well,
    claim_pruning,
    open_question,
)
from analysis.studies.sweep.results import SweepResult
from analysis.studies.verdicts import Verdict

UNIGRAM = "unigram"
"""The default ``limit`` of :func:`verdicts`: the run's own unigram line (:attr:`SweepResult.limit`)."""


def verdicts(result: SweepResult, limit: float | str | None = UNIGRAM) -> list[Verdict]:
    """The chapter's verdict table: the seed's four claims, then the open question.

    ``limit``: a perplexity; a comparison counts only when one of its sides lies below it
    (:mod:`~analysis.studies.sweep.claims`). :data:`UNIGRAM` (the default) is the run's unigram
    line; ``None`` counts every cell, as the seed's reading would."""
    if limit == UNIGRAM:
        limit = result.limit
    cfg, results, boot, uniform = result.config, result.results, result.boot, result.uniform
    seed_cells = [r for r in results if not r.cell.allocation.startswith("random:")]
    grid = {(tuple(p), tuple(b)) for p in cfg.prunes for b in cfg.bits}
    seed_grid = [r for r in seed_cells if r.cell.setting in grid]
    out = [
        claim_pruning(seed_grid, boot, limit),
        claim_comparable(results, uniform, boot, cfg.margin, limit),
        claim_perform_well(results, uniform, boot, limit=limit),
        claim_aggressive(results, uniform, boot, aggressive_settings(results, cfg, limit), limit=limit),
        open_question(results, uniform, boot, cfg.margin, limit=limit),
    ]
    if limit is None:
        return out
    scope = f"; only comparisons with a usable side (perplexity below {limit:.4g})"
    return [dataclasses.replace(v, criterion=v.criterion + scope) for v in out]


def verdicts_by_limit(result: SweepResult, limits: Mapping[str, float | None]) -> pd.DataFrame:
    """Every claim's verdict and our number under each named perplexity limit (``None``: every
    cell counts): how far the verdicts rest on where the line between usable and broken is drawn.

    Rows are the claims (seed order, then the open question); columns are ``limits``' names."""
    columns = {}
    for name, limit in limits.items():
        vs = verdicts(result, limit)
        columns[name] = [v.summary() for v in vs]
    claims = [f"{i + 1}. {c[:60]}..." for i, c in enumerate(CLAIMS)] + ["open question: beats uniform at matched size?"]
    return pd.DataFrame(columns, index=pd.Index(claims, name="claim"))
