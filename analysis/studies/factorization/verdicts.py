"""The seed's claims on our factorization grids, each a :class:`~analysis.studies.verdicts.Verdict`.

1. *"ASVD > FWSVD > SVD at every ratio"* (seed Table 2, Llama-2-7B on MMLU): at every ratio of
   the grid, ASVD (with its rank search) has lower held-out loss than FWSVD, and FWSVD lower than
   SVD. Each of the ``2 x ratios`` comparisons is a one-sided paired t-test over evaluation
   windows, Holm-corrected (:func:`ordering_verdict`); the same ordering on the known "eval"
   facts' 4-way multiple choice (exact McNemar tests on the same questions) is reported beside it.
   Perplexity decides because it is measured in every cell at a size that can decide; the
   multiple-choice samples the CPU budget allows are smaller, and a small decoder's MMLU accuracy
   sits near chance, where it cannot order anything. A pair of two broken models
   (both above the unigram line, :func:`analysis.studies.verdicts.unigram_line`) decides nothing
   and is left out; the ordering is then reproduced partly at best.
2. *"SVD collapses at 5-10 %"*, judged on MMLU as the seed did (Llama-2-7B: 0.456 -> 0.296 at 5 %,
   0.265 at 10 %, i.e. it keeps 22 % and 7 % of its margin above chance): at every grid ratio <= 10 %
   where MMLU was scored, SVD keeps less than the larger of the seed's two shares (22 %) of the
   uncompressed model's above-chance MMLU accuracy, by a Fieller interval clustered by subject
   (:func:`collapse_verdict`, :func:`~analysis.studies.factorization.shares.kept_share`). When the
   uncompressed model is not significantly above chance the share is undefined and the verdict
   inconclusive; the same share on fact multiple choice is reported beside it.
3. *"Probes reveal damage perplexity hides"* (ours, not the seed's): for two compressed decoders that
   perplexity orders (t interval over windows of the per-token log-loss difference excludes 0), a
   probe scores the model with the *better* perplexity lower, by a one-sided cluster-robust t test over
   probe item groups (MMLU questions clustered by subject), Holm-corrected over pairs and tasks; a pair
   of two broken models is not ordered. With no such pair, the claim is "not reproduced" only if every
   test had >= 80 % power to see a 10-point drop at the strictest Holm level; otherwise
   "inconclusive" (:func:`probes_hide_verdict`).

The seed's further claims are in :mod:`~analysis.studies.factorization.claims`; :func:`verdicts` returns them all.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from analysis import stats
from analysis.studies import verdicts as vd
from analysis.studies.factorization import claims
from analysis.studies.factorization.results import CellScores, DecoderGrid, ProbeGrid
from analysis.studies.factorization.seed import SEED_RESULTS
from analysis.studies.factorization.shares import CHANCE, group_means, item_hits, kept_share

OURS = " (ours, not the seed's)"


def _paired(a: CellScores, b: CellScores, metric: str) -> stats.Difference:
    """``a`` better than ``b`` (:func:`analysis.stats.paired`). ``metric="perplexity"``: per evaluation
    window, ``b``'s minus ``a``'s loss per token (paired t-test over windows); otherwise per question,
    ``a`` right minus ``b`` right (exact McNemar)."""
    if metric == "perplexity":
        tok = np.asarray(a.window_tokens, float)
        return stats.paired((np.asarray(b.window_nll, float) - np.asarray(a.window_nll, float)) / tok, unit="windows")
    return stats.paired(np.asarray(a.hits(metric), bool), np.asarray(b.hits(metric), bool), unit="questions")


def ordering_verdict(
    grid: DecoderGrid,
    order: Sequence[str] = ("ASVD", "FWSVD", "SVD"),
    metric: str = "perplexity",
    alpha: float = 0.05,
    secondary: str | None = "fact mc",
    limit: float | None = None,
) -> vd.Verdict:
    """Claim 1: ``order[0] > order[1] > ...`` on ``metric`` at every ratio where all of ``order`` were run
    (``"perplexity"``: per-token loss paired over evaluation windows; or a per-question accuracy such
    as ``"fact mc"``); the same test on ``secondary`` is added to the evidence.

    ``limit``: a perplexity; on ``"perplexity"``, a pair whose two models both lie above it (both
    broken) is left out, and the ordering can then be reproduced only partly."""
    frame, units = grid.frame, grid.units
    ratios = sorted(r for r in frame.loc[frame["method"] == order[0], "ratio"] if all((m, r) in units for m in order))
    tests, broken = [], []
    for r in ratios:
        for hi_m, lo_m in zip(order, order[1:]):
            if metric == "perplexity" and not vd.usable(
                (units[(hi_m, r)].perplexity, units[(lo_m, r)].perplexity), limit
            ):
                broken.append(f"{r:.0%} {hi_m} > {lo_m}")
                continue
            tests.append(
                {"ratio": r, "pair": f"{hi_m} > {lo_m}", "diff": _paired(units[(hi_m, r)], units[(lo_m, r)], metric)}
            )
    if not tests:
        return vd.Verdict(
            f"{' > '.join(order)} at every ratio",
            "inconclusive",
            "needs every method at one ratio at least, and a usable model in some pair",
            f"every compared pair is broken ({'; '.join(broken)})" if broken else "no ratio has all three methods",
        )
    adj, adj_rev = stats.holm([t["diff"].p for t in tests]), stats.holm([t["diff"].p_reverse for t in tests])
    support = [p < alpha for p in adj]
    against = [p < alpha for p in adj_rev]
    if all(support) and not broken:
        verdict = "reproduced"
    elif any(against):
        verdict = "not reproduced"
    elif any(support):
        verdict = "partly"
    else:
        verdict = "inconclusive"
    weakest = min(tests, key=lambda t: t["diff"].estimate)
    parts = [
        f"{t['ratio']:.0%} {t['pair']}: {t['diff'].estimate:+.3f} [{t['diff'].low:+.3f}, {t['diff'].high:+.3f}], "
        f"Holm p {q:.2g}"
        for t, q in zip(tests, adj)
    ]
    evidence = "; ".join(parts)
    if broken:
        evidence += f". Left out, both models broken (perplexity above {limit:.4g}): {'; '.join(broken)}"
    open_ = [t for t, q in zip(tests, adj) if q >= alpha and t["diff"].estimate > 0]
    if verdict in ("inconclusive", "partly") and open_:
        t = min(open_, key=lambda t: t["diff"].estimate)
        d = t["diff"]
        need = vd.n_to_settle(d.estimate, d.low, d.high, d.n)
        if need:
            evidence += f". About {need} {d.unit} (now {d.n}) would settle {t['pair']} at {t['ratio']:.0%} if it held"
    if secondary and secondary != metric and all(len(units[(m, r)].hits(secondary)) for m in order for r in ratios):
        other = ordering_verdict(grid, order, secondary, alpha, secondary=None)
        evidence += f". The same test on {secondary} accuracy: {other.verdict} ({other.evidence})"
    seed = SEED_RESULTS["mmlu_llama2_7b"]
    test = (
        "per-token loss difference paired over evaluation windows, one-sided t-test"
        if metric == "perplexity"
        else f"accuracy difference on the same {metric} questions, exact one-sided McNemar"
    )
    scope = (
        f"; a pair of two broken models (perplexity above {limit:.4g}) is left out and makes the ordering partly at best"
        if limit is not None and metric == "perplexity"
        else ""
    )
    return vd.Verdict(
        "ASVD > FWSVD > SVD at every ratio",
        verdict,
        f"{test}, per ratio and adjacent pair; "
        f"Holm over {len(tests)} comparisons at α = {alpha}: reproduced if all hold, not reproduced if any is "
        f"significantly reversed, partly if some hold, else inconclusive; ours = the weakest difference{scope}",
        evidence,
        f"MMLU at 5 %: ASVD {seed['asvd'][1]} > FWSVD {seed['fwsvd'][1]} > SVD {seed['svd'][1]}",
        weakest["diff"].estimate,
        weakest["diff"].low,
        weakest["diff"].high,
    )


def retained_share(base: Sequence[bool], comp: Sequence[bool], chance: float = CHANCE, clusters=None):
    """Share of the base model's above-chance accuracy the compressed one keeps: ``(estimate, low, high)`` of
    :func:`~analysis.studies.factorization.shares.kept_share` (a cluster-robust Fieller interval)."""
    s = kept_share(base, comp, chance, clusters)
    return s.estimate, s.low, s.high


def seed_collapse_share(ratios: Sequence[float] = (0.05, 0.10)) -> float:
    """The largest share of its above-chance MMLU accuracy the seed's SVD kept at ``ratios`` (Table 2)."""
    seed = SEED_RESULTS["mmlu_llama2_7b"]
    base = seed["svd"][0]
    return max((seed["svd"][seed["ratios"].index(r)] - CHANCE) / (base - CHANCE) for r in ratios)


