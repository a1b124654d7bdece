"""The seed's further claims on our grids (issue #22, item 10), each a :class:`~analysis.studies.verdicts.Verdict`.

Every rule judges each setting it names and joins them with
:func:`analysis.studies.verdicts.combine` (reproduced only if every setting is: an intersection-union
test, so no multiplicity correction is needed for "reproduced"); every threshold is a number of the
seed's. Units that share a cluster (MMLU questions of one subject, facts of one relation) are judged
with cluster-robust intervals on ``G - 1`` degrees of freedom (:mod:`~analysis.studies.factorization.shares`).

- :func:`rq1_verdict`: RQ1, probe accuracy falls as model quality falls (rank correlation over probed
  decoder cells, exact permutation test);
- :func:`knowledge_first_verdict`: RQ3, knowledge goes first and SST-2 stays (≤ 10 % loss, the seed's number);
- :func:`decoder_worse_verdict`: the probe damage is larger in the decoder than in the encoder;
- :func:`selectivity_verdict`: SST-2 probes pass their control task by more than 0.2 (the seed's number);
- :func:`degradation_verdict`: plain SVD at 30–50 % produces no usable output (worse than a unigram model);
- :func:`baselines_verdict`: pruning and quantization at the same compression lose only 10–20 %.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import numpy as np
from scipy import stats as sps

from analysis import stats
from analysis.studies import verdicts as vd
from analysis.studies.factorization.results import DecoderGrid, ProbeGrid
from analysis.studies.factorization.shares import (
    CHANCE,
    Share,
    clusters_of,
    contrast_t,
    group_means,
    item_hits,
    kept_share,
    named_means,
)

KNOWLEDGE = "fact multiple choice"
"""What stands for the seed's knowledge task (TruthfulQA): the known "eval" facts as 4-way multiple choice."""
SST2_KEEP = 0.90
"""The seed: "the Llama model retains no more than a 10 % quality loss for CoLA and SST-2"."""
SELECTIVITY = 0.2
"""The seed: "the difference between the real and control estimates is greater than 0.2 F-score"."""
BASELINE_KEEP = 0.80
"""The seed: "quantization and pruning result in a more moderate average degradation of 10-20 %"."""


def _joined(
    claim: str, parts: list[vd.Verdict], criterion: str, seed: str, key: vd.Verdict | None = None
) -> vd.Verdict:
    """:func:`analysis.studies.verdicts.combine` of ``parts``, with each part's evidence and ``key``'s number."""
    joined = vd.combine(claim, parts)
    key = key or parts[0]
    evidence = "; ".join(f"{p.claim}: {p.verdict} ({p.evidence})" for p in parts)
    return vd.Verdict(
        claim, joined.verdict, f"{criterion}; {vd.COMBINE_RULE}", evidence, seed, key.ours, key.ci_low, key.ci_high
    )


def _share_verdict(name: str, s: Share, threshold: float, direction: str, what: str) -> vd.Verdict:
    return vd.interval_verdict(name, s.estimate, s.low, s.high, threshold, direction, s.n, None, what, "clusters")


def _open(claim: str, criterion: str, evidence: str, seed: str) -> vd.Verdict:
    return vd.Verdict(claim, "inconclusive", criterion, evidence, seed)


# --------------------------------------------------------------------------------------
# RQ1 and RQ3
# --------------------------------------------------------------------------------------


def _probe_acc(results: dict, tasks: Sequence[str]) -> float:
    return float(np.mean([np.nanmean(item_hits(results[t])) for t in tasks]))


def rank_permutation_p(x, y, n_resamples: int = 20_000, seed: int = 0) -> tuple[float, float]:
    """One-sided permutation p-values of Spearman's ρ: ``(p of ρ <= observed, p of ρ >= observed)``, exact
    (every pairing) up to 8 units, else over ``n_resamples`` random pairings (the observed one counted)."""
    rx, ry = sps.rankdata(x), sps.rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    obs = float(rx @ ry)
    n = len(rx)
    if n <= 8:
        perms = np.array(list(itertools.permutations(range(n))))
        null = ry[perms] @ rx
        return float(np.mean(null <= obs + 1e-9)), float(np.mean(null >= obs - 1e-9))
    rng = np.random.default_rng(seed)
    null = rng.permuted(np.tile(ry, (n_resamples, 1)), axis=1) @ rx
    return float((1 + np.sum(null <= obs + 1e-9)) / (1 + n_resamples)), float(
        (1 + np.sum(null >= obs - 1e-9)) / (1 + n_resamples)
    )


