"""The recipe every causal trace of the book follows: which facts, how much noise, how many samples.

ROME (Meng et al. 2022, Sec. 2.2) traces known facts, corrupts the subject with Gaussian noise of
3 standard deviations of the subject tokens' embeddings, and averages each corrupted run over 10
noise samples. The book makes that concrete for each model and run profile:

- the facts are the ``"score"`` split of the one known-fact screen (:class:`FactScreen`,
  :func:`analysis.data.fact_splits`), so facts that later judge a compressed model never chose anything;
- the noise is measured ROME's way on those facts' subjects (or, as the other option, on evaluation text);
- the number of noise samples is the fewest whose sampling noise stays a small share of the
  per-fact variance on a measured convergence curve (:func:`~analysis.tracing.choose_samples`),
  capped by what the profile affords.

A :class:`Recipe` holds those sizes per profile (:data:`RECIPES`, :func:`recipe_for`);
:meth:`TraceSetup.for_model` measures the noise and the samples on a model. The causal tracing
study traces every section with it, and the causal-tracing score
(:func:`analysis.scores.causal_tracing`) reads the same recipe, so the two trace the same facts
with the same settings and share their cached traces.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Self, Sequence

import pandas as pd
from datasets import Dataset
from transformer_lens import HookedTransformer

from analysis import data
from analysis.config import PROFILES, Profile, get_profile, study_config
from analysis.tracing.aie import AIEResult, average_indirect_effect
from analysis.tracing.convergence import choose_samples, sample_convergence
from analysis.tracing.corrupt import noise_scale


@dataclass(frozen=True)
class FactScreen:
    """The one known-fact screen and how its known facts are split by purpose."""

    n_screen: int
    """Facts screened once (:func:`analysis.data.known_facts`)."""
    seed: int = 0
    """Seed of the split into ``"score"`` and ``"eval"`` facts."""

    def splits(self, model: HookedTransformer) -> dict[str, Dataset]:
        """``{"score", "eval"}``: the model's known facts split by purpose (:func:`analysis.data.fact_splits`)."""
        return data.fact_splits(model, self.n_screen, seed=self.seed)


@dataclass(frozen=True)
class Recipe:
    """The sizes every causal trace of a run profile shares (:data:`RECIPES`, :func:`recipe_for`)."""

    n_screen: int
    """Facts screened once (:func:`analysis.data.known_facts`); traces use the known ones of the
    ``"score"`` split (:func:`analysis.data.fact_splits`)."""
    n_exact: int
    """Known facts traced exactly for the average indirect effect and the causal-tracing score."""
    max_samples: int
    """Most noise samples per corrupted run the profile affords; the number used is the one the
    convergence curve chooses (:func:`~analysis.tracing.choose_samples`), capped here."""
    convergence_facts: int
    """Facts traced with ``convergence_samples`` samples for the convergence curve."""
    convergence_samples: int
    """Noise samples of the convergence traces (ROME: 10)."""
    max_share: float = 0.1
    """Largest share of the per-fact variance that noise sampling may make up (chooses the samples)."""
    window: int = 10
    """ROME's restoration window for MLP and attention (layers)."""
    resid: str = "resid_post"
    """Residual state restored: ``resid_post`` (block outputs, ROME's layer numbering) or
    ``resid_pre`` (our layer l is then ROME's l - 1)."""
    noise_source: str = "subjects"
    """``subjects`` (ROME: std of the facts' subject-token embeddings) or ``text`` (eval text)."""
    noise_factor: float = 3.0
    """Noise standard deviation, in units of the embedding standard deviation (ROME: 3)."""
    noise_tokens: int = 4096
    """Evaluation-text tokens for the ``text`` noise option (shown beside ROME's)."""
    seed: int = 0
    """Seed of the fact split, the noise samples and the convergence curve's subsets."""
    max_rows: int = 1024
    """Largest batch (restored sequences) in one forward pass."""

    @property
    def screen(self) -> FactScreen:
        """The fact screen the recipe's facts come from."""
        return FactScreen(self.n_screen, self.seed)

    def check(self) -> "Recipe":
        """The recipe itself, after checking its named options."""
        if self.noise_source not in ("subjects", "text"):
            raise ValueError(f"noise_source must be 'subjects' or 'text', got {self.noise_source!r}.")
        if self.resid not in ("resid_post", "resid_pre"):
            raise ValueError(f"resid must be 'resid_post' or 'resid_pre', got {self.resid!r}.")
        return self


RECIPES: dict[str, Recipe] = {
    "smoke": Recipe(
        n_screen=PROFILES["smoke"].n_facts,
        n_exact=4,
        max_samples=2,
        convergence_facts=2,
        convergence_samples=3,
        noise_tokens=512,
        max_rows=512,
    ),
    "cpu": Recipe(
        n_screen=PROFILES["cpu"].n_facts, n_exact=30, max_samples=2, convergence_facts=4, convergence_samples=8
    ),
    "gpu": Recipe(
        n_screen=PROFILES["gpu"].n_facts,
        n_exact=1000,
        max_samples=20,
        convergence_facts=50,
        convergence_samples=30,
        noise_tokens=65_536,
        max_rows=4096,
    ),
}
"""The recipe per profile. ``gpu`` is ROME's scale (1000 facts, window 10; noise samples as the
convergence curve chooses); ``cpu`` caps the samples at 2, what its budget allows (the causal
tracing study's config gives the costs)."""