def collapse_verdict(
    grid: DecoderGrid,
    method: str = "SVD",
    metric: str = "mmlu",
    at_most: float = 0.10,
    threshold: float | None = None,
    clusters: Sequence[str] | None = None,
    fact_clusters: Sequence[str] | None = None,
) -> vd.Verdict:
    """Claim 2: at every grid ratio <= ``at_most`` where ``metric`` was scored, ``method`` keeps less than
    ``threshold`` (default :func:`seed_collapse_share`) of the above-chance accuracy; ``clusters``: each
    ``metric`` item's cluster (MMLU subject), ``fact_clusters`` each fact question's relation."""
    threshold = seed_collapse_share() if threshold is None else threshold
    units = grid.units
    seed = SEED_RESULTS["mmlu_llama2_7b"]
    seed_txt = (
        f"MMLU {seed['svd'][0]} -> {seed['svd'][1]} (5 %), {seed['svd'][2]} (10 %): keeps "
        f"{(seed['svd'][1] - CHANCE) / (seed['svd'][0] - CHANCE):.0%}, "
        f"{(seed['svd'][2] - CHANCE) / (seed['svd'][0] - CHANCE):.0%} above chance"
    )
    claim = "SVD collapses at 5–10%"
    criterion = (
        f"collapse = {method} keeps < {threshold:.0%} (the seed's larger kept share) of the uncompressed model's "
        f"above-chance {metric} accuracy at every grid ratio <= {at_most:.0%}, by a cluster-robust Fieller interval; "
        f"{vd.COMBINE_RULE}"
    )
    all_ratios = sorted(r for (m, r) in units if m == method and 0 < r <= at_most + 1e-9)
    base = units[("none", 0.0)].hits(metric)
    ratios = [r for r in all_ratios if len(units[(method, r)].hits(metric)) and len(base)]
    facts = "; ".join(
        f"{r:.0%}: {kept_share(units[('none', 0.0)].fact_mc, units[(method, r)].fact_mc, CHANCE, fact_clusters).text()}"
        for r in all_ratios
        if len(units[(method, r)].fact_mc)
    )
    facts = f"; beside it (not judged), fact multiple choice kept {facts}" if facts else ""
    level, status = "", "inconclusive"
    if len(base) >= 2:  # is the uncompressed model above chance at all? if not, no share can be bounded
        x = np.asarray(base, float)
        est, lo, hi, _, g = stats.cluster_t(x, np.arange(len(x)) if clusters is None else np.asarray(clusters))
        level = f"; the uncompressed model's {metric} accuracy is {est:.3f} [{lo:.3f}, {hi:.3f}] over {g} clusters"
        if lo <= CHANCE:
            status = vd.UNTESTABLE
            sd = float(x.std(ddof=1))
            need = math.ceil((2.0 * sd / (est - CHANCE)) ** 2) if est > CHANCE else None
            level += ", not above chance 0.25, so no kept share can be bounded" + (
                f" (about {need} questions would put this margin above chance, if it held)" if need else ""
            )
    if not ratios or status == vd.UNTESTABLE:
        missing = (
            f"{metric} was not scored for {method} at a ratio <= {at_most:.0%} under this profile" if not ratios else ""
        )
        return vd.Verdict(claim, status, criterion, f"{missing}{level}{facts}".lstrip("; "), seed_txt)
    parts = []
    for r in ratios:
        s = kept_share(base, units[(method, r)].hits(metric), CHANCE, clusters)
        v = vd.interval_verdict(
            f"{r:.0%}", s.estimate, s.low, s.high, threshold, "<", s.n, None, f"{metric} share kept", "clusters"
        )
        note = "" if math.isfinite(s.high) else " (unbounded: the uncompressed model is not above chance)"
        parts.append(vd.Verdict(v.claim, v.verdict, v.criterion, v.evidence + note, None, v.ours, v.ci_low, v.ci_high))
    joined = vd.combine(claim, parts)
    key = max(parts, key=lambda p: p.ci_high if p.ci_high is not None and p.ci_high == p.ci_high else math.inf)
    ppl = grid.frame.set_index(["method", "ratio"])["perplexity"]
    ppl_txt = ", ".join(f"{q:.0%} x{ppl[(method, q)] / ppl[('none', 0.0)]:.2f}" for q in ratios)
    evidence = "; ".join(f"{p.claim}: {p.verdict} ({p.evidence})" for p in parts)
    return vd.Verdict(
        claim,
        joined.verdict,
        criterion,
        f"{evidence}; perplexity {ppl_txt}{facts}",
        seed_txt,
        key.ours,
        key.ci_low,
        key.ci_high,
    )


