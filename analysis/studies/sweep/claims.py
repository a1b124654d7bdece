"""The seed's claims, each judged on the sweep with an interval: one :class:`Verdict` per claim.

Every test here is paired over the evaluation windows (:class:`~analysis.studies.sweep.compare.Bootstrap`)
and made at matched size where the claim compares allocations:

1. "all methods perform worse with larger amounts of pruning": Δ log perplexity between the
   same method and bit widths at more and at less pruning, pooled, each pair Holm-corrected;
2. "weight magnitude ... is comparable to simply compressing the whole network": an
   equivalence test (intersection-union TOST: every weight-magnitude cell's 90% interval of Δ
   log perplexity against the uniform frontier at its size inside ±margin);
3. "causal tracing and gradient magnitude perform well": each beats the uniform frontier at
   matched size and its own random controls (pooled over cells, 95% interval below 0);
4. "causal tracing performs best with aggressive quantization and mild to moderate pruning; other
   methods perform the same or worse": at every setting the seed names (each pruning setting of
   the grid, from the mildest to the moderate one, at its lowest bit widths), causal tracing's
   matched-size Δ below each other score's (Holm over every setting and score);
5. the open question: does any score-based allocation beat the uniform frontier at matched
   size (Holm over the scores)?

**Usable models only.** With a perplexity ``limit`` (the chapter's: a unigram model of the
text), a comparison counts only when one of its sides is a usable model, with perplexity below
the limit. Between two broken models (perplexity in the thousands), which is less broken says
nothing about where to compress; a usable model against a broken one at the same size does.
The uniform frontier is then built from usable uniform cells only (so a comparison with it always
has a usable side): interpolated across the cliff between a broken and a usable uniform model it
would be an assumed baseline, not a measured one.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

from analysis import stats
from analysis.studies import verdicts
from analysis.studies.sweep.cells import CellResult
from analysis.studies.sweep.compare import Bootstrap, Delta, pooled, random_deltas, usable, versus_uniform
from analysis.studies.sweep.config import Setting, SweepConfig
from analysis.studies.sweep.seed import SEED_RESULTS

ALPHA = 0.05
"""The level of equivalence (TOST: two one-sided tests at ``ALPHA``, a 90% interval inside the margin)."""
ONE_SIDED = verdicts.ONE_SIDED
"""The level of a directional test after Holm: a 95% interval's one side, as every interval verdict."""
SCORES = ("causal tracing", "weight magnitude", "gradient magnitude")
CLAIMS = SEED_RESULTS["claims"]


def _inconclusive(claim: str, why: str, criterion: str, seed=None) -> verdicts.Verdict:
    return verdicts.Verdict(claim, "inconclusive", criterion, why, seed)


def _ci_text(d: Delta, level: float = 0.95) -> str:
    lo, hi = d.ci(level)
    return f"{d.estimate:+.4f} [{lo:+.4f}, {hi:+.4f}]"


def pruning_pairs(results: Sequence[CellResult], boot: Bootstrap) -> list[Delta]:
    """``log ppl(more pruning) - log ppl(less pruning)`` for each method (allocation, random
    controls excluded) and bit widths, between neighbouring prune settings that give different
    models (the two "constant high" cells prune 0.1 in both settings: one model, no pair).

    Sizes need not differ: a pruned weight is stored as a bitmask plus its values, which at 5
    bits or fewer is no smaller than storing it densely, so pruning here changes quality only."""
    groups: dict[tuple, list[CellResult]] = {}
    for r in results:
        if not r.cell.allocation.startswith("random:"):
            groups.setdefault((r.cell.allocation, r.cell.bits), []).append(r)
    out = []
    for (alloc, bits), cells in groups.items():
        cells = sorted(cells, key=lambda r: sum(r.cell.prune))
        for less, more in zip(cells, cells[1:]):
            if less.cell.canonical() != more.cell.canonical() and less.window_nll != more.window_nll:
                out.append(boot.between(more, less, f"{alloc} bits {list(bits)}: prune {list(more.cell.prune)}"))
    return out


