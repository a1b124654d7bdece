"""Comparisons at matched size, each with an interval from one shared bootstrap.

Every cell is scored on the same evaluation windows, so two cells are compared window by window:
:class:`Bootstrap` draws window resamples once and every statistic (a cell's log perplexity, a
difference between cells, the uniform frontier at some size) is recomputed on each draw, which
makes all intervals paired. Random controls are resampled too, so an interval against them
includes which shuffles happened to be drawn. The draws give each difference its standard error;
its interval and p-values are Student's t on ``n - 1`` degrees of freedom, ``n`` the windows
(:meth:`Delta.ci`): at the 12 windows of the ``cpu`` profile a percentile interval of the draws
would be too narrow.

- :func:`uniform_frontier`: the Pareto frontier of the uniform cells (the best uniform result
  at each size; a uniform cell that another is both smaller and better than is dropped), and
  log perplexity interpolated linearly in model size between its points;
- :func:`versus_uniform`: a cell's Δ log perplexity against that frontier at the cell's size;
- :func:`versus_random`: a score's allocation against the mean of its random controls (the same
  level counts per kind shuffled over layers, hence exactly the same size), with a one-sided
  bootstrap p-value and Holm's correction over the settings of one score.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from analysis import stats
from analysis.studies import verdicts
from analysis.studies.sweep.cells import CellResult, frame
from analysis.studies.sweep.config import UNIFORM


@dataclass
class Delta:
    """A difference in log perplexity (negative: the first side is better), with its bootstrap draws."""

    label: str
    estimate: float
    draws: np.ndarray
    """``[n_boot]`` replicates of the estimate (NaN where undefined)."""
    n: int = 0
    """Evaluation windows behind it (the unit the bootstrap resamples)."""
    sides: tuple[float, float] = (math.nan, math.nan)
    """Log perplexity of each side (the first side's cell, then its baseline: another cell, the
    uniform frontier at its size, or the mean over random controls); NaN for a pooled difference."""

    def usable(self, limit: float | None) -> bool:
        """:func:`analysis.studies.verdicts.usable` of the two sides' perplexities."""
        return verdicts.usable([math.exp(v) for v in self.sides], limit)

    def se(self) -> float:
        """The standard error: the standard deviation of the draws, scaled by ``sqrt(n / (n - 1))``
        (for a mean of ``n`` windows the draws' spread is the plug-in ``s·sqrt((n-1)/n)/sqrt(n)``)."""
        d = self.draws[~np.isnan(self.draws)]
        if math.isnan(self.estimate) or len(d) < 2:
            return float("nan")
        return float(np.std(d, ddof=1)) * (math.sqrt(self.n / (self.n - 1)) if self.n > 1 else 1.0)

    def _t(self):
        """Student's t on ``n - 1`` degrees of freedom (normal without ``n``)."""
        return sps.t(self.n - 1) if self.n > 1 else sps.norm()

    def ci(self, level: float = 0.95) -> tuple[float, float]:
        """Student's t interval ``estimate ± t_{n-1} · se`` (NaN when the estimate is undefined)."""
        se = self.se()
        if math.isnan(se):
            return float("nan"), float("nan")
        half = float(self._t().ppf(0.5 + level / 2)) * se
        return self.estimate - half, self.estimate + half

    def difference(self, n: int | None = None, level: float = 0.95) -> stats.Difference:
        """As a :class:`analysis.stats.Difference`: :meth:`ci`, the one-sided p of "above 0", and ``n``
        units (default: the windows the draws resample)."""
        lo, hi = self.ci(level)
        return stats.Difference(self.estimate, lo, hi, self.p_above(0.0), self.n if n is None else n, level=level)

    def p_below(self, threshold: float = 0.0) -> float:
        """One-sided p-value for "the difference is below ``threshold``" (t on ``n - 1`` df)."""
        se = self.se()
        if math.isnan(se):
            return float("nan")
        if se == 0:
            return 0.0 if self.estimate < threshold else 1.0
        return float(self._t().cdf((self.estimate - threshold) / se))

    def p_above(self, threshold: float = 0.0) -> float:
        """One-sided p-value for "the difference is above ``threshold``" (t on ``n - 1`` df)."""
        return Delta(self.label, -self.estimate, -self.draws, self.n).p_below(-threshold)

    def __sub__(self, other: "Delta") -> "Delta":
        """The difference of two differences; its sides are the two first sides (the two cells)."""
        return Delta(
            f"{self.label} - {other.label}",
            self.estimate - other.estimate,
            self.draws - other.draws,
            self.n,
            (self.sides[0], other.sides[0]),
        )


def usable(deltas: Sequence[Delta], limit: float | None) -> list[Delta]:
    """The differences with a side whose perplexity lies below ``limit`` (all of them for ``None``)."""
    return [d for d in deltas if d.usable(limit)]