def probes_hide_verdict(
    decoder: DecoderGrid,
    probes: ProbeGrid,
    drop: float = 0.10,
    alpha: float = 0.025,
    power_needed: float = 0.8,
    limit: float | None = None,
) -> vd.Verdict:
    """Claim 3 (see the module docstring). ``probes``: the decoder probe grid (its tasks give each item's
    group); ``limit``: pairs of two models whose perplexities both lie above it are not "ordered by
    perplexity" (both broken)."""
    units, grid, groups, labels = decoder.units, probes.cells, probes.groups(), probes.labels()
    cells = [c for c in grid if c[0] != "none"]
    claim = "Probes reveal damage perplexity hides" + OURS
    tests, unordered = [], []
    for a in cells:
        for b in cells:
            if a == b:
                continue
            ua, ub = units[(labels[a], a[1])], units[(labels[b], b[1])]
            if not vd.usable((ua.perplexity, ub.perplexity), limit):
                continue
            tok = np.asarray(ua.window_tokens, float)
            d_ppl = (np.asarray(ub.window_nll) - np.asarray(ua.window_nll)) / tok  # > 0: a has lower loss
            est, lo, hi = stats.mean_ci(d_ppl)
            if lo <= 0:
                if est > 0:
                    unordered.append(f"{labels[a]} {a[1]:.0%} vs {labels[b]} {b[1]:.0%}")
                continue
            for t in grid[a]:
                gm, cl = group_means(item_hits(grid[b][t]) - item_hits(grid[a][t]), groups[t])  # > 0: probe prefers b
                est, lo, hi, p, g = stats.cluster_t(gm, cl)
                se = stats.cluster_se(gm, cl)[1]
                tests.append(
                    {
                        "pair": f"{t}: {labels[a]} {a[1]:.0%} (lower perplexity) vs {labels[b]} {b[1]:.0%}",
                        "diff": (est, lo, hi, g),
                        "se": se,
                        "p": p if g >= vd.MIN_UNITS and p == p else 1.0,
                    }
                )
    if not tests:
        return vd.Verdict(
            claim,
            "inconclusive",
            "needs two compressed decoders whose perplexities differ beyond their interval",
            "no pair of probed decoders is ordered by perplexity" + (f" ({'; '.join(unordered)})" if unordered else ""),
            SEED_RESULTS["claims"]["probes_reveal"],
        )
    m = len(tests)
    adj = stats.holm([t["p"] for t in tests])
    z = sps.norm.ppf(1 - alpha / m)
    powers = [float(sps.norm.cdf(drop / t["se"] - z)) if t["se"] > 0 else 0.0 for t in tests]
    best = int(np.argmin(adj))
    est, lo, hi, g = tests[best]["diff"]
    if adj[best] < alpha:
        verdict = "reproduced"
    elif min(powers) >= power_needed:
        verdict = "not reproduced"
    else:
        verdict = "inconclusive"
    evidence = (
        f"{m} tests (pairs ordered by perplexity x tasks); smallest Holm p {adj[best]:.2g} ({tests[best]['pair']}: "
        f"probe gap {est:+.3f} [{lo:+.3f}, {hi:+.3f}] over {g} clusters of item groups); power to see a "
        f"{drop:.0%} drop at α/{m}: {min(powers):.2f}-{max(powers):.2f}"
    )
    return vd.Verdict(
        claim,
        verdict,
        f"reproduced if a probe scores the better-perplexity model lower (one-sided cluster-robust t test over "
        f"item-group means, MMLU questions clustered by subject, Holm over {m}, α = {alpha}; fewer than "
        f"{vd.MIN_UNITS} clusters count as p = 1); not reproduced if none does and every test had ≥ "
        f"{power_needed:.0%} power for a {drop:.0%} drop; else inconclusive",
        evidence,
        SEED_RESULTS["claims"]["probes_reveal"],
        est,
        lo,
        hi,
    )


