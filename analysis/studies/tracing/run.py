"""The causal tracing study's runs: the inputs every section shares, and one cached runner per section.

:func:`setup` makes the profile's :class:`~analysis.tracing.Recipe` concrete for a model (the
``"score"`` facts of the one known-fact screen, ROME's noise level measured on their subjects,
and the number of noise samples chosen from a measured convergence curve); each runner is a cached
:func:`analysis.tracing.average_indirect_effect` with those settings, so a rerun reads its traces
from the cache. The single-state traces (:func:`single_state_aie`) are the input of the
causal-tracing score, :func:`analysis.scores.causal_tracing`, which the compression sweep reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from datasets import Dataset
from transformer_lens import HookedTransformer

from analysis import data, tracing
from analysis.config import Profile, get_profile
from analysis.models import ModelNotAvailableError, load_model
from analysis.studies.tracing.config import TraceConfig, config_for
from analysis.studies.tracing.verdicts import rome_comparison, verdicts
from analysis.studies.verdicts import Verdict
from analysis.tracing.recipe import first


@dataclass(kw_only=True)
class Setup(tracing.TraceSetup):
    """What every section of the study shares: the model, the study's sizes, the facts of the
    ``"score"`` split, ROME's noise level measured on their subjects, and the number of noise
    samples the convergence curve chose (:class:`analysis.tracing.TraceSetup`)."""

    cfg: TraceConfig
    screen: dict
    """The screen's counts (:func:`analysis.data.filter_known`)."""

    @property
    def choosing(self) -> Dataset:
        """The facts that chose a setting: the convergence facts, whose curve chose the number of
        noise samples (:meth:`~analysis.tracing.TraceSetup.noise_convergence`)."""
        return first(self.facts, self.cfg.convergence_facts)

    @property
    def judged(self) -> Dataset:
        """The exactly traced facts that judge ROME's findings: :attr:`exact` without :attr:`choosing`."""
        chose = set(self.choosing["id"])
        return self.exact.filter(lambda row: row["id"] not in chose)

    @property
    def relations(self) -> dict[str, str]:
        """Each ``"score"`` fact's relation, by prompt: the clusters the verdicts resample."""
        return dict(zip(self.facts["prompt"], self.facts["relation"]))

    @property
    def many(self) -> Dataset:
        """The known facts traced by attribution (``cfg.n_attribution``)."""
        return first(self.facts, self.cfg.n_attribution)

    @property
    def shown(self) -> Dataset:
        """The known facts drawn as heatmaps (``cfg.n_heatmaps``)."""
        return first(self.facts, self.cfg.n_heatmaps)

    @property
    def compare(self) -> Dataset:
        """The exactly traced facts also traced with token replacement (``cfg.n_compare``)."""
        return first(self.exact, self.cfg.n_compare)


def setup(model: HookedTransformer, profile: Profile | str | None = None, cache: bool = True) -> Setup:
    """The study's shared inputs for ``model`` under a profile: the ``"score"`` facts of the one
    known-fact screen, ordered round-robin by relation, the noise level (ROME's by default), and the number of noise samples chosen
    from the convergence curve (:meth:`~analysis.tracing.TraceSetup.noise_convergence`), capped
    at ``cfg.max_samples``."""
    profile = get_profile(profile) if profile is None or isinstance(profile, str) else profile
    cfg = config_for(profile)
    _, screen = data.known_facts(model, cfg.n_screen, cache=cache)
    # balanced by relation: the verdicts resample relations, and a verdict needs MIN_UNITS of them
    return Setup.for_model(model, cfg.recipe, tracing.known_only(profile), cache, balance=True, cfg=cfg, screen=screen)


def heatmap_traces(s: Setup) -> tracing.AIEResult:
    """The facts drawn as ROME-style heatmaps (``cfg.heatmap_samples`` noise samples)."""
    return s.aie(s.shown, n_samples=s.cfg.heatmap_samples, desc="heatmaps")


def exact_aie(s: Setup) -> tracing.AIEResult:
    """ROME's Figure 2: exact traces of the residual stream, MLP and attention, windowed as ROME."""
    return s.aie(s.exact, desc="exact AIE")


def judge(s: Setup, aie: tracing.AIEResult) -> list[Verdict]:
    """ROME's findings (:func:`~analysis.studies.tracing.verdicts.verdicts`) on the :attr:`Setup.judged`
    facts of an exact AIE, bootstrapped over their relations (``cfg.n_boot`` resamples)."""
    judged = aie.restrict(s.judged["prompt"])
    return verdicts(judged, n_boot=s.cfg.n_boot, seed=s.cfg.seed, relations=s.relations)


def single_state_aie(s: Setup) -> tracing.AIEResult:
    """Exact traces of attention and MLP outputs restored one state at a time (window 1): the
    input of the per-component score (:meth:`analysis.tracing.TraceSetup.single_state_aie`)."""
    return s.single_state_aie()


def token_replacement_aie(s: Setup) -> tracing.AIEResult:
    """The :attr:`Setup.compare` facts corrupted by replacing the subject with another of the same
    token length, drawn from all screened facts (:func:`analysis.tracing.pair_subjects`)."""
    replacements = tracing.pair_subjects(s.model, s.compare, pool=data.facts(s.cfg.n_screen), seed=s.cfg.seed)
    return s.aie(s.compare, corruption="tokens", replacements=replacements, noise=None, desc="token-replacement AIE")


def attribution_aie(s: Setup, facts: Dataset, desc: str = "attribution AIE") -> tracing.AIEResult:
    """Attribution-patching traces at window 1 (re-window with :meth:`AIEResult.with_window`)."""
    return s.aie(facts, method="attribution", window=1, desc=desc)


def other_models(profile: Profile) -> dict[str, pd.DataFrame | str]:
    """The ROME comparison on each of the profile's extra models (or why it was skipped)."""

    out: dict[str, pd.DataFrame | str] = {}
    for name in config_for(profile).extra_models:
        try:
            other = load_model(name)
        except ModelNotAvailableError as err:
            out[name] = f"skipped, weights not available ({str(err).splitlines()[0]})"
            continue
        aie = exact_aie(setup(other, profile))
        out[name] = rome_comparison(aie, f"{name}, {aie.n_facts} facts")
    return out
