"""Verdicts: a seed's claim, the seed's number, ours with its interval, and the rule that decided.

Every study module turns its measurements into :class:`Verdict` objects with the decision rules
below, and its chapter ends with :func:`table` of them. The rules are deliberately few:

- :func:`interval_verdict`: a directional claim ("X beats Y", "ρ < 0") is *reproduced* when the
  whole 95% interval lies on the claimed side of the threshold, *not reproduced* when it lies on
  the other side, and *inconclusive* when it spans the threshold; then :func:`n_to_settle` says
  roughly how many units a decisive interval would need.
  Fewer than :data:`MIN_UNITS` units give "inconclusive" whatever the interval.
- :func:`equivalence_verdict` and :func:`mean_equivalence_verdict`: "no relation" / "no difference"
  claims are decided only by an equivalence test (TOST) with a stated margin, never by p ≥ 0.05.
  When even a perfect null estimate at this n could not pass TOST, the status is
  :data:`UNTESTABLE` ("untestable at this n"), with the n that would settle it.
- :func:`combine`: a claim with several parts is reproduced when all parts are (untestable when
  all parts are); inconclusive when
  any part is inconclusive or untestable and none is not reproduced (an open part cannot be
  outvoted by the others); not reproduced when no part is reproduced and one is not; partly otherwise.

:func:`record` stores a study's verdicts under the result cache, and :func:`scoreboard` reads them
back for the book's opening scoreboard, so the scoreboard never copies a number by hand.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
from transformer_lens import HookedTransformer

from analysis import data, stats
from analysis.cache import atomic_write
from analysis.config import CACHE_DIR
from analysis.evaluate import unigram_score
from analysis.forward import windows

UNTESTABLE = "untestable at this n"
VERDICTS = ("reproduced", "partly", "not reproduced", "inconclusive", UNTESTABLE)

ONE_SIDED = 0.025
"""The one-sided level of either bound of a 95% two-sided interval: a directional test that should
agree with the interval rule uses it."""

MIN_UNITS = 8
"""Below this many independent units an interval verdict is "inconclusive" whatever its interval
says: a t interval is exact only for normal data, and at 4–6 skewed units it is not."""


@dataclass(frozen=True)
class Verdict:
    """One seed claim judged on our measurements; ``verdict`` is one of :data:`VERDICTS`."""

    claim: str
    """The claim in the seed's own words."""
    verdict: str
    criterion: str
    """The rule that decided, with its thresholds."""
    evidence: str = ""
    seed: str | float | None = None
    """The seed's number (or a short statement of it)."""
    ours: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}.")

    def __str__(self) -> str:
        return f"{self.claim}: {self.verdict.upper()} ({self.evidence}). Criterion: {self.criterion}"

    def summary(self) -> str:
        """``"verdict (ours [lo, hi])"``, or the verdict alone without a number."""
        number = " ".join(x for x in (_fmt(self.ours), self.interval()) if x)
        return f"{self.verdict} ({number})" if number else self.verdict

    def interval(self) -> str:
        """``[lo, hi]`` or an empty string when there is no interval."""
        if self.ci_low is None or self.ci_high is None:
            return ""
        return f"[{_fmt(self.ci_low)}, {_fmt(self.ci_high)}]"


def _fmt(x) -> str:
    if x is None:
        return ""
    if isinstance(x, str):
        return x
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    return f"{x:.4g}"


def usable(perplexities: Iterable[float], limit: float | None) -> bool:
    """Whether a comparison of these models can decide anything: some perplexity lies below
    ``limit`` (the :func:`unigram_line`; always true for ``None``). NaN, an undefined side, does not
    count. Between two broken models, which is less broken decides no claim."""
    return limit is None or any(p < limit for p in perplexities if not math.isnan(p))


def unigram_line(model: HookedTransformer, tokens, context: int, n_train: int = 1_000_000):
    """The line between usable and broken models: a unigram model (token frequencies of ``n_train``
    train-split tokens, :func:`analysis.evaluate.unigram_score`) scored on ``tokens`` cut into
    disjoint ``context``-token windows, as a model's perplexity is. Returns the
    :class:`~analysis.evaluate.LMScore`.

    A compressed model whose perplexity lies above it has lost everything it knew beyond token
    frequencies; between two such models, which is less broken decides no claim."""

    wins = windows(tokens, context)
    train = data.lm_tokens(model.tokenizer, "train", n_tokens=n_train)
    return unigram_score(train, wins, model.cfg.d_vocab)


def table(verdicts: Sequence[Verdict]) -> pd.DataFrame:
    """The chapter's verdict table: claim, seed, ours, 95% interval, verdict, criterion, evidence."""
    rows = [
        {
            "claim": v.claim,
            "seed": _fmt(v.seed),
            "ours": _fmt(v.ours),
            "95% interval": v.interval(),
            "verdict": v.verdict,
            "criterion": v.criterion,
            "evidence": v.evidence,
        }
        for v in verdicts
    ]
    return pd.DataFrame(rows, columns=["claim", "seed", "ours", "95% interval", "verdict", "criterion", "evidence"])


