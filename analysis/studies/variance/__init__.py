"""Seed 003, "Variance Is Not Importance" (Salfati 2026): directions, block linearity, linear block
replacement, rotation quantization and early exit on one model.

- :mod:`~analysis.studies.variance.config`: :class:`VarianceConfig` per profile;
- :mod:`~analysis.studies.variance.seed`: :data:`SEED_RESULTS`, the seed's claims and numbers;
- :mod:`~analysis.studies.variance.runner`: the cached experiments;
- :mod:`~analysis.studies.variance.verdicts`: one verdict function per claim;
- :func:`judge`: all seven verdicts from the runner's results.
"""

from __future__ import annotations

import numpy as np

from analysis.studies.variance import verdicts
from analysis.studies.variance.config import VARIANCE_CONFIGS, VarianceConfig, variance_config_for
from analysis.studies.variance.runner import (
    ablation,
    depth_layers,
    directions,
    exits,
    fits,
    linearity,
    paired_gap,
    quantization,
    replacement,
    tokens,
)
from analysis.studies.variance.seed import ANCHORS, SEED_RESULTS


def judge(cfg: VarianceConfig, lin, dirs, abl, rep, quant, ex) -> list:
    """The seven verdicts, in the seed's order, from the runner's results."""
    k = cfg.k_overlap
    gaps = []
    for layer in sorted(set(abl["layer"]) - {-1}):
        at = abl[(abl["layer"] == layer) & (abl["k"] == k)].set_index("kind")
        if {"gradient", "variance"} <= set(at.index):
            gaps.append(paired_gap(at.loc["gradient"], at.loc["variance"]))
    out = [verdicts.uncorrelated(dirs["frame"]["CCA uncorrelated share"], np.concatenate(gaps) if gaps else [np.nan])]
    out.append(verdicts.r2_level(lin["R² output, clean"]))
    out.append(verdicts.r2_depth(lin.index, lin["R² update, clean"]))
    ppl = quant["ppl"]
    mid = 4 if 4 in set(ppl["bits"]) else sorted(set(ppl["bits"]) - {32})[0]
    at = ppl[ppl["bits"] == mid].set_index("scheme")
    amp = quant["amplification"]
    out.append(
        verdicts.direct_beats_factor(
            paired_gap(at.loc["factor"], at.loc["direct"]), amp[amp["bits"] == mid]["amplification"]
        )
    )
    share, lo, hi = ex["logit lens"]["easy"]
    out.append(verdicts.easy_tokens(share, lo, hi, ex["logit lens"]["n"], cfg.exit_threshold))
    base = rep[rep["blocks"] == 0].iloc[0]
    one = rep[(rep["blocks"] == 1) & rep["map"].str.startswith("rank")].iloc[0]
    rel = verdicts.ratio_ci(base["window nll"], one["window nll"], base["window tokens"])
    out.append(verdicts.last_block(*rel, len(base["window nll"]), one["compression"]))
    kmax = max(cfg.multi_blocks)
    many = rep[(rep["blocks"] == kmax) & rep["map"].str.startswith("rank")].iloc[0]
    rel = verdicts.ratio_ci(base["window nll"], many["window nll"], base["window tokens"])
    out.append(verdicts.multi_block(*rel, len(base["window nll"]), kmax))
    return out


__all__ = [
    "ANCHORS",
    "SEED_RESULTS",
    "VARIANCE_CONFIGS",
    "VarianceConfig",
    "ablation",
    "depth_layers",
    "directions",
    "exits",
    "fits",
    "judge",
    "linearity",
    "paired_gap",
    "quantization",
    "replacement",
    "tokens",
    "variance_config_for",
    "verdicts",
]
