"""What one run of the synthesis study gives a chapter (:class:`SynthesisResult`), and the paired
comparisons its verdicts read (:meth:`SynthesisResult.gains`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pandas as pd

from analysis import stats
from analysis.studies.synthesis import allocate
from analysis.studies.synthesis.config import SynthesisConfig
from analysis.studies.synthesis.leaderboard import Score, frame
from analysis.studies.synthesis.signals import Signal

PUBLISHED_SIGNALS = ("Block Influence (ShortGPT)", "angular distance (Gromov)")
"""The signals behind the published removal procedures: they are the reference of question 2, not candidates."""


@dataclass(frozen=True)
class SynthesisResult:
    """Signals, the oracle's maps and every allocation's score, for one model under one profile."""

    config: SynthesisConfig
    signals: dict[str, Signal]
    oracles: dict[str, Signal]
    """The oracle's cost maps by operation (:func:`~analysis.studies.synthesis.run.oracle_signals`)."""
    scores: tuple[Score, ...]
    """The leaderboard, every allocation at every operation and budget."""
    base: Score
    """The uncompressed model on the same windows and facts."""
    usable: float
    """The unigram model's perplexity on those windows: a compressed model is usable below it."""

    def score(self, name: str, op: str, budget) -> Score | None:
        """The allocation called ``name`` under ``op`` at ``budget``, if it ran."""
        for s in self.scores:
            a = s.allocation
            if a.name == name and a.op == op and a.budget == budget:
                return s
        return None

    def budgets(self, op: str) -> list:
        return sorted({s.allocation.budget for s in self.scores if s.allocation.op == op and not s.allocation.wanda})

    def gains(self, op: str, reference: str) -> dict[str, list[stats.Difference]]:
        """Per signal, at every budget of ``op``: (``reference``'s − the signal's) mean NLL per token,
        paired over windows (positive: the signal's allocation is better)."""
        out: dict[str, list[stats.Difference]] = {}
        for name in self.signals:
            row = []
            for b in self.budgets(op):
                ref, mine = self.score(reference, op, b), self.score(name, op, b)
                if ref is not None and mine is not None:
                    row.append(ref.versus(mine))
            out[f"{name} ({op})"] = row
        return out

    def frame(self) -> pd.DataFrame:
        """The leaderboard table (:func:`~analysis.studies.synthesis.leaderboard.frame`)."""
        return frame([self.base, *self.scores], self.base, self.usable)

    def random_spread(self, op: str) -> pd.DataFrame:
        """Per budget: the random allocations' mean and range of Δ log-ppl against the dense model."""
        rows = []
        for b in self.budgets(op):
            d = [
                s.versus(self.base).estimate
                for s in self.scores
                if s.allocation.op == op and s.allocation.budget == b and s.allocation.name.startswith(allocate.RANDOM)
            ]
            if d:
                rows.append({"budget": b, "mean": sum(d) / len(d), "min": min(d), "max": max(d), "n": len(d)})
        return pd.DataFrame(rows)


def candidates(result: SynthesisResult, names: Sequence[str] | None = None) -> dict[str, Signal]:
    """The signals that compete in question 2: all but the published procedures' own."""
    return {k: v for k, v in result.signals.items() if k not in PUBLISHED_SIGNALS and (names is None or k in names)}


def answer(result: SynthesisResult, prediction: pd.DataFrame) -> list[str]:
    """The chapter's answer in sentences, every number read from the run: per oracle, the signal that
    predicts it best and the cheapest signal whose interval reaches that best estimate; per operation,
    the allocation of lowest mean Δ log-perplexity over the budgets beside uniform's and the oracle's."""
    lines = []
    # a cost only partly recorded (an entry computed before records were kept) cannot be the cheapest
    seconds = {k: s.cost.seconds if s.cost.complete else float("inf") for k, s in result.signals.items()}
    for oracle, rows in prediction.groupby("oracle", sort=False):
        rows = rows.set_index("signal")
        best = rows["spearman"].idxmax()
        reach = rows[rows["spearman high"] >= rows.loc[best, "spearman"]]
        cheap = min(reach.index, key=lambda k: seconds.get(k, float("inf")))
        lines.append(
            f"oracle {oracle}: best {best} (ρ = {rows.loc[best, 'spearman']:.2f} "
            f"[{rows.loc[best, 'spearman low']:.2f}, {rows.loc[best, 'spearman high']:.2f}], "
            f"{seconds.get(best, float('nan')):.3g} s); cheapest within reach (cost recorded) {cheap} "
            f"(ρ = {rows.loc[cheap, 'spearman']:.2f}, {seconds.get(cheap, float('nan')):.3g} s)"
        )
    board = result.frame()
    for op in ("remove", "prune", "quantize"):
        sub = board[board["operation"] == op]
        if sub.empty:
            continue
        mean = sub.groupby("allocation")["Δ log-ppl"].mean()
        signals = mean[mean.index.isin(list(result.signals))]
        if signals.empty:
            continue
        top = signals.idxmin()
        extra = ", ".join(f"{n} {mean[n]:+.3f}" for n in (allocate.UNIFORM, allocate.ORACLE) if n in mean)
        lines.append(
            f"{op}: best signal allocation {top} {mean[top]:+.3f} nats/token on average over budgets ({extra})"
        )
    return lines