def n_to_settle(estimate: float, lo: float, hi: float, n: int, threshold: float = 0.0) -> int | None:
    """Roughly how many units would make the interval exclude ``threshold``, assuming its
    half-width shrinks as ``1/sqrt(n)`` and the estimate stays; None when it cannot (estimate at
    the threshold) or already does."""
    half = (hi - lo) / 2  # a symmetric reading: for an asymmetric interval the answer may lie below n
    gap = abs(estimate - threshold)
    if gap == 0 or not all(map(math.isfinite, (estimate, lo, hi))):
        return None
    if lo > threshold or hi < threshold:
        return None
    return int(math.ceil(n * (half / gap) ** 2))


def interval_verdict(
    claim: str,
    estimate: float,
    lo: float,
    hi: float,
    threshold: float = 0.0,
    direction: str = ">",
    n: int | None = None,
    seed=None,
    what: str = "estimate",
    unit: str = "units",
) -> Verdict:
    """A directional claim ``estimate {direction} threshold`` judged on its 95% interval ``[lo, hi]``
    over ``n`` independent ``unit``."""
    if direction not in (">", "<"):
        raise ValueError(f"direction must be '>' or '<', got {direction!r}.")
    above, below = lo > threshold, hi < threshold
    few = n is not None and n < MIN_UNITS
    if any(math.isnan(v) for v in (estimate, lo, hi)) or few:
        verdict = "inconclusive"
    elif (above and direction == ">") or (below and direction == "<"):
        verdict = "reproduced"
    elif (below and direction == ">") or (above and direction == "<"):
        verdict = "not reproduced"
    else:
        verdict = "inconclusive"
    evidence = f"{what} = {_fmt(estimate)}, 95% interval [{_fmt(lo)}, {_fmt(hi)}]"
    if few:
        evidence += f"; only {n} {unit}, fewer than the {MIN_UNITS} a verdict needs"
    elif verdict == "inconclusive" and n is not None:
        need = n_to_settle(estimate, lo, hi, n, threshold)
        if need and need > 1000 * n:
            evidence += f"; the estimate sits on {threshold}: no feasible number of {unit} would settle it"
        elif need and need > n:  # an asymmetric interval can ask for fewer units than it has: say nothing
            evidence += f"; about {need} {unit} (now {n}) would settle it if the estimate held"
    return Verdict(
        claim,
        verdict,
        f"reproduced if the 95% interval lies {direction} {threshold}; not reproduced "
        f"if it lies on the other side; else inconclusive (and always with fewer than {MIN_UNITS} units)",
        evidence,
        seed,
        estimate,
        lo,
        hi,
    )


def difference_verdict(
    claim: str, d: stats.Difference, threshold: float = 0.0, direction: str = ">", seed=None, what: str = "estimate"
) -> Verdict:
    """:func:`interval_verdict` of a paired comparison (:func:`analysis.stats.paired`)."""
    return interval_verdict(claim, d.estimate, d.low, d.high, threshold, direction, d.n, seed, what, d.unit)


def n_for_equivalence(margin: float, alpha: float = 0.05, rank: bool = True) -> int:
    """The fewest units at which TOST on a correlation (:func:`analysis.stats.tost_correlation`)
    could conclude ``|ρ| < margin`` even for an observed ρ of exactly 0."""
    z = NormalDist().inv_cdf(1 - alpha) / math.atanh(margin)
    return int(math.floor(3 + (1.06 if rank else 1.0) * z**2)) + 1


def equivalence_verdict(
    claim: str,
    rho: float,
    n: int,
    margin: float = 0.1,
    lo: float | None = None,
    hi: float | None = None,
    seed=None,
    alpha: float = 0.05,
) -> Verdict:
    """A "no relation" claim for a rank correlation ``rho`` over ``n`` units: reproduced when TOST
    puts it inside ``±margin``; not reproduced when the interval (or, without one, the TOST bound)
    excludes the whole margin; :data:`UNTESTABLE` when ``n`` is below :func:`n_for_equivalence`, so
    no data could reproduce it; else inconclusive."""
    need = n_for_equivalence(margin, alpha)
    outside = lo is not None and hi is not None and (lo > margin or hi < -margin)
    if math.isnan(rho) or n < 4:
        verdict, p = "inconclusive", float("nan")
    else:
        eq = stats.tost_correlation(rho, n, margin, alpha)
        p = eq.p
        if eq.equivalent:
            verdict = "reproduced"
        elif outside:
            verdict = "not reproduced"
        else:
            verdict = UNTESTABLE if n < need else "inconclusive"
    evidence = f"ρ = {_fmt(rho)} over {n}, TOST p = {_fmt(p)}"
    if verdict == UNTESTABLE:
        evidence += f"; TOST at ±{margin} needs at least {need} units even if ρ were exactly 0"
    return Verdict(
        claim,
        verdict,
        f"reproduced if TOST (α = {alpha}) puts ρ inside ±{margin}; not reproduced if "
        f"the 95% interval lies wholly outside ±{margin}; untestable at this n below {need} units; "
        f"else inconclusive",
        evidence,
        seed,
        rho,
        lo,
        hi,
    )


