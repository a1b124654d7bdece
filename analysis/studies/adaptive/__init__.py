"""AdaptiveCompress (seed 000) against sae-lens's standard, TopK and BatchTopK SAEs.

Seed 000 claims that gating an SAE's latents by an EMA of their activity, with a retention
schedule from 99.9% to 95% and a ``0.1 h`` skip, improves SAEBench sparse probing, while
reporting L0 = 0 and negative explained variance. The study trains the seed's architecture
(:mod:`analysis.sae.adaptive`) as written, ablates each of its parts to find what blocks the
signal, trains a corrected variant and the sae-lens baselines at the same width and L0 on the
same cached activations, and judges the seed's claims (:mod:`~analysis.studies.adaptive.verdicts`).

- :mod:`~analysis.studies.adaptive.config`: the seed's numbers, variants and sizes per profile;
- :mod:`~analysis.studies.adaptive.runner`: training, metrics and probing (cached);
- :mod:`~analysis.studies.adaptive.verdicts`: summaries and verdicts.
"""

from analysis.studies.adaptive.config import (
    CONFIGS,
    CORRECTED,
    MAIN,
    SEED_RESULTS,
    SEED_VARIANT,
    TASK_MAP,
    VARIANTS,
    AdaptiveConfig,
    config_for,
)
from analysis.studies.adaptive.runner import AdaptiveResults, compute, plan, run
from analysis.studies.adaptive.verdicts import (
    blocking_verdict,
    by_layer,
    l0_gap,
    metric_summary,
    paired,
    per_task,
    probe_means,
    probing_verdict,
    retention_vs_topk,
    seed_verdicts,
    specialised_verdict,
    variance_verdict,
)

__all__ = [
    "CONFIGS",
    "CORRECTED",
    "MAIN",
    "SEED_RESULTS",
    "SEED_VARIANT",
    "TASK_MAP",
    "VARIANTS",
    "AdaptiveConfig",
    "AdaptiveResults",
    "blocking_verdict",
    "by_layer",
    "compute",
    "config_for",
    "l0_gap",
    "metric_summary",
    "paired",
    "per_task",
    "plan",
    "probe_means",
    "probing_verdict",
    "retention_vs_topk",
    "run",
    "seed_verdicts",
    "specialised_verdict",
    "variance_verdict",
]