def verdicts(
    decoder: DecoderGrid,
    probes: ProbeGrid,
    limit: float | None = None,
    *,
    encoder: ProbeGrid | None = None,
    unigram=None,
    baselines: DecoderGrid | None = None,
    data=None,
) -> list[vd.Verdict]:
    """Every claim of the seed (and our own question, so labelled) on the decoder grid, the decoder probe
    grid and, where given, the encoder probe grid, the unigram line's :class:`~analysis.evaluate.LMScore`
    (``limit`` defaults to its perplexity) and the comparison arms (:func:`~analysis.studies.factorization.run.baseline_grid`).
    ``data`` (:class:`~analysis.studies.factorization.evaluation.DecoderData`) gives the clusters: MMLU
    questions by subject, fact questions by relation. A claim whose inputs are missing is inconclusive
    and says what is missing."""
    if limit is None and unigram is not None:
        limit = unigram.perplexity
    mmlu_clusters = [it["subject"] for it in data.mmlu] if data is not None else None
    fact_clusters = [it["relation"] for it in data.fact_mc] if data is not None else None
    empty = ProbeGrid({}, {})
    return [
        ordering_verdict(decoder, limit=limit),
        collapse_verdict(decoder, clusters=mmlu_clusters, fact_clusters=fact_clusters),
        claims.degradation_verdict(decoder, unigram),
        claims.baselines_verdict(decoder, baselines, fact_clusters),
        claims.rq1_verdict(decoder, probes),
        claims.knowledge_first_verdict(decoder, probes, fact_clusters),
        claims.decoder_worse_verdict(probes, encoder if encoder is not None else empty),
        claims.selectivity_verdict(encoder if encoder is not None else empty),
        probes_hide_verdict(decoder, probes, limit=limit),
    ]