def mean_equivalence_verdict(
    claim: str, d: stats.Difference, x, margin: float, seed=None, what: str = "difference", alpha: float = 0.05
) -> Verdict:
    """A "no difference" claim: TOST (:func:`analysis.stats.tost_mean`) on the paired differences
    ``x`` behind ``d`` with margin ``±margin``. Reproduced when TOST concludes equivalence; not
    reproduced when ``d``'s interval lies wholly outside the margin; else inconclusive (and always
    with fewer than :data:`MIN_UNITS` units)."""
    x = np.asarray(x, dtype=float)
    x = x[~np.isnan(x)]
    eq = stats.tost_mean(x, margin, alpha) if len(x) >= 2 else None
    outside = d.low > margin or d.high < -margin
    if len(x) < MIN_UNITS or eq is None:
        verdict = "inconclusive"
    elif eq.equivalent:
        verdict = "reproduced"
    else:
        verdict = "not reproduced" if outside else "inconclusive"
    p = _fmt(eq.p) if eq is not None else "nan"
    evidence = (
        f"{what} = {_fmt(d.estimate)}, 95% interval [{_fmt(d.low)}, {_fmt(d.high)}] over {d.n} {d.unit}, TOST p = {p}"
    )
    return Verdict(
        claim,
        verdict,
        f"reproduced if TOST (α = {alpha}) puts the mean {what} inside ±{_fmt(margin)}; not reproduced if "
        f"the 95% interval lies wholly outside it; else inconclusive (and always with fewer than {MIN_UNITS} units)",
        evidence,
        seed,
        d.estimate,
        d.low,
        d.high,
    )


COMBINE_RULE = (
    "reproduced if every part is; untestable at this n if every part is; inconclusive if a part is inconclusive "
    "or untestable and none is not reproduced; "
    "not reproduced if no part is reproduced and one is not; else partly"
)


def combine(claim: str, parts: Sequence[Verdict], seed=None) -> Verdict:
    """One verdict from several parts of a claim (see the module docstring)."""
    if not parts:
        raise ValueError("combine needs at least one part.")
    kinds = [p.verdict for p in parts]
    if all(k == "reproduced" for k in kinds):
        verdict = "reproduced"
    elif all(k == UNTESTABLE for k in kinds):
        verdict = UNTESTABLE
    elif {"inconclusive", UNTESTABLE} & set(kinds) and "not reproduced" not in kinds:
        verdict = "inconclusive"
    elif not {"reproduced", "partly"} & set(kinds):
        verdict = "not reproduced"
    else:
        verdict = "partly"
    evidence = "; ".join(f"{p.claim}: {p.verdict}" for p in parts)
    return Verdict(claim, verdict, COMBINE_RULE, evidence, seed)


def false_reproduced_rate(judge: Callable[[np.random.Generator], Verdict], n_sims: int = 400, seed: int = 0) -> float:
    """The share of ``n_sims`` simulated studies that ``judge`` calls "reproduced".

    ``judge(rng)`` draws one data set under a null (the claim false, at its boundary) at the
    study's own n and returns the study's verdict; every verdict rule is tested to keep this at or
    below 5%."""
    rng = np.random.default_rng(seed)
    return sum(judge(rng).verdict == "reproduced" for _ in range(n_sims)) / n_sims


def record(study: str, profile: str, verdicts: Sequence[Verdict]) -> None:
    """Store a study's verdicts for the scoreboard (``<cache>/verdicts/<profile>/<study>.json``)."""
    path = CACHE_DIR / "verdicts" / profile / f"{study}.json"
    payload = [{"study": study, **asdict(v)} for v in verdicts]
    atomic_write(path, lambda p: p.write_text(json.dumps(payload, indent=1, default=str)))


def shown(board: pd.DataFrame) -> pd.DataFrame:
    """A :func:`scoreboard` frame as the book shows it: study, claim, seed, ours (4 significant
    digits), the 95% interval as ``[lo, hi]``, and the verdict."""
    interval = [
        f"[{_fmt(lo)}, {_fmt(hi)}]" if pd.notna(lo) and pd.notna(hi) else ""
        for lo, hi in zip(board["ci_low"], board["ci_high"])
    ]
    ours = [_fmt(v) if pd.notna(v) else "" for v in board["ours"]]
    out = board.assign(ours=ours, interval=interval)
    return out[["study", "claim", "seed", "ours", "interval", "verdict"]].set_index(["study", "claim"])


def scoreboard(profile: str, studies: Sequence[str] | None = None) -> pd.DataFrame:
    """Every recorded verdict under ``profile``, one row per claim, in ``studies`` order."""
    folder = CACHE_DIR / "verdicts" / profile
    found = {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))} if folder.exists() else {}
    order = list(studies) if studies is not None else sorted(found)
    rows = [row for name in order for row in found.get(name, [])]
    columns = ["study", "claim", "seed", "ours", "ci_low", "ci_high", "verdict", "criterion"]
    return pd.DataFrame(rows, columns=columns + [c for c in (rows[0] if rows else {}) if c not in columns])
