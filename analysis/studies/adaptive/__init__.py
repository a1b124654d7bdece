"""AdaptiveCompress (seed 000) against sae-lens's standard, TopK and BatchTopK SAEs.

Seed 000 claims that gating an SAE's latents by an EMA of their activity, with a retention
schedule from 99.9% to 95% and a ``0.1 h`` skip, improves SAEBench sparse probing, while
reporting L0 = 0 and negative explained variance. The study trains the seed's architecture
(:mod:`analysis.sae.adaptive`) as written, ablates each of its parts to find what blocks the
signal, trains a corrected variant and the sae-lens baselines at the same width and L0 on the
same cached activations, and judges the seed's claims (:mod:`~analysis.studies.adaptive.verdicts`).

- :mod:`~analysis.studies.adaptive.config`: tasks, variants and sizes per profile (:func:`config_for`);
- :mod:`~analysis.studies.adaptive.seed`: the seed's numbers (``SEED_RESULTS``);
- :mod:`~analysis.studies.adaptive.run`: training, metrics and probing, cached (:func:`run`);
- :mod:`~analysis.studies.adaptive.results`: what it measured (:class:`AdaptiveResults`);
- :mod:`~analysis.studies.adaptive.splits`: which text chooses and which judges, kept apart;
- :mod:`~analysis.studies.adaptive.verdicts`: summaries and the verdicts (:func:`verdicts`);
- :mod:`~analysis.studies.adaptive.plots`: the chapter's training curves.
"""

from analysis.studies.adaptive.config import (
    CONFIGS,
    CORRECTED,
    MAIN,
    SEED_VARIANT,
    TASK_MAP,
    VARIANTS,
    AdaptiveConfig,
    config_for,
)
from analysis.studies.adaptive.plots import training_curves
from analysis.studies.adaptive.results import AdaptiveResults
from analysis.studies.adaptive.run import compute, run, training_runs
from analysis.studies.adaptive.seed import SEED_RESULTS, core_row, probing_rows
from analysis.studies.adaptive.splits import sae_training_titles, unseen
from analysis.studies.adaptive.verdicts import (
    CONTRADICTION,
    QUESTION,
    SPECIALISED,
    UNAVAILABLE,
    blocking_verdict,
    by_layer,
    kl_verdict,
    l0_gap,
    metric_summary,
    mse_verdict,
    paired,
    paired_by_task,
    per_task,
    probe_means,
    probing_verdict,
    retention_vs_topk,
    specialised_verdict,
    unavailable_verdict,
    variance_verdict,
    verdicts,
)

__all__ = [
    "CONFIGS",
    "CONTRADICTION",
    "SPECIALISED",
    "UNAVAILABLE",
    "kl_verdict",
    "mse_verdict",
    "paired_by_task",
    "sae_training_titles",
    "unavailable_verdict",
    "unseen",
    "CORRECTED",
    "MAIN",
    "QUESTION",
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
    "core_row",
    "l0_gap",
    "metric_summary",
    "paired",
    "per_task",
    "training_runs",
    "probe_means",
    "probing_rows",
    "probing_verdict",
    "retention_vs_topk",
    "run",
    "specialised_verdict",
    "training_curves",
    "variance_verdict",
    "verdicts",
]