def claim_pruning(results: Sequence[CellResult], boot: Bootstrap, limit: float | None = None) -> verdicts.Verdict:
    """Claim 1: more pruning raises perplexity for every method (pairs with a usable side)."""
    criterion = (
        "reproduced if the pooled 95% interval of Δ log ppl (more minus less pruning, same method and bits) "
        f"lies above 0 and every pair is worse after Holm (one-sided p < {ONE_SIDED}); partly if the pooled interval lies above 0 but not "
        "every pair is; not reproduced if it lies below 0; else inconclusive"
    )
    pairs = usable(pruning_pairs(results, boot), limit)
    if not pairs:
        return _inconclusive(CLAIMS[0], "no method was run at two prune settings with a usable model", criterion)
    pool = pooled(pairs, "more pruning").difference(boot.n_windows)
    v = verdicts.difference_verdict(CLAIMS[0], pool, 0.0, ">", "worse (Fig. 2)", "pooled Δ log ppl")
    adjusted = stats.holm([d.p_above(0.0) for d in pairs])
    worse = sum(p < ONE_SIDED for p in adjusted)
    better = sum(d.ci()[1] < 0 for d in pairs)
    verdict = v.verdict
    if verdict == "reproduced" and (worse < len(pairs) or better):
        verdict = "partly"
    evidence = f"{v.evidence}; {worse} of {len(pairs)} (method, bits) pairs worse after Holm, {better} better"
    return dataclasses.replace(v, verdict=verdict, criterion=criterion, evidence=evidence)


def claim_comparable(
    results: Sequence[CellResult],
    uniform: Sequence[CellResult],
    boot: Bootstrap,
    margin: float,
    limit: float | None = None,
) -> verdicts.Verdict:
    """Claim 2: weight magnitude is comparable to uniform compression at the same size (TOST)."""
    claim = CLAIMS[1]
    criterion = (
        f"equivalence at matched size: reproduced if every weight-magnitude cell's 90% interval of Δ log ppl "
        f"against the uniform frontier lies inside ±{margin} (TOST, α = {ALPHA}); not reproduced if any cell "
        f"beats uniform by more than {margin} (Holm); partly if some cell is worse than uniform by more than "
        f"{margin} (no better, but not comparable); else inconclusive"
    )
    cells = [r for r in results if r.cell.allocation == "weight magnitude"]
    deltas = [d for d in versus_uniform(cells, uniform, boot, limit) if not math.isnan(d.estimate)]
    if not deltas:
        return _inconclusive(
            claim, "no weight-magnitude cell lies within the sizes of the (usable) uniform frontier", criterion
        )
    inside = [d for d in deltas if -margin < d.ci(0.90)[0] and d.ci(0.90)[1] < margin]
    better = sum(p < ONE_SIDED for p in stats.holm([d.p_below(-margin) for d in deltas]))
    worse = sum(p < ONE_SIDED for p in stats.holm([d.p_above(margin) for d in deltas]))
    if better:
        verdict = "not reproduced"
    elif len(inside) == len(deltas):
        verdict = "reproduced"
    elif worse:
        verdict = "partly"
    else:
        verdict = "inconclusive"
    pool = pooled(deltas, "weight magnitude vs uniform")
    lo, hi = pool.ci()
    evidence = (
        f"weight magnitude vs the uniform frontier over {len(deltas)} cells: pooled Δ log ppl {_ci_text(pool)}; "
        f"{len(inside)} of {len(deltas)} cells' 90% intervals inside ±{margin}, {better} better and {worse} worse "
        "beyond the margin (Holm)"
    )
    return verdicts.Verdict(claim, verdict, criterion, evidence, "comparable (no number)", pool.estimate, lo, hi)


def score_versus_uniform(
    name: str,
    results: Sequence[CellResult],
    uniform: Sequence[CellResult],
    boot: Bootstrap,
    limit: float | None = None,
) -> Delta:
    """One score's cells against the uniform frontier at their sizes, pooled (NaN cells dropped);
    with a ``limit`` the frontier joins usable uniform cells only (:func:`versus_uniform`), so every
    comparison left has a usable side."""
    cells = [r for r in results if r.cell.allocation == name]
    return pooled(versus_uniform(cells, uniform, boot, limit), f"{name} vs uniform")


def score_versus_random(name: str, results: Sequence[CellResult], boot: Bootstrap, limit: float | None = None) -> Delta:
    """One score against its random controls, pooled over the control settings with a usable side."""
    deltas = [d for (n, _), d in random_deltas(results, boot).items() if n == name]
    return pooled(usable(deltas, limit), f"{name} vs random")