def rq1_verdict(decoder: DecoderGrid, probes: ProbeGrid, alpha: float = 0.025) -> vd.Verdict:
    """RQ1: over the probed decoder cells (the uncompressed one included), the mean probe accuracy (top four
    layers, mean over tasks) falls as the log-perplexity rises: Spearman ρ < 0 by an exact one-sided
    permutation test; fewer than :data:`~analysis.studies.verdicts.MIN_UNITS` cells: inconclusive."""
    claim = "RQ1: the loss of quality goes with the loss of inner representations (probe accuracy tracks the decline)"
    criterion = (
        f"Spearman ρ between log-perplexity and mean probe accuracy over probed decoder cells; reproduced if ρ < 0 "
        f"by an exact one-sided permutation test at α = {alpha}, not reproduced if ρ > 0 at α, else inconclusive "
        f"(always below {vd.MIN_UNITS} cells)"
    )
    seed = "a strong correlation between compression and loss of model quality, confirming RQ1"
    labels = probes.labels()
    cells = [c for c in probes.cells if (labels[c], c[1]) in decoder.units]
    tasks = sorted(set.intersection(*(set(probes.cells[c]) for c in cells))) if cells else []
    if len(cells) < 3 or not tasks:
        return _open(claim, criterion, f"{len(cells)} probed decoder cells", seed)
    x = np.log([decoder.units[(labels[c], c[1])].perplexity for c in cells])
    y = np.array([_probe_acc(probes.cells[c], tasks) for c in cells])
    rho = stats.spearman(x, y)
    p_less, p_greater = rank_permutation_p(x, y)
    evidence = f"ρ = {rho:+.2f} over {len(cells)} cells, one-sided p = {p_less:.2g}; " + ", ".join(
        f"{labels[c]} {c[1]:.0%}: ppl {math.exp(a):.3g}, probe {b:.3f}" for c, a, b in zip(cells, x, y)
    )
    if len(cells) < vd.MIN_UNITS:
        verdict = "inconclusive"
        evidence += f"; only {len(cells)} probed cells, fewer than the {vd.MIN_UNITS} a verdict needs"
    elif p_less < alpha:
        verdict = "reproduced"
    elif p_greater < alpha and rho > 0:
        verdict = "not reproduced"
    else:
        verdict = "inconclusive"
    return vd.Verdict(claim, verdict, criterion, evidence, seed, rho)


def knowledge_first_verdict(
    decoder: DecoderGrid, probes: ProbeGrid, fact_clusters: Sequence[str] | None = None, task: str = "SST-2"
) -> vd.Verdict:
    """RQ3, at every probed compressed decoder cell: (a) knowledge (:data:`KNOWLEDGE`) keeps a smaller share of
    its above-chance accuracy than the SST-2 probe keeps of its above-chance accuracy; (b) the SST-2 probe keeps
    at least :data:`SST2_KEEP` of its accuracy."""
    claim = "RQ3: knowledge goes first (TruthfulQA in the seed; fact multiple choice here), SST-2 stays largely intact"
    criterion = (
        f"at every probed compressed decoder cell: (a) the {KNOWLEDGE} kept share of above-chance accuracy minus "
        f"the {task} probe's (top-4 layers, chance 0.5) < 0 by a 95% t interval (delta method, cluster-robust); "
        f"(b) the {task} probe keeps > {SST2_KEEP:.0%} of its accuracy (cluster-robust Fieller interval)"
    )
    seed = (
        "TruthfulQA suffers disproportionately, simpler tasks like SST-2 remain largely intact; "
        "no more than a 10 % quality loss on SST-2 at 25 % (ASVD)"
    )
    labels, base_cell = probes.labels(), ("none", 0.0)
    if base_cell not in probes.cells or task not in probes.cells[base_cell]:
        return _open(claim, criterion, f"no uncompressed {task} probe", seed)
    groups = probes.groups()[task]
    base_probe = item_hits(probes.cells[base_cell][task])
    base_facts = decoder.units[("none", 0.0)].fact_mc
    parts = []
    for cell, results in probes.cells.items():
        if cell == base_cell or (labels[cell], cell[1]) not in decoder.units or task not in results:
            continue
        name = f"{labels[cell]} {cell[1]:.0%}"
        facts = kept_share(base_facts, decoder.units[(labels[cell], cell[1])].fact_mc, CHANCE, fact_clusters)
        b, gb = group_means(base_probe, groups)
        c, _ = group_means(item_hits(results[task]), groups)
        probe = kept_share(b, c, 0.5, gb)
        diff, se = facts.estimate - probe.estimate, math.hypot(facts.se, probe.se)
        g = min(facts.n, probe.n)
        half = sps.t.ppf(0.975, max(g - 1, 1)) * se if math.isfinite(se) else math.inf
        a = vd.interval_verdict(
            f"{name} (a)", diff, diff - half, diff + half, 0.0, "<", g, None,
            f"kept share {KNOWLEDGE} {facts.text()} minus {task} probe {probe.text()}", "clusters",
        )  # fmt: skip
        keep = kept_share(b, c, 0.0, gb)
        parts += [a, _share_verdict(f"{name} (b)", keep, SST2_KEEP, ">", f"{task} probe accuracy kept")]
    if not parts:
        return _open(claim, criterion, "no probed compressed decoder cell", seed)
    return _joined(claim, parts, criterion, seed, max(parts[::2], key=lambda v: v.ours if v.ours == v.ours else -1))


