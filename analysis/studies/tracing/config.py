"""Sizes of the causal tracing study per run profile: :class:`TraceConfig`, :data:`CONFIGS`, :func:`config_for`.

The sizes every trace shares (facts screened and traced exactly, noise, samples, window, batch)
are the profile's :class:`analysis.tracing.Recipe`, which the causal-tracing score of the
compression sweep reads too; :data:`CONFIGS` adds the study's own sizes to it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from analysis.config import SIZE, Profile, study_config
from analysis.tracing.recipe import RECIPES, Recipe


@dataclass(frozen=True, kw_only=True)
class TraceConfig:
    """Sizes of the causal-tracing study for one run profile (see :func:`config_for`).

    The fields a :class:`~analysis.tracing.Recipe` also has are the profile's recipe (documented
    there; :attr:`recipe`), shared with the causal-tracing score; the others, documented here, are
    the study's own. The order of the fields is the order of the chapter's table of sizes.
    """

    n_screen: int = field(metadata=SIZE)
    n_exact: int = field(metadata=SIZE)
    n_attribution: int = field(metadata=SIZE)
    """Known facts traced by attribution patching (the fast mode)."""
    max_samples: int = field(metadata=SIZE)
    n_heatmaps: int = field(metadata=SIZE)
    """Facts shown as full ROME-style heatmaps."""
    n_compare: int = field(metadata=SIZE)
    """Facts used to compare corruption modes and exact vs attribution traces."""
    convergence_facts: int = field(metadata=SIZE)
    convergence_samples: int = field(metadata=SIZE)
    max_share: float
    heatmap_samples: int = field(default=10, metadata=SIZE)
    """Noise samples for the heatmaps (equal to ``convergence_samples``, with ``n_heatmaps <=
    convergence_facts``, the heatmaps are the convergence traces, read from the cache)."""
    window: int = field(metadata=SIZE)
    resid: str
    noise_source: str
    noise_factor: float
    noise_tokens: int = field(metadata=SIZE)
    n_boot: int = field(default=1000, metadata=SIZE)
    """Bootstrap resamples of the facts behind every peak location's interval."""
    seed: int
    max_rows: int = field(metadata=SIZE)
    extra_models: tuple[str, ...] = ()
    """Models also traced when their weights are available (the ``gpu`` profile)."""

    @property
    def recipe(self) -> Recipe:
        """The sizes every trace shares (:class:`analysis.tracing.Recipe`)."""
        return Recipe(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Recipe)})


def with_recipe(profile: str, **sizes) -> TraceConfig:
    """The profile's :class:`~analysis.tracing.Recipe` (:data:`analysis.tracing.RECIPES`) with the study's ``sizes``."""
    return TraceConfig(**dataclasses.asdict(RECIPES[profile]), **sizes)


CONFIGS: dict[str, TraceConfig] = {
    "smoke": with_recipe("smoke", n_attribution=6, n_heatmaps=1, n_compare=3, heatmap_samples=3, n_boot=200),
    # cut for the 90-minute cpu budget: token replacement and exact-vs-attribution on 8 facts, not 15
    # (agreement tables only; the verdicts read the noise traces of the n_exact facts)
    "cpu": with_recipe("cpu", n_attribution=150, n_heatmaps=2, n_compare=8, heatmap_samples=8),
    "gpu": with_recipe("gpu", n_attribution=2000, n_heatmaps=4, n_compare=200, extra_models=("gemma-2-2b",)),
}
"""Sizes per profile. ``gpu`` is ROME's scale (1000 facts, window 10; noise samples as the
convergence curve chooses). ``cpu`` aims at about 15 minutes cold on 2 cores. Its cost is counted
in *units*, one exact trace of one fact with one noise sample (three kinds, window 10); the
window-1 traces cost about 0.7 units per sample, token replacement one unit per fact. Measured
on the smoke facts under heavy sharing, a unit took 10.5 CPU-seconds (12.5 for a fact's first
sample), so about 5-7 s of wall time on 2 idle cores. ``cpu`` spends 32 units on the
convergence curve (4 facts x 8 samples; the heatmaps are its first facts, free), 60 on the AIE
(30 facts x at most 2 samples), ~42 on the window-1 score and 15 on token replacement: ~150
units, 13-17 minutes, plus about 2 for attribution patching of 150 facts. The cap of 2 samples
is what the budget allows; the chapter prints the sampling share the curve gives it. Cut for the
90-minute cpu budget (the last cold chapter took 1,010 s): token replacement on 8 facts, not 15
(7 units, about 40 s); it feeds agreement tables no verdict reads."""


def config_for(profile: Profile | str) -> TraceConfig:
    """The :class:`TraceConfig` for a profile (a :class:`~analysis.config.Profile` or its name).

    ``profile.extra["tracing"]`` (a dict of field values), when present, overrides fields.
    """
    cfg = study_config(CONFIGS, profile, "tracing")
    cfg.recipe.check()
    return cfg
