"""The tracing recipe: per-profile sizes, the overrides it takes, and the checks of its options."""

from __future__ import annotations

import pytest
from datasets import Dataset

from analysis import tracing
from analysis.config import get_profile


def test_recipe_for_reads_its_own_fields_of_the_tracing_overrides():
    assert tracing.recipe_for("smoke") == tracing.RECIPES["smoke"]
    custom = get_profile("smoke").replace(extra={"tracing": {"n_exact": 7, "noise_tokens": 64, "n_attribution": 9}})
    recipe = tracing.recipe_for(custom)  # n_attribution sizes the study, not the recipe
    assert (recipe.n_exact, recipe.noise_tokens) == (7, 64)
    assert recipe.max_samples == tracing.RECIPES["smoke"].max_samples
    assert recipe.screen == tracing.FactScreen(recipe.n_screen, recipe.seed)


def test_recipe_for_rejects_unknown_profiles_and_options():
    with pytest.raises(ValueError, match="profile"):
        tracing.recipe_for("laptop")
    for field, value in (("noise_source", "eval"), ("resid", "resid_mid")):
        with pytest.raises(ValueError, match=field):
            tracing.recipe_for(get_profile("smoke").replace(extra={"tracing": {field: value}}))


def test_only_toy_runs_trace_facts_the_model_gets_wrong():
    assert tracing.known_only(get_profile("cpu"))
    assert not tracing.known_only(get_profile("cpu").replace(fact_screen="all"))


def test_calibration_takes_the_first_facts_in_screen_order():
    facts = Dataset.from_dict({"id": list(range(5))})
    recipe = tracing.Recipe(n_screen=5, n_exact=3, max_samples=1, convergence_facts=1, convergence_samples=2)
    c = tracing.TraceSetup(model=None, recipe=recipe, noise=0.1, noise_options={}, facts=facts)
    assert c.exact["id"] == [0, 1, 2] and c.kinds == ("resid_post", "mlp", "attn")
    assert len(tracing.TraceSetup(None, recipe, 0.1, {}, facts.select([0])).exact) == 1  # fewer facts than asked