def pooled(deltas: Sequence[Delta], label: str) -> Delta:
    """The mean of several differences (undefined ones dropped), draw by draw."""
    ok = [d for d in deltas if not math.isnan(d.estimate)]
    if not ok:
        return Delta(label, float("nan"), np.full(1, np.nan), 0)
    return Delta(label, float(np.mean([d.estimate for d in ok])), np.mean([d.draws for d in ok], 0), ok[0].n)


class Bootstrap:
    """Window resamples shared by every cell scored on one reference (``n_boot`` x ``n_windows``)."""

    def __init__(self, n_windows: int, n_boot: int = 2000, seed: int = 0):
        if n_windows < 2:
            raise ValueError(f"Paired intervals need at least 2 evaluation windows, got {n_windows}; score more text.")
        self.n_windows = n_windows
        self.n_boot = n_boot
        self.seed = seed
        self.idx = np.random.default_rng(seed).integers(0, n_windows, (n_boot, n_windows))

    def draw_controls(self, k: int, label: str) -> np.ndarray:
        """``[n_boot, k]`` resamples of ``k`` random controls, seeded by the bootstrap and ``label``."""
        rng = np.random.default_rng([self.seed, zlib.crc32(label.encode())])
        return rng.integers(0, k, (self.n_boot, k))

    @classmethod
    def of(cls, results: Sequence[CellResult], n_boot: int = 2000, seed: int = 0) -> "Bootstrap":
        """A bootstrap for cells scored on one reference (they must share its windows)."""
        sizes = {len(r.window_nll) for r in results}
        if len(sizes) != 1:
            raise ValueError(f"Cells were scored on different numbers of windows {sorted(sizes)}; use one reference.")
        return cls(sizes.pop(), n_boot, seed)

    def log_ppl(self, r: CellResult) -> np.ndarray:
        """``[n_boot]`` log perplexity of ``r`` on each window resample."""
        nll, tok = np.asarray(r.window_nll, dtype=float), np.asarray(r.window_tokens, dtype=float)
        if len(nll) != self.n_windows:
            raise ValueError(f"{r.cell.label} has {len(nll)} windows, the bootstrap {self.n_windows}.")
        return nll[self.idx].sum(1) / tok[self.idx].sum(1)

    def between(self, a: CellResult, b: CellResult, label: str = "") -> Delta:
        """``log ppl(a) - log ppl(b)``, paired over windows."""
        sides = (math.log(a.perplexity), math.log(b.perplexity))
        return Delta(
            label or f"{a.cell.label} vs {b.cell.label}",
            sides[0] - sides[1],
            self.log_ppl(a) - self.log_ppl(b),
            self.n_windows,
            sides,
        )


def pareto_front(sizes, values) -> np.ndarray:
    """Indices of the points no other point is at most as large as and better than, by size.

    ``values`` are lower-is-better (log perplexity); ties in size keep the best."""
    sizes, values = np.asarray(sizes, dtype=float), np.asarray(values, dtype=float)
    order = np.lexsort((values, sizes))
    keep, best = [], math.inf
    for i in order:
        if values[i] < best:
            keep.append(i)
            best = values[i]
    return np.asarray(keep, dtype=int)


def frontier_at(sizes, values, at) -> np.ndarray:
    """The frontier's log perplexity at sizes ``at``: linear in size between frontier points,
    NaN outside them."""
    sizes, values, at = (np.asarray(v, dtype=float) for v in (sizes, values, at))
    f = pareto_front(sizes, values)
    xs, ys = sizes[f], values[f]
    out = np.interp(at, xs, ys)
    out[(at < xs[0] - 1e-9) | (at > xs[-1] + 1e-9)] = np.nan
    return out


def uniform_frontier(uniform: Sequence[CellResult], limit: float | None = None) -> pd.DataFrame:
    """The uniform cells, and whether each lies on the Pareto frontier (the matched-size baseline);
    with a perplexity ``limit``, the frontier of the usable cells (see :func:`versus_uniform`)."""
    unique = _unique(uniform)
    ok = [limit is None or r.perplexity < limit for r in unique]
    kept = [i for i, u in enumerate(ok) if u]
    sizes = [unique[i].model_mb for i in kept]
    front = {kept[j] for j in pareto_front(sizes, [math.log(unique[i].perplexity) for i in kept]).tolist()}
    rows = [
        {
            "prune": r.cell.canonical().prune[0],
            "bits": r.cell.canonical().bits[0],
            "model MB": r.model_mb,
            "perplexity": r.perplexity,
            "usable": ok[i],
            "on frontier": i in front,
        }
        for i, r in enumerate(unique)
    ]
    return pd.DataFrame(rows).sort_values("model MB").reset_index(drop=True)