# --------------------------------------------------------------------------------------
# Decoder against encoder, and the control task
# --------------------------------------------------------------------------------------


def _above_chance(res, groups) -> bool:
    m, _ = group_means(item_hits(res), groups)
    _, lo, _, _ = contrast_t(m - res.chance)
    return lo > 0


def decoder_worse_verdict(decoder_probes: ProbeGrid, encoder_probes: ProbeGrid) -> vd.Verdict:
    """At every (method, ratio) both grids probed, on every task whose uncompressed probe is above chance in both
    models: the decoder's probe accuracy drop (top four layers) exceeds the encoder's, paired over the probe
    items both saw (group means, cluster-robust)."""
    claim = "The damage is more pronounced in the decoder than in the encoder"
    criterion = (
        "per common (method, ratio) and task whose uncompressed probe is above chance in both models: decoder "
        "minus encoder probe-accuracy drop (top-4 layers) paired over shared item groups, reproduced if the "
        "cluster-robust 95% t interval lies > 0"
    )
    seed = "this effect is more pronounced in decoder models compared to encoder models"
    base = ("none", 0.0)
    common = [c for c in decoder_probes.cells if c != base and c in encoder_probes.cells]
    dg, eg = decoder_probes.groups(), encoder_probes.groups()
    parts, skipped = [], []
    for t in sorted(set(decoder_probes.cells.get(base, {})) & set(encoder_probes.cells.get(base, {}))):
        if not (
            _above_chance(decoder_probes.cells[base][t], dg[t]) and _above_chance(encoder_probes.cells[base][t], eg[t])
        ):
            skipped.append(t)
            continue
        for cell in common:
            drops = [
                named_means(item_hits(grid.cells[base][t]) - item_hits(grid.cells[cell][t]), groups)
                for grid, groups in ((decoder_probes, dg[t]), (encoder_probes, eg[t]))
            ]
            shared = sorted(set(drops[0]) & set(drops[1]))
            x = np.array([drops[0][g] - drops[1][g] for g in shared])
            est, lo, hi, g = contrast_t(x, clusters_of(shared)) if len(x) else (float("nan"),) * 3 + (0,)
            name = f"{t}, {decoder_probes.labels()[cell]} {cell[1]:.0%}"
            parts.append(
                vd.interval_verdict(name, est, lo, hi, 0.0, ">", g, None, "decoder minus encoder drop", "clusters")
            )
    note = f"; left out, a probe at chance in the uncompressed model: {', '.join(skipped)}" if skipped else ""
    if not parts:
        return _open(claim, criterion, f"no common probed cell and task{note}", seed)
    v = _joined(claim, parts, criterion, seed, min(parts, key=lambda p: p.ci_low if p.ci_low == p.ci_low else -1))
    return vd.Verdict(v.claim, v.verdict, v.criterion, v.evidence + note, v.seed, v.ours, v.ci_low, v.ci_high)