def _below_zero(d: Delta, claim: str, n: int) -> verdicts.Verdict:
    return verdicts.difference_verdict(claim, d.difference(n), 0.0, "<", what="Δ log ppl")


def claim_perform_well(
    results: Sequence[CellResult],
    uniform: Sequence[CellResult],
    boot: Bootstrap,
    names: Sequence[str] = ("causal tracing", "gradient magnitude"),
    limit: float | None = None,
) -> verdicts.Verdict:
    """Claim 3: each named score beats uniform compression at matched size and its random controls."""
    parts = []
    for name in names:
        vs_uniform = score_versus_uniform(name, results, uniform, boot, limit)
        parts.append(_below_zero(vs_uniform, f"{name} vs uniform", boot.n_windows))
        vs_random = score_versus_random(name, results, boot, limit)
        parts.append(_below_zero(vs_random, f"{name} vs random", boot.n_windows))
    v = verdicts.combine(CLAIMS[2], parts, "perform well (no number)")
    return dataclasses.replace(
        v,
        criterion="each score's pooled Δ log ppl must lie below 0 (95% interval) against the uniform frontier at "
        "matched size and against its size-identical random controls; reproduced if all parts are, not "
        "reproduced if none is, else partly (inconclusive if no part decides)",
        evidence="; ".join(f"{p.claim}: {p.verdict} ({p.evidence})" for p in parts),
    )


def _settings(setting: Setting | Sequence[Setting]) -> list[Setting]:
    """One setting or several, as a list of settings."""
    first = setting[0]
    return [setting] if isinstance(first[0], (int, float)) else list(setting)  # type: ignore[list-item]


def claim_aggressive(
    results: Sequence[CellResult],
    uniform: Sequence[CellResult],
    boot: Bootstrap,
    setting: Setting | Sequence[Setting],
    main: str = "causal tracing",
    others: Sequence[str] = ("weight magnitude", "gradient magnitude"),
    limit: float | None = None,
) -> verdicts.Verdict:
    """Claim 4: at aggressive quantization with mild to moderate pruning, ``main`` beats every other
    score at matched size. ``setting``: one setting, or every setting the claim names
    (:func:`aggressive_settings`), judged together with Holm over every (setting, other score)."""
    claim = CLAIMS[3]
    settings = _settings(setting)
    where = "; ".join(f"prune {list(p)}, bits {list(b)}" for p, b in settings)
    criterion = (
        f"at {where}: Δ log ppl against the uniform frontier at each cell's size, {main} minus each other "
        "score (t intervals over windows, Holm over every setting and score); reproduced if every difference "
        f"lies below 0 after Holm (one-sided p < {ONE_SIDED}); not reproduced if one lies above 0 (95% interval) and none below; partly if "
        "both happen; else inconclusive (also when a setting the claim names has no usable comparison)"
    )
    labels, diffs, missing = [], [], []
    for prune, bits in settings:
        at = [r for r in results if r.cell.setting == (tuple(prune), tuple(bits))]
        by = {r.cell.allocation: r for r in at}
        tag = f"prune {list(prune)}, bits {list(bits)}"
        if main not in by or not any(o in by for o in others):
            missing.append(f"{tag}: {main} or the other scores were not run")
            continue
        names = [main] + [o for o in others if o in by]
        d = dict(zip(names, versus_uniform([by[n] for n in names], uniform, boot, limit)))
        kept = [o for o in names[1:] if (d[main] - d[o]).usable(limit)]
        found = [(o, d[main] - d[o]) for o in kept if not math.isnan((d[main] - d[o]).estimate)]
        if not kept:
            missing.append(f"{tag}: every model compared is broken")
        elif not found:
            missing.append(f"{tag}: a cell lies outside the uniform frontier's sizes")
        labels += [f"{tag}: {main} minus {o}" for o, _ in found]
        diffs += [x for _, x in found]
    if not diffs:
        return _inconclusive(claim, "; ".join(missing), criterion)
    adjusted = stats.holm([x.p_below(0.0) for x in diffs])
    wins = sum(p < ONE_SIDED for p in adjusted)
    losses = sum(x.ci()[0] > 0 for x in diffs)
    if losses:
        verdict = "partly" if wins else "not reproduced"
    elif wins == len(diffs) and not missing:
        verdict = "reproduced"
    else:
        verdict = "inconclusive"
    weakest = max(diffs, key=lambda x: x.estimate)
    lo, hi = weakest.ci()
    evidence = "; ".join(f"{lab}: {_ci_text(x)}, Holm p {p:.3g}" for lab, x, p in zip(labels, diffs, adjusted))
    if missing:
        evidence += "; not judged: " + "; ".join(missing)
    if verdict == "inconclusive" and not missing:
        need = verdicts.n_to_settle(weakest.estimate, lo, hi, boot.n_windows)
        if need:
            evidence += f"; about {need} evaluation windows (now {boot.n_windows}) would settle it if the estimate held"
    return verdicts.Verdict(claim, verdict, criterion, evidence, "best there (Fig. 2)", weakest.estimate, lo, hi)