def _unique(uniform: Sequence[CellResult]) -> list[CellResult]:
    """One result per distinct uniform model (a constant baseline repeats a uniform cell)."""
    seen: dict = {}
    for r in uniform:
        if not r.cell.is_uniform:
            raise ValueError(f"{r.cell.label} is not a uniform cell.")
        seen.setdefault(r.cell.canonical(), r)
    if not seen:
        raise ValueError("No uniform cells: the matched-size baseline needs at least one.")
    return list(seen.values())


def versus_uniform(
    results: Sequence[CellResult], uniform: Sequence[CellResult], boot: Bootstrap, limit: float | None = None
) -> list[Delta]:
    """Each result's ``log ppl - log ppl(uniform frontier at its size)``, paired over windows; the
    frontier is rebuilt on every resample. NaN outside the frontier's sizes.

    With a perplexity ``limit`` the frontier is built from the usable uniform cells only (below
    it): interpolated across the cliff between a broken and a usable uniform model, the baseline
    would be an assumed model, not a measured one."""
    unique = _unique(uniform)
    if limit is not None:
        unique = [r for r in unique if r.perplexity < limit]
    if not unique:
        nan = np.full(boot.n_boot, np.nan)
        return [Delta(r.cell.label, math.nan, nan, boot.n_windows, (math.log(r.perplexity), math.nan)) for r in results]
    sizes = np.array([r.model_mb for r in unique])
    at = np.array([r.model_mb for r in results])
    u_point = np.log([r.perplexity for r in unique])
    u_draws = np.stack([boot.log_ppl(r) for r in unique])  # [uniform, n_boot]
    base_point = frontier_at(sizes, u_point, at)
    base_draws = np.stack([frontier_at(sizes, u_draws[:, b], at) for b in range(boot.n_boot)], 1)  # [result, n_boot]
    return [
        Delta(
            r.cell.label,
            math.log(r.perplexity) - base_point[i],
            boot.log_ppl(r) - base_draws[i],
            boot.n_windows,
            (math.log(r.perplexity), float(base_point[i])),
        )
        for i, r in enumerate(results)
    ]


def uniform_matched(
    results: Sequence[CellResult], uniform: Sequence[CellResult], boot: Bootstrap, limit: float | None = None
) -> pd.DataFrame:
    """Each result beside the uniform frontier at its size: Δ log perplexity with a 95% interval
    (``< 0``: the allocation beats uniform compression at the same size); ``limit`` as in
    :func:`versus_uniform`."""
    deltas = versus_uniform(results, uniform, boot, limit)
    rows = []
    for r, d in zip(results, deltas):
        lo, hi = d.ci()
        rows.append(
            {
                "allocation": r.cell.allocation,
                "prune": str(list(r.cell.prune)),
                "bits": str(list(r.cell.bits)),
                "model MB": r.model_mb,
                "perplexity": r.perplexity,
                "uniform ppl at same size": r.perplexity / math.exp(d.estimate)
                if not math.isnan(d.estimate)
                else np.nan,
                "delta log ppl": d.estimate,
                "ci low": lo,
                "ci high": hi,
            }
        )
    return pd.DataFrame(rows)


def random_deltas(results: Sequence[CellResult], boot: Bootstrap) -> dict[tuple[str, tuple], Delta]:
    """``{(score, (prune, bits)): Delta}``: each score-based allocation against the mean of its
    random controls at the same setting; the controls are resampled on every draw."""
    by_setting: dict[tuple, dict[str, list[CellResult]]] = {}
    for r in results:
        by_setting.setdefault(r.cell.setting, {}).setdefault(r.cell.allocation, []).append(r)
    out = {}
    for setting, cells in by_setting.items():
        for name, found in cells.items():
            if name.startswith("random:") or found[0].cell.is_uniform:
                continue
            rand = [x for n, c in cells.items() if n.startswith(f"random:{name}:") for x in c]
            if not rand:
                continue
            r = found[0]
            c_draws = np.stack([boot.log_ppl(x) for x in rand])  # [k, n_boot]
            pick = boot.draw_controls(len(rand), f"{name} {setting}")  # controls resampled per draw
            mean_draws = c_draws[pick, np.arange(boot.n_boot)[:, None]].mean(1)
            sides = (math.log(r.perplexity), float(np.mean([math.log(x.perplexity) for x in rand])))
            out[name, setting] = Delta(
                f"{name} vs random", sides[0] - sides[1], boot.log_ppl(r) - mean_draws, boot.n_windows, sides
            )
    return out