def selectivity_verdict(encoder_probes: ProbeGrid, task: str = "SST-2") -> vd.Verdict:
    """At every encoder cell (the seed's Table 3 grid): the ``task`` probe's selectivity (task minus control
    accuracy, top four layers, per item group) exceeds :data:`SELECTIVITY`."""
    claim = f"Probes pass the control task: {task} selectivity > {SELECTIVITY} (Table 3)"
    criterion = (
        f"per encoder cell, {task} task minus control accuracy (top-4 layers) over item groups; reproduced if its "
        f"cluster-robust 95% t interval lies > {SELECTIVITY} at every cell"
    )
    seed = "for SST-2 and CoLA ... the difference between the real and control estimates is greater than 0.2 F-score"
    groups = encoder_probes.groups().get(task)
    parts = []
    for cell, results in encoder_probes.cells.items():
        if task not in results:
            continue
        x = item_hits(results[task]) - item_hits(results[task], target="control")
        m, cl = group_means(x, groups)
        est, lo, hi, g = contrast_t(m, cl)
        name = f"{encoder_probes.labels()[cell]} {cell[1]:.0%}"
        parts.append(vd.interval_verdict(name, est, lo, hi, SELECTIVITY, ">", g, None, "selectivity", "clusters"))
    if not parts:
        return _open(claim, criterion, f"no {task} probe on the encoder", seed)
    return _joined(claim, parts, criterion, seed, min(parts, key=lambda p: p.ours))


# --------------------------------------------------------------------------------------
# Degradation at 30-50 %, and the comparison arms
# --------------------------------------------------------------------------------------


def degradation_verdict(decoder: DecoderGrid, unigram, method: str = "SVD", lo: float = 0.30, hi: float = 0.50):
    """At every grid ratio in ``[lo, hi]``: ``method``'s per-token loss exceeds a unigram model's on the same
    evaluation windows (no usable output), by a paired t interval over windows."""
    claim = "SVD at 30–50% produces no usable output"
    criterion = (
        f"at every {method} ratio in [{lo:.0%}, {hi:.0%}]: loss per token minus the unigram model's, paired over "
        "evaluation windows, reproduced if the 95% t interval lies > 0"
    )
    seed = "compressing to 30-50 % results in complete degradation, producing no usable output"
    ratios = sorted(r for (m, r) in decoder.units if m == method and lo - 1e-9 <= r <= hi + 1e-9)
    if unigram is None or not ratios:
        return _open(claim, criterion, f"needs {method} at a ratio in [{lo:.0%}, {hi:.0%}] and the unigram line", seed)
    uni = np.asarray(unigram.window_nll, float) / np.asarray(unigram.window_tokens, float)
    parts = []
    for r in ratios:
        u = decoder.units[(method, r)]
        own = np.asarray(u.window_nll, float) / np.asarray(u.window_tokens, float)
        if len(own) != len(uni):
            return _open(claim, criterion, "the unigram line was scored on other windows", seed)
        d = stats.paired(own, uni, unit="windows")
        parts.append(vd.difference_verdict(f"{method} {r:.0%}", d, 0.0, ">", None, "loss per token above unigram"))
    return _joined(claim, parts, criterion, seed, min(parts, key=lambda p: p.ours))


def baselines_verdict(
    decoder: DecoderGrid, baselines: DecoderGrid | None, fact_clusters: Sequence[str] | None = None
) -> vd.Verdict:
    """Each comparison arm keeps more than :data:`BASELINE_KEEP` of the uncompressed model's above-chance fact
    multiple-choice accuracy on average over its ratios (the seed's "average degradation of 10-20 %")."""
    claim = "Pruning and quantization at the same compression lose only 10–20%"
    criterion = (
        f"per arm, the share of above-chance {KNOWLEDGE} accuracy kept, averaged over the grid's ratios, > "
        f"{BASELINE_KEEP:.0%} by a cluster-robust Fieller interval"
    )
    seed = (
        "model quantization and pruning result in a more moderate average degradation of 10-20 %, on same compression"
    )
    if baselines is None or not baselines.units:
        return _open(claim, criterion, "no pruning or quantization arm was run (FactorConfig.baselines)", seed)
    base = np.asarray(decoder.units[("none", 0.0)].fact_mc, float)
    parts = []
    for arm in dict.fromkeys(m for m, _ in baselines.units):
        ratios = sorted(r for m, r in baselines.units if m == arm)
        mean = np.mean([np.asarray(baselines.units[(arm, r)].fact_mc, float) for r in ratios], 0)
        s = kept_share(base, mean, CHANCE, fact_clusters)
        ppl = ", ".join(f"{r:.0%} ppl {baselines.units[(arm, r)].perplexity:.3g}" for r in ratios)
        v = _share_verdict(arm, s, BASELINE_KEEP, ">", f"share kept over {', '.join(f'{r:.0%}' for r in ratios)}")
        parts.append(
            vd.Verdict(v.claim, v.verdict, v.criterion, f"{v.evidence}; {ppl}", None, v.ours, v.ci_low, v.ci_high)
        )
    return _joined(claim, parts, criterion, seed, min(parts, key=lambda p: p.ours))