def open_question(
    results: Sequence[CellResult],
    uniform: Sequence[CellResult],
    boot: Bootstrap,
    margin: float,
    names: Sequence[str] = SCORES,
    limit: float | None = None,
) -> verdicts.Verdict:
    """The open question: does any score-based allocation beat uniform compression at matched size?"""
    claim = SEED_RESULTS["open_question"]
    criterion = (
        "each score's cells pooled against the uniform frontier at matched size, Holm over the scores: "
        f"reproduced (yes) if some score's Δ log ppl lies below 0 (Holm, one-sided p < {ONE_SIDED}); not reproduced (no) if every score is "
        f"worse than uniform (Holm) or within ±{margin} (90% interval, TOST); else inconclusive"
    )
    deltas = [score_versus_uniform(n, results, uniform, boot, limit) for n in names]
    deltas = [d for d in deltas if not math.isnan(d.estimate)]
    if not deltas:
        return _inconclusive(claim, "no score-based cell lies within the uniform frontier's sizes", criterion)
    better = stats.holm([d.p_below(0.0) for d in deltas])
    worse = stats.holm([d.p_above(0.0) for d in deltas])
    same = [-margin < d.ci(0.90)[0] and d.ci(0.90)[1] < margin for d in deltas]
    if any(p < ONE_SIDED for p in better):
        verdict = "reproduced"
    elif all(w < ONE_SIDED or s for w, s in zip(worse, same)):
        verdict = "not reproduced"
    else:
        verdict = "inconclusive"
    best = min(deltas, key=lambda d: d.estimate)
    lo, hi = best.ci()
    evidence = "; ".join(f"{d.label}: {_ci_text(d)}, Holm p(better) {p:.3g}" for d, p in zip(deltas, better))
    return verdicts.Verdict(claim, verdict, criterion, evidence, "not tested (sizes unmatched)", best.estimate, lo, hi)


def aggressive_settings(
    results: Sequence[CellResult], cfg: SweepConfig, limit: float | None = None, names: Sequence[str] = SCORES
) -> list[Setting]:
    """Where claim 4 is judged: every pruning setting the claim names ("mild to moderate":
    :attr:`SweepConfig.aggressive_prunes`), each at the grid's lowest bit widths, or with a
    ``limit`` at the lowest bit widths at which some score's model is usable at that pruning. The
    choice looks at every score alike, so it favours none of them."""
    lowest = min(cfg.bits, key=sum)
    out = []
    for prune in cfg.aggressive_prunes:
        chosen = tuple(lowest)
        if limit is not None:
            for bits in sorted((tuple(b) for b in cfg.bits), key=sum):
                at = [r for r in results if r.cell.allocation in names and r.cell.setting == (prune, bits)]
                if any(r.perplexity < limit for r in at):
                    chosen = bits
                    break
        out.append((prune, chosen))
    return out


def aggressive_setting(
    results: Sequence[CellResult], cfg: SweepConfig, limit: float | None = None, names: Sequence[str] = SCORES
) -> Setting:
    """The mildest of :func:`aggressive_settings`: :attr:`SweepConfig.aggressive` (the mildest
    pruning, the lowest bit widths), or with a ``limit`` the lowest usable bit widths there."""
    return aggressive_settings(results, cfg, limit, names)[0]