def versus_random(results: Sequence[CellResult], boot: Bootstrap, relations: Sequence[str] = ()) -> pd.DataFrame:
    """Each score-based allocation against its random controls at the same setting: Δ log
    perplexity (``< 0``: the score's placement helps) with a 95% interval over windows and
    controls, a one-sided p-value, and Holm's adjustment over the settings of each score; and
    the mean differences in KL and fact recall (the latter with an interval over the facts, or,
    given each fact's relation, a cluster-robust one over ``relations``)."""
    deltas = random_deltas(results, boot)
    rows = []
    for (name, setting), d in deltas.items():
        r = next(x for x in results if x.cell.allocation == name and x.cell.setting == setting)
        rand = [x for x in results if x.cell.setting == setting and x.cell.allocation.startswith(f"random:{name}:")]
        lo, hi = d.ci()
        rows.append(
            {
                "score": name,
                "prune": str(list(setting[0])),
                "bits": str(list(setting[1])),
                "model MB": r.model_mb,
                "same size": all(abs(x.model_mb - r.model_mb) < 1e-9 for x in rand),
                "n random": len(rand),
                "perplexity": r.perplexity,
                "random perplexity (min..max)": f"{min(x.perplexity for x in rand):.4g}.."
                f"{max(x.perplexity for x in rand):.4g}",
                "delta log ppl": d.estimate,
                "ci low": lo,
                "ci high": hi,
                "p (one-sided)": d.p_below(0.0),
                "delta KL": r.kl - float(np.mean([x.kl for x in rand])),
                **_recall_versus(r, rand, relations),
            }
        )
    frame = pd.DataFrame(rows)
    if len(frame):
        frame["p Holm"] = frame.groupby("score")["p (one-sided)"].transform(lambda p: pd.Series(stats.holm(p), p.index))
    return frame


def _recall_versus(r: CellResult, rand: Sequence[CellResult], relations: Sequence[str] = ()) -> dict[str, float]:
    """Fact recall of ``r`` minus the mean of its controls', with a 95% interval (paired: every
    cell answers the same facts; the controls are held fixed): a t interval over the facts, or
    with ``relations`` (one per fact) a cluster-robust t interval over the relations."""
    diff = r.fact_recall - float(np.mean([x.fact_recall for x in rand]))
    lo = hi = float("nan")
    if r.fact_hits and all(len(x.fact_hits) == len(r.fact_hits) for x in rand):
        hits = np.asarray(r.fact_hits, dtype=float)  # [n_facts]
        controls = np.mean([np.asarray(x.fact_hits, dtype=float) for x in rand], 0)  # [n_facts]
        cluster = list(relations) if len(relations) == len(hits) else None
        d = stats.paired(hits, controls, cluster=cluster)
        diff, lo, hi = d.estimate, d.low, d.high
    return {"delta fact recall": diff, "recall ci low": lo, "recall ci high": hi}


def intervals(results: Sequence[CellResult], n_boot: int = 2000, relations: Sequence[str] = ()) -> pd.DataFrame:
    """Every distinct cell's perplexity and fact recall with their 95% intervals (bootstrap over
    windows; fact recall: Wilson over facts, or with ``relations``, one per fact, a cluster-robust
    t interval over the relations)."""
    rows, seen = [], set()
    for r in results:
        key = r.cell.canonical()
        if key in seen:
            continue
        seen.add(key)
        plo, phi = r.perplexity_interval(n_boot)
        if r.fact_hits and len(relations) == len(r.fact_hits):
            _, flo, fhi, _, _ = stats.cluster_t(np.asarray(r.fact_hits, dtype=float), list(relations))
        else:
            flo, fhi = r.fact_recall_interval()
        rows.append(
            {
                "allocation": r.cell.allocation if not r.cell.is_uniform else UNIFORM,
                "prune": str(list(key.prune)),
                "bits": str(list(key.bits)),
                "model MB": r.model_mb,
                "perplexity": r.perplexity,
                "ppl low": plo,
                "ppl high": phi,
                "fact recall": r.fact_recall,
                "recall low": flo,
                "recall high": fhi,
            }
        )
    return pd.DataFrame(rows)


def size_frame(results: Sequence[CellResult], limit: float | None = None) -> pd.DataFrame:
    """:func:`analysis.studies.sweep.frame` for a size/perplexity plot: the constant baselines
    shown as the uniform cells they are, and uniform cells off the Pareto frontier labelled so
    (with a ``limit``: the frontier of the usable ones, and those above it labelled broken)."""
    out = frame(results)
    uniform = [r for r in results if r.cell.is_uniform]
    if not uniform:
        return out
    front = uniform_frontier(uniform, limit)
    on = set(front.loc[front["on frontier"], "model MB"].round(9))
    is_uniform = pd.Series([r.cell.is_uniform for r in results], index=out.index)
    off = is_uniform & ~out["model MB"].round(9).isin(on)
    out.loc[is_uniform, "allocation"] = UNIFORM
    out.loc[off, "allocation"] = f"{UNIFORM} (off the frontier)"
    if limit is not None:
        out.loc[is_uniform & (out["perplexity"] >= limit), "allocation"] = f"{UNIFORM} (broken)"
    return out