def recipe_for(profile: Profile | str | None = None) -> Recipe:
    """The :class:`Recipe` of a profile (a :class:`~analysis.config.Profile`, its name, or None for
    the current one); ``profile.extra["tracing"]`` overrides its fields (other keys there size the
    causal tracing study and are left to it)."""
    profile = get_profile(profile) if profile is None or isinstance(profile, str) else profile
    names = {f.name for f in dataclasses.fields(Recipe)}
    mine = {k: v for k, v in profile.extra.get("tracing", {}).items() if k in names}
    return study_config(RECIPES, profile.replace(extra={"tracing": mine}), "tracing").check()


def known_only(profile: Profile) -> bool:
    """Whether traces skip facts the clean model gets wrong (ROME): always, except under the
    profile's ``fact_screen="all"`` (toy runs on random weights, which know no fact)."""
    return profile.fact_screen != "all"


def first(ds: Dataset, n: int) -> Dataset:
    """The first ``n`` rows of ``ds`` (all of them when it has fewer)."""
    return ds.select(range(min(n, len(ds))))


@dataclass
class TraceSetup:
    """A :class:`Recipe` made concrete for one model: its facts, ROME's noise level measured on
    their subjects, and the number of noise samples the convergence curve chose."""

    model: HookedTransformer
    recipe: Recipe
    noise: float
    """Absolute noise std used: ``recipe.noise_factor`` x the std of :attr:`noise_options`' chosen source."""
    noise_options: dict[str, float]
    """The noise std each source would give (``subjects``: ROME's; ``text``: eval text)."""
    facts: Dataset
    """The known facts of the ``"score"`` split, in screen order (or balanced by relation)."""
    n_samples: int = 1
    """Noise samples per corrupted run (set by :meth:`for_model` from the convergence curve)."""
    convergence: pd.DataFrame | None = None
    """The convergence curve (:func:`analysis.tracing.sample_convergence`)."""
    chosen: int | None = None
    """The number of samples the curve asks for (before the recipe's cap)."""
    cache: bool = True
    require_correct: bool = True
    """Skip facts the clean model gets wrong (ROME); False only under ``fact_screen="all"`` (toy runs)."""

    @classmethod
    def for_model(
        cls,
        model: HookedTransformer,
        recipe: Recipe,
        require_correct: bool = True,
        cache: bool = True,
        balance: bool = False,
        **fields: Any,
    ) -> Self:
        """Measure the recipe on ``model``: the ``"score"`` facts of its screen, the noise level
        (ROME's by default), and the number of noise samples chosen from the convergence curve
        (:meth:`noise_convergence`), capped at ``recipe.max_samples``. ``balance`` orders the facts
        round-robin by relation (:func:`analysis.data.balanced`), so that the first facts, the ones
        traced exactly, span every relation. ``fields`` fill a subclass's own fields."""
        r = recipe
        facts = r.screen.splits(model)["score"]
        if balance:
            facts = data.balanced(facts)
        eval_tokens = data.lm_tokens(model.tokenizer, "eval", n_tokens=r.noise_tokens)
        options = {
            "subjects": noise_scale(model, facts=facts, factor=r.noise_factor),
            "text": noise_scale(model, eval_tokens, factor=r.noise_factor),
        }
        c = cls(
            model=model,
            recipe=r,
            noise=options[r.noise_source],
            noise_options=options,
            facts=facts,
            cache=cache,
            require_correct=require_correct,
            **fields,
        )
        c.convergence = sample_convergence(c.noise_convergence(), seed=r.seed)
        c.chosen = choose_samples(c.convergence, r.max_share)
        c.n_samples = min(c.chosen or r.max_samples, r.max_samples)
        return c

    @property
    def kinds(self) -> tuple[str, ...]:
        """The states traced for ROME's comparison: the residual (``recipe.resid``), MLP, attention."""
        return (self.recipe.resid, "mlp", "attn")

    @property
    def exact(self) -> Dataset:
        """The known facts traced exactly (``recipe.n_exact``)."""
        return first(self.facts, self.recipe.n_exact)

    def aie(self, facts: Any, kinds: Sequence[str] | None = None, **kw) -> AIEResult:
        """:func:`analysis.tracing.average_indirect_effect` with the recipe's noise, samples, seed,
        window and batch size (each overridable); ``kinds`` default :attr:`kinds`."""
        r = self.recipe
        kw = (
            dict(
                n_samples=self.n_samples,
                noise=self.noise,
                seed=r.seed,
                window=r.window,
                max_rows=r.max_rows,
                cache=self.cache,
                require_correct=self.require_correct,
            )
            | kw
        )
        return average_indirect_effect(self.model, facts, kinds or self.kinds, **kw)

    def noise_convergence(self) -> AIEResult:
        """The first ``recipe.convergence_facts`` facts traced exactly with
        ``recipe.convergence_samples`` noise samples each (every sample's probabilities kept),
        for the convergence curve."""
        r = self.recipe
        return self.aie(
            first(self.facts, r.convergence_facts), n_samples=r.convergence_samples, desc="sample convergence"
        )

    def single_state_aie(self) -> AIEResult:
        """Exact traces of attention and MLP outputs restored one state at a time (window 1) on
        :attr:`exact`: the input of the causal-tracing score."""
        return self.aie(self.exact, ("attn", "mlp"), window=1, desc="component information")