def mean_damage(frame: pd.DataFrame, column: str, log: bool = False) -> pd.Series:
    """Damage per method averaged over the grid's ratios: baseline - value, or mean log(value / baseline)."""
    base = float(frame.loc[frame["method"] == "none", column].iloc[0])
    out = {}
    for m, g in frame[frame["method"] != "none"].groupby("method", sort=False):
        v = g[column].astype(float)
        out[m] = float((v / base).apply(math.log).mean()) if log else float((base - v).mean())
    return pd.Series(out, name=f"mean damage: {column}")


def probe_damage(probes: pd.DataFrame, tasks: tuple[str, ...] = ("TruthfulQA", "SST-2")) -> pd.DataFrame:
    """Mean probe-accuracy drop per method over the grid (baseline minus value), one column per task
    (by default the seed's hardest probed task first, the order in which the seed says knowledge goes)."""
    return pd.DataFrame({t: mean_damage(probes, t) for t in tasks})


def first_ratio_changes(decoder: pd.DataFrame) -> list[str]:
    """One line per method: each decoder score before and after compressing at the grid's lowest ratio."""
    base = decoder[decoder["method"] == "none"].iloc[0]
    lines = []
    for m in decoder.loc[decoder["method"] != "none", "method"].unique():
        g = decoder[decoder["method"] == m].set_index("ratio")
        lo = g.index.min()
        lines.append(
            f"{m}: at {lo:.0%} removed, perplexity {base['perplexity']:.3g} -> {g.loc[lo, 'perplexity']:.3g}, "
            f"fact MC {base['fact mc acc']:.2f} -> {g.loc[lo, 'fact mc acc']:.2f}, "
            f"fact recall {base['fact recall']:.2f} -> {g.loc[lo, 'fact recall']:.2f}"
        )
    return lines
